"""Clean-up of a label map and pasting the ROI result back into a full-size volume.

:func:`clean_coarse_labels` is the coarse-map clean-up of the published FLARE23 HIASBUAA
pipeline (built from :func:`largest_component_centroid`, :func:`drop_components_far_from`,
:func:`keep_largest_components` and :func:`delete_labels`); our own ROI rule is in
:mod:`c2fseg.infer.roi`. Connectivity is 26 throughout; distances and centroids are in voxel
index units of the map they are computed on.
"""

from __future__ import annotations

from collections.abc import Sequence

import cc3d
import numpy as np
from scipy import ndimage

from c2fseg.infer.roi import LIVER, RoiBox
from c2fseg.labels import ROI_ORGANS, SINGLE_COMPONENT_ORGANS

#: The published clean-up's distance limit from the liver centroid, in coarse-grid voxels.
COARSE_MAX_LIVER_DISTANCE = 170 / 3
#: Labels the published clean-up deletes from the coarse map (adrenals, duodenum).
COARSE_DELETED_LABELS: tuple[int, ...] = (7, 8, 12)


def keep_largest_components(
    labels: np.ndarray, label_ids: Sequence[int] = SINGLE_COMPONENT_ORGANS
) -> np.ndarray:
    """Keep only the largest 26-connected component of each label in ``label_ids``.

    One multi-label ``cc3d`` pass labels the components of every label at once (much faster
    than one pass per label). Removed voxels become background; labels not in ``label_ids``
    (tumor) are left as they are.
    """
    labels = np.asarray(labels, dtype=np.uint8)
    cc, n = cc3d.connected_components(labels, connectivity=26, return_N=True)
    if n == 0:
        return labels.copy()
    counts = np.asarray(cc3d.statistics(cc)["voxel_counts"])
    comp_label = np.zeros(n + 1, dtype=np.int64)
    comp_label[cc.ravel()] = labels.ravel()
    keep = np.ones(n + 1, dtype=bool)
    for lab in label_ids:
        comps = np.flatnonzero(comp_label[1:] == lab) + 1
        if comps.size > 1:
            keep[comps] = False
            keep[comps[np.argmax(counts[comps])]] = True
    return np.where(keep[cc], labels, 0).astype(np.uint8)


def fill_holes(labels: np.ndarray, label_ids: Sequence[int] = SINGLE_COMPONENT_ORGANS) -> np.ndarray:
    """Give enclosed background cavities of each label that label (never overwrites a label).

    Works inside each label's bounding box so small organs cost little.
    """
    out = np.asarray(labels, dtype=np.uint8).copy()
    boxes = ndimage.find_objects(out)
    for lab in label_ids:
        if lab > len(boxes) or boxes[lab - 1] is None:
            continue
        box = boxes[lab - 1]
        region = out[box]
        filled = ndimage.binary_fill_holes(region == lab)
        region[filled & (region == 0)] = lab
    return out


def paste_roi(roi_labels: np.ndarray, box: RoiBox, full_shape: Sequence[int]) -> np.ndarray:
    """A full-size uint8 background volume with ``roi_labels`` placed at ``box``."""
    if tuple(roi_labels.shape) != box.shape:
        raise ValueError(f"ROI labels shape {roi_labels.shape} != box shape {box.shape}")
    full = np.zeros(tuple(full_shape), dtype=np.uint8)
    full[box.slices] = roi_labels
    return full


def largest_component_centroid(labels: np.ndarray, label: int = LIVER) -> np.ndarray | None:
    """Mean voxel coordinates (z, y, x) of the largest 26-connected component of ``label``.

    None when ``label`` is absent. On equal voxel counts the component met first in raster
    order wins.
    """
    mask = np.asarray(labels) == label
    if not mask.any():
        return None
    cc, n = cc3d.connected_components(mask.astype(np.uint8), connectivity=26, return_N=True)
    stats = cc3d.statistics(cc)
    counts = np.asarray(stats["voxel_counts"])[1 : n + 1]
    return np.asarray(stats["centroids"], dtype=np.float64)[1 + int(np.argmax(counts))]


def drop_components_far_from(
    labels: np.ndarray, centre: Sequence[float], max_distance: float
) -> np.ndarray:
    """Remove each 26-connected component of the foreground (all labels > 0 as one mask) whose
    centroid lies farther than ``max_distance`` (Euclidean, voxel units) from ``centre``.

    A component exactly at ``max_distance`` is kept. Returns a uint8 copy.
    """
    labels = np.asarray(labels, dtype=np.uint8)
    cc, n = cc3d.connected_components((labels > 0).astype(np.uint8), connectivity=26, return_N=True)
    if n == 0:
        return labels.copy()
    centroids = np.asarray(cc3d.statistics(cc)["centroids"], dtype=np.float64)
    distance = np.sqrt(((centroids - np.asarray(centre, dtype=np.float64)) ** 2).sum(axis=1))
    keep = distance <= max_distance
    keep[0] = True  # background stays background
    return np.where(keep[cc], labels, 0).astype(np.uint8)


def delete_labels(labels: np.ndarray, label_ids: Sequence[int]) -> np.ndarray:
    """A uint8 copy of ``labels`` with every voxel of ``label_ids`` set to background."""
    labels = np.asarray(labels, dtype=np.uint8)
    return np.where(np.isin(labels, list(label_ids)), 0, labels).astype(np.uint8)


def clean_coarse_labels(
    labels: np.ndarray,
    *,
    max_distance: float | None = COARSE_MAX_LIVER_DISTANCE,
    keep_largest_ids: Sequence[int] = ROI_ORGANS,
    deleted_ids: Sequence[int] = COARSE_DELETED_LABELS,
    anchor: int = LIVER,
) -> np.ndarray:
    """The published coarse-map clean-up, in this order, on the coarse model's grid.

    1. foreground components whose centroid is farther than ``max_distance`` voxels from the
       centroid of the largest ``anchor`` (liver) component are removed (skipped without one,
       or when ``max_distance`` is None);
    2. only the largest component of each of ``keep_largest_ids`` is kept;
    3. ``deleted_ids`` are deleted.
    """
    labels = np.asarray(labels, dtype=np.uint8)
    centre = None if max_distance is None else largest_component_centroid(labels, anchor)
    if centre is not None:
        labels = drop_components_far_from(labels, centre, max_distance)
    labels = keep_largest_components(labels, keep_largest_ids)
    return delete_labels(labels, deleted_ids)
