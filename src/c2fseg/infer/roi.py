"""The region of interest (ROI) the fine stages run on, derived from the coarse label map.

Rule (documented in ``docs/design.md`` terms, canonical ``(z, y, x)`` axes throughout):

1. Only the organs in :data:`c2fseg.labels.ROI_ORGANS` count; the adrenals (7, 8) and the
   duodenum (12) are thin or fragmented in coarse output and are ignored.
2. Of each such organ only its largest connected component (26-connectivity) is kept. One
   multi-label ``cc3d`` pass finds all components of all labels at once.
3. Distance rule: a kept component whose bounding box is more than ``max_liver_gap_mm``
   (Euclidean gap between the two boxes, in mm) away from the liver's bounding box is a false
   positive somewhere else in the body (a "kidney" in the thigh) and is dropped. Without a
   liver in the coarse output no distance filtering is done.
4. The ROI is the bounding box of what remains, padded by ``margin_mm`` per axis and clipped
   to the volume. Nothing left means there is no abdomen in view: ``None``.

The ROI only needs coarse precision, so the rule runs on a coarse grid:

* :func:`compute_roi_from_grid` (what the cascade uses): the coarse stage's labels on its own
  model grid, which covers the same physical extent as the input. The organ box found there is
  widened by one model voxel per side and its physical extent rounded outward to input voxels
  (:func:`c2fseg.infer.resample.grid_box_to_input`), so it contains every input voxel that
  resampling the coarse output to the input grid could have labelled from those model voxels.
* :func:`compute_roi`: a coarse map on the input grid, optionally subsampled by an integer
  stride per axis (``work_spacing_mm``) before the connected-component pass; the at most
  ``stride - 1`` voxels that sampling can miss at each box edge are added back when scaling the
  box to the full grid.

Either way the margin (mm) is then added in input voxels and the box clipped to the volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cc3d
import numpy as np

from c2fseg.infer.resample import grid_box_to_input
from c2fseg.labels import ROI_ORGANS

LIVER = 1


@dataclass(frozen=True)
class RoiBox:
    """A box in canonical voxel indices: ``start`` inclusive, ``stop`` exclusive, (z, y, x)."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Index expression that crops a canonical array to the box."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]

    def to_dict(self, spacing: Sequence[float]) -> dict:
        """JSON-ready description in voxels and in mm (offset from canonical voxel 0)."""
        return {
            "start_zyx": list(self.start),
            "stop_zyx": list(self.stop),
            "shape_zyx": list(self.shape),
            "offset_mm_zyx": [round(a * s, 3) for a, s in zip(self.start, spacing, strict=True)],
            "size_mm_zyx": [round(n * s, 3) for n, s in zip(self.shape, spacing, strict=True)],
        }


def as_triple(value: float | Sequence[float]) -> tuple[float, float, float]:
    """A per-axis (z, y, x) value from one number or three."""
    if isinstance(value, (int, float)):
        return (float(value),) * 3  # type: ignore[return-value]
    vals = tuple(float(v) for v in value)
    if len(vals) != 3:
        raise ValueError(f"expected one value or three (z, y, x), got {len(vals)}")
    return vals  # type: ignore[return-value]


def largest_components(
    labels: np.ndarray, organs: Sequence[int] = ROI_ORGANS
) -> dict[int, tuple[int, np.ndarray]]:
    """Per organ present: (voxel count, bounding box as [z0, z1, y0, y1, x0, x1] inclusive).

    One multi-label connected-component pass over the organs of interest.
    """
    masked = np.where(np.isin(labels, organs), labels, 0).astype(np.uint8, copy=False)
    cc, n = cc3d.connected_components(masked, connectivity=26, return_N=True)
    if n == 0:
        return {}
    stats = cc3d.statistics(cc, no_slice_conversion=True)
    counts = np.asarray(stats["voxel_counts"])
    boxes = np.asarray(stats["bounding_boxes"], dtype=np.int64)
    comp_label = np.zeros(n + 1, dtype=np.int64)
    comp_label[cc.ravel()] = masked.ravel()
    found: dict[int, tuple[int, np.ndarray]] = {}
    for comp in range(1, n + 1):
        lab = int(comp_label[comp])
        if lab not in found or counts[comp] > found[lab][0]:
            found[lab] = (int(counts[comp]), boxes[comp])
    return found


