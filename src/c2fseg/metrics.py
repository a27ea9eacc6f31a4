"""Overlap and surface metrics with the official FLARE23 scoring rules.

Definitions (our own implementation of the surface-element approach used by FLARE's scorer):

* **DSC** = 2|P ∩ G| / (|P| + |G|); 1 when both masks are empty.
* **Surface elements (surfels)** sit on the grid of voxel corners. Each corner sees a 2x2x2 block
  of voxels; its 8 inside/outside bits form a code 0-255. Codes other than 0 and 255 lie on the
  surface. A surfel's area is the area of the marching-cubes patch (iso-level 0.5) of that block,
  scaled by the voxel spacing, so oblique surfaces are not over-counted like voxel faces would be.
* **Distances**: a Euclidean distance transform (``sampling=spacing``) of the *other* mask's
  surfel positions gives, for every surfel, the distance in mm to the nearest surfel of the other
  surface.
* **NSD** (normalised surface distance / surface Dice at tolerance τ) = (area of P's surfels within
  τ of G's surface + area of G's surfels within τ of P's surface) / (area of P + area of G).

* **Axial range of aorta, IVC and esophagus** (labels 5, 6, 10): only slices inside the ground
  truth's axial extent are scored. The official FLARE23 scorer (``FLARE23_DSC_NSD_Eval.py`` in
  github.com/JunMa11/FLARE) cuts ``[z_min:z_max]`` along the stored slice index, where ``z_max`` is
  the *last* annotated slice: the range is half-open, so that last slice is not scored. We do the
  same (``z_drop="last"``, the default; ``"first"`` when the file stores slices from head to feet,
  so canonical axis 0 runs opposite to the stored index; ``None`` scores the inclusive range).
  When the ground truth spans a single slice, the official range is empty (the official score is
  undefined); we then score that one slice.

Work is done on the padded bounding box of P ∪ G, which gives the same result as the whole volume
(every surfel of either mask lies inside it) at a fraction of the cost.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
from scipy import ndimage

from c2fseg.labels import NSD_MIN_DSC, NSD_TOLERANCE_MM, Z_RANGE_LABELS

Spacing = Sequence[float]


def dice(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float:
    """Dice similarity coefficient of two boolean masks; 1.0 when both are empty."""
    pred_mask = np.asarray(pred_mask, dtype=bool)
    gt_mask = np.asarray(gt_mask, dtype=bool)
    if pred_mask.shape != gt_mask.shape:
        raise ValueError(f"mask shapes differ: {pred_mask.shape} vs {gt_mask.shape}")
    total = int(np.count_nonzero(pred_mask)) + int(np.count_nonzero(gt_mask))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred_mask & gt_mask)) / total


@lru_cache(maxsize=1)
def _unit_triangle_normals() -> tuple[np.ndarray, ...]:
    """Per 2x2x2 code, the area vectors (cross product / 2) of its marching-cubes triangles.

    Computed once from scikit-image's classic (Lorensen) marching cubes on each of the 254
    non-trivial blocks, in voxel units and (z, y, x) axis order. A block and its complement bound
    the same surface, so blocks with more than 4 inside corners use their complement's patch: the
    minority corners are cut off as separate patches, which keeps the table symmetric.
    """
    from skimage.measure import marching_cubes

    normals: list[np.ndarray] = [np.zeros((0, 3))]
    for code in range(1, 255):
        minority = code if bin(code).count("1") <= 4 else 255 - code
        bits = [(minority >> bit) & 1 for bit in range(8)]
        block = np.array(bits, dtype=np.float32).reshape(2, 2, 2)
        verts, faces, _, _ = marching_cubes(block, level=0.5, method="lorensen")
        tri = verts[faces].astype(np.float64)
        normals.append(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]) / 2.0)
    normals.append(np.zeros((0, 3)))
    return tuple(normals)


@lru_cache(maxsize=64)
def surfel_area_table(spacing: tuple[float, float, float]) -> np.ndarray:
    """Area in mm² of the surface patch of each 2x2x2 code (256 values) at ``spacing`` (z, y, x).

    Scaling a triangle by diag(s) scales its area vector by (s1·s2, s0·s2, s0·s1).
    """
    s0, s1, s2 = (float(s) for s in spacing)
    scale = np.array([s1 * s2, s0 * s2, s0 * s1])
    return np.array([np.linalg.norm(n * scale, axis=1).sum() for n in _unit_triangle_normals()])


def _neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """2x2x2 block code at every voxel corner of a zero-padded boolean mask (shape + 1)."""
    padded = np.pad(mask.astype(np.uint8), 1)
    n0, n1, n2 = (s + 1 for s in mask.shape)
    codes = np.zeros((n0, n1, n2), dtype=np.uint8)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                bit = np.uint8(1 << (4 * a + 2 * b + c))
                codes |= padded[a : a + n0, b : b + n1, c : c + n2] * bit
    return codes


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Tight bounding box of a mask as slices, or None when it is empty."""
    boxes = ndimage.find_objects(mask.astype(np.uint8))
    return boxes[0] if boxes and boxes[0] is not None else None


def surface_distances(
    pred_mask: np.ndarray, gt_mask: np.ndarray, spacing: Spacing
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Surfel distances and areas: (dist pred->gt, area pred, dist gt->pred, area gt).

    Distances are in mm to the nearest surfel of the other mask (inf when the other is empty).
    """
    spacing = tuple(float(s) for s in spacing)
    union = np.asarray(pred_mask, dtype=bool) | np.asarray(gt_mask, dtype=bool)
    box = _bounding_box(union)
    if box is None:
        empty = np.zeros(0)
        return empty, empty, empty, empty
    areas = surfel_area_table(spacing)  # type: ignore[arg-type]
    pred_codes = _neighbour_codes(np.asarray(pred_mask, dtype=bool)[box])
    gt_codes = _neighbour_codes(np.asarray(gt_mask, dtype=bool)[box])
    pred_border = (pred_codes != 0) & (pred_codes != 255)
    gt_border = (gt_codes != 0) & (gt_codes != 255)
    dist_to_pred = _distance_to(pred_border, spacing)
    dist_to_gt = _distance_to(gt_border, spacing)
    return (
        dist_to_gt[pred_border],
        areas[pred_codes[pred_border]],
        dist_to_pred[gt_border],
        areas[gt_codes[gt_border]],
    )


def _distance_to(border: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distance in mm from every corner to the nearest border corner (inf if there is none)."""
    if not border.any():
        return np.full(border.shape, np.inf)
    return ndimage.distance_transform_edt(~border, sampling=spacing)


def normalized_surface_distance(
    pred_mask: np.ndarray, gt_mask: np.ndarray, spacing: Spacing, tolerance_mm: float
) -> float:
    """NSD (surface Dice) of two masks at ``tolerance_mm``; 1 if both empty, 0 if one is."""
    d_pred, a_pred, d_gt, a_gt = surface_distances(pred_mask, gt_mask, spacing)
    total = a_pred.sum() + a_gt.sum()
    if total == 0:
        return 1.0 if not (np.any(pred_mask) or np.any(gt_mask)) else 0.0
    within = a_pred[d_pred <= tolerance_mm].sum() + a_gt[d_gt <= tolerance_mm].sum()
    return float(within / total)


Z_DROP_CHOICES = ("last", "first", None)


def _z_range(gt_box: tuple[slice, ...], z_drop: str | None) -> slice:
    """Axial slices (canonical axis 0) of the ground truth that are scored.

    ``z_drop`` names the end slice the official half-open range leaves out (see module docstring).
    """
    z = gt_box[0]
    if z_drop is None or z.stop - z.start <= 1:
        return z
    return slice(z.start, z.stop - 1) if z_drop == "last" else slice(z.start + 1, z.stop)


def score_label(
    pred: np.ndarray,
    gt: np.ndarray,
    label: int,
    spacing_zyx: Spacing,
    boxes: tuple[list, list] | None = None,
    z_drop: str | None = "last",
    nsd_min_dsc: float = NSD_MIN_DSC,
) -> dict[str, float]:
    """DSC and NSD of one label under the FLARE23 rules (empty cases, z-range, DSC floor).

    ``nsd_min_dsc``: NSD is set to 0 below this DSC (0.2 by our rules; the public FLARE23
    scoring script uses 0.1).
    """
    pred_boxes, gt_boxes = boxes if boxes is not None else _label_boxes(pred, gt)
    pbox = pred_boxes[label - 1] if label <= len(pred_boxes) else None
    gbox = gt_boxes[label - 1] if label <= len(gt_boxes) else None
    if gbox is None and pbox is None:
        return {"dsc": 1.0, "nsd": 1.0}
    if gbox is None or pbox is None:
        return {"dsc": 0.0, "nsd": 0.0}
    zs = _z_range(gbox, z_drop) if label in Z_RANGE_LABELS else slice(None)
    crop = tuple(
        slice(min(p.start, g.start), max(p.stop, g.stop)) for p, g in zip(pbox, gbox, strict=True)
    )
    z0 = max(crop[0].start, zs.start if zs.start is not None else 0)
    z1 = min(crop[0].stop, zs.stop if zs.stop is not None else crop[0].stop)
    crop = (slice(z0, z1),) + crop[1:]
    pred_mask = pred[crop] == label
    gt_mask = gt[crop] == label
    dsc = dice(pred_mask, gt_mask)
    if dsc < nsd_min_dsc:
        return {"dsc": dsc, "nsd": 0.0}
    nsd = normalized_surface_distance(pred_mask, gt_mask, spacing_zyx, NSD_TOLERANCE_MM[label])
    return {"dsc": dsc, "nsd": nsd}


def _label_boxes(pred: np.ndarray, gt: np.ndarray) -> tuple[list, list]:
    """Bounding boxes of every label value in one pass per map (index = label - 1)."""
    return ndimage.find_objects(pred), ndimage.find_objects(gt)


def score_case(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing_zyx: Spacing,
    labels: Iterable[int] | None = None,
    z_drop: str | None = "last",
    nsd_min_dsc: float = NSD_MIN_DSC,
) -> dict[int, dict[str, float]]:
    """Score every label of one case: ``{label: {"dsc": ..., "nsd": ...}}``.

    ``pred`` and ``gt`` are canonical integer label maps of the same shape (axis 0 is axial),
    ``spacing_zyx`` their voxel size in mm. ``labels`` defaults to all 14 FLARE23 labels.
    ``z_drop``: which end slice of the aorta/IVC/esophagus range is left out, as the official
    scorer does ("last", "first" or None; see the module docstring).
    """
    if z_drop not in Z_DROP_CHOICES:
        raise ValueError(f"z_drop must be one of {Z_DROP_CHOICES}, got {z_drop!r}")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    if len(spacing_zyx) != gt.ndim:
        raise ValueError(f"spacing {tuple(spacing_zyx)} does not match a {gt.ndim}D volume")
    pred = _as_label_map(pred)
    gt = _as_label_map(gt)
    wanted = sorted(NSD_TOLERANCE_MM) if labels is None else sorted(int(lab) for lab in labels)
    unknown = [lab for lab in wanted if lab not in NSD_TOLERANCE_MM]
    if unknown:
        raise ValueError(f"labels {unknown} have no NSD tolerance; valid labels are 1-14")
    boxes = _label_boxes(pred, gt)
    return {lab: score_label(pred, gt, lab, spacing_zyx, boxes, z_drop, nsd_min_dsc)
            for lab in wanted}


def _as_label_map(arr: np.ndarray) -> np.ndarray:
    """Integer label map suitable for ``ndimage.find_objects`` (which rejects negatives)."""
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        return arr
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError("label maps must hold values 0-255")
    return arr.astype(np.uint8)