def box_gap_mm(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> float:
    """Euclidean gap in mm between two inclusive boxes [z0, z1, y0, y1, x0, x1] (0 if they overlap)."""
    gaps = []
    for axis in range(3):
        lo_a, hi_a = int(a[2 * axis]), int(a[2 * axis + 1])
        lo_b, hi_b = int(b[2 * axis]), int(b[2 * axis + 1])
        gap_vox = max(0, lo_b - hi_a - 1, lo_a - hi_b - 1)
        gaps.append(gap_vox * float(spacing[axis]))
    return float(np.sqrt(np.sum(np.square(gaps))))


def plausible_organ_boxes(
    labels: np.ndarray,
    spacing: Sequence[float],
    *,
    max_liver_gap_mm: float = 100.0,
    organs: Sequence[int] = ROI_ORGANS,
) -> dict[int, np.ndarray]:
    """Bounding boxes of the largest component of each organ that passes the liver-distance rule."""
    found = largest_components(labels, organs)
    if LIVER not in found:
        return {lab: box for lab, (_, box) in found.items()}
    liver_box = found[LIVER][1]
    return {
        lab: box
        for lab, (_, box) in found.items()
        if box_gap_mm(box, liver_box, spacing) <= max_liver_gap_mm
    }


def stride_for(spacing: Sequence[float], work_spacing_mm: Sequence[float] | None) -> tuple[int, ...]:
    """Integer subsampling stride per axis that brings ``spacing`` near ``work_spacing_mm``."""
    if work_spacing_mm is None:
        return (1, 1, 1)
    return tuple(max(1, int(w // s)) for w, s in zip(work_spacing_mm, spacing, strict=True))


def compute_roi(
    labels: np.ndarray,
    spacing: Sequence[float],
    *,
    margin_mm: float | Sequence[float] = 20.0,
    max_liver_gap_mm: float = 100.0,
    work_spacing_mm: Sequence[float] | None = None,
    organs: Sequence[int] = ROI_ORGANS,
) -> RoiBox | None:
    """The ROI box from a coarse canonical label map, or None when no organ is found."""
    labels = np.asarray(labels)
    stride = stride_for(spacing, work_spacing_mm)
    small = labels[:: stride[0], :: stride[1], :: stride[2]]
    small_spacing = [s * k for s, k in zip(spacing, stride, strict=True)]
    boxes = plausible_organ_boxes(
        small, small_spacing, max_liver_gap_mm=max_liver_gap_mm, organs=organs
    )
    if not boxes:
        return None
    lo_small, hi_small = union_box(boxes)
    # Unsampled voxels between the first/last organ sample and its empty neighbour may be
    # organ too: widen by stride - 1 on the low side; the exclusive high end already does.
    lo = [a * k - (k - 1) for a, k in zip(lo_small, stride, strict=True)]
    hi = [b * k for b, k in zip(hi_small, stride, strict=True)]
    return with_margin(lo, hi, labels.shape, spacing, margin_mm)


def compute_roi_from_grid(
    labels: np.ndarray,
    grid_spacing: Sequence[float],
    input_shape: Sequence[int],
    input_spacing: Sequence[float],
    *,
    margin_mm: float | Sequence[float] = 20.0,
    max_liver_gap_mm: float = 100.0,
    organs: Sequence[int] = ROI_ORGANS,
    expand: int = 1,
) -> RoiBox | None:
    """The ROI box (input voxels) from coarse labels on a grid spanning the input's extent.

    ``labels`` is e.g. the coarse stage's output on its model grid (voxel size
    ``grid_spacing``); the box found there is widened by ``expand`` grid voxels, mapped
    outward to the input grid, then padded by ``margin_mm`` and clipped. None: no organ.
    """
    labels = np.asarray(labels)
    boxes = plausible_organ_boxes(labels, grid_spacing, max_liver_gap_mm=max_liver_gap_mm, organs=organs)
    if not boxes:
        return None
    lo_grid, hi_grid = union_box(boxes)
    lo, hi = grid_box_to_input(lo_grid, hi_grid, labels.shape, input_shape, expand)
    return with_margin(lo, hi, input_shape, input_spacing, margin_mm)


def union_box(boxes: dict[int, np.ndarray]) -> tuple[list[int], list[int]]:
    """(start, stop exclusive) per axis of the union of inclusive [z0, z1, y0, y1, x0, x1] boxes."""
    stacked = np.stack(list(boxes.values()))
    lo = [int(stacked[:, 2 * axis].min()) for axis in range(3)]
    hi = [int(stacked[:, 2 * axis + 1].max()) + 1 for axis in range(3)]
    return lo, hi


def with_margin(
    lo: Sequence[int],
    hi: Sequence[int],
    shape: Sequence[int],
    spacing: Sequence[float],
    margin_mm: float | Sequence[float],
) -> RoiBox:
    """The box ``[lo, hi)`` padded by ``margin_mm`` (rounded up to whole voxels), clipped to ``shape``."""
    margin = as_triple(margin_mm)
    start, stop = [], []
    for axis in range(3):
        pad = int(np.ceil(margin[axis] / float(spacing[axis])))
        start.append(max(0, int(lo[axis]) - pad))
        stop.append(min(int(shape[axis]), int(hi[axis]) + pad))
    return RoiBox(tuple(start), tuple(stop))  # type: ignore[arg-type]


def foreground_bounds(labels: np.ndarray) -> tuple[list[int], list[int]] | None:
    """(first, last) voxel index per axis of the voxels > 0 (both inclusive), or None if none."""
    mask = np.asarray(labels) > 0
    lo, hi = [], []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if hits.size == 0:
            return None
        lo.append(int(hits[0]))
        hi.append(int(hits[-1]))
    return lo, hi


def roi_from_foreground(
    labels: np.ndarray, spacing: Sequence[float], margin_mm: float | Sequence[float] = 20.0
) -> RoiBox | None:
    """The published FLARE23 HIASBUAA ROI rule on a cleaned coarse map on the input grid.

    Per axis ``pad = int(margin_mm / spacing)`` (truncated), ``start = first - pad`` and
    ``stop = last + pad`` used as the exclusive end, so the box reaches ``pad - 1`` voxels past
    the last foreground voxel (and ``pad`` before the first); clipped to the volume. None when
    no voxel is > 0. (Our rule, :func:`with_margin`, rounds the pad up and ends ``pad`` voxels
    past the last voxel.)
    """
    bounds = foreground_bounds(labels)
    if bounds is None:
        return None
    margin = as_triple(margin_mm)
    shape = np.asarray(labels).shape
    start, stop = [], []
    for axis, (first, last) in enumerate(zip(*bounds, strict=True)):
        pad = int(margin[axis] / float(spacing[axis]))
        start.append(max(0, first - pad))
        stop.append(min(int(shape[axis]), last + pad))
    return RoiBox(tuple(start), tuple(stop))  # type: ignore[arg-type]
