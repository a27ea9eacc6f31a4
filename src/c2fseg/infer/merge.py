"""Combining the organ and tumor stages into one label map (pure functions on arrays).

Rules:

* The organ model's labels are used everywhere in the ROI; tumor (14) overrides them where the
  tumor stage calls tumor. The tumor model's own organ channels are not used.
* One tumor model: tumor is where its argmax label is 14 (what the model was trained for).
* Several tumor models: the mean of their tumor probabilities (``prob_label=14``) is taken and
  tumor is called where the mean is >= ``threshold`` (0.5). This is the ensemble the published
  solution intended; its loop overwrote the first model's output with the second's on
  overlapping voxels instead of combining them, so its result depended on model order.
* Optional: drop tumor components that touch no organ voxel (within one voxel, 26-neighbours),
  and drop tumor components smaller than ``min_tumor_ml``. Dropped tumor voxels get the organ
  model's label back.
"""

from __future__ import annotations

from collections.abc import Sequence

import cc3d
import numpy as np
from scipy import ndimage

from c2fseg.labels import TUMOR


def mean_probability(probs: Sequence):
    """Voxel-wise mean of several probability maps (numpy arrays or torch tensors, same shape).

    Accumulates in float32 so float16 inputs do not lose precision.
    """
    if not probs:
        raise ValueError("mean_probability needs at least one probability map")
    total = probs[0].astype(np.float32) if isinstance(probs[0], np.ndarray) else probs[0].float()
    for p in probs[1:]:
        total = total + (p.astype(np.float32) if isinstance(p, np.ndarray) else p.float())
    return total / len(probs)


def tumor_mask_from_models(tumor_labels: Sequence, tumor_probs: Sequence = (), threshold: float = 0.5):
    """Boolean tumor mask from one or several tumor-stage outputs (rule in the module docstring).

    Works on numpy arrays or torch tensors (on any device) and returns the same kind.
    """
    if len(tumor_labels) == 0:
        raise ValueError("no tumor-stage output given")
    if len(tumor_labels) == 1:
        return tumor_labels[0] == TUMOR
    if len(tumor_probs) != len(tumor_labels) or any(p is None for p in tumor_probs):
        raise ValueError("combining several tumor models needs each model's tumor probability")
    return mean_probability(list(tumor_probs)) >= threshold


def drop_tumor_not_touching_organ(tumor: np.ndarray, organ_labels: np.ndarray) -> np.ndarray:
    """Keep only tumor components that overlap or touch (26-neighbourhood) an organ voxel."""
    tumor = np.asarray(tumor, dtype=bool)
    if not tumor.any():
        return tumor
    cc = cc3d.connected_components(tumor.astype(np.uint8), connectivity=26)
    near_organ = ndimage.binary_dilation(organ_labels > 0, structure=np.ones((3, 3, 3), bool))
    keep_ids = np.unique(cc[near_organ & tumor])
    return np.isin(cc, keep_ids[keep_ids > 0])


def drop_small_tumors(tumor: np.ndarray, spacing: Sequence[float], min_ml: float) -> np.ndarray:
    """Remove tumor components (26-connected) smaller than ``min_ml`` millilitres."""
    tumor = np.asarray(tumor, dtype=bool)
    if min_ml <= 0 or not tumor.any():
        return tumor
    voxel_ml = float(np.prod(spacing)) / 1000.0
    min_voxels = int(np.ceil(min_ml / voxel_ml))
    kept = cc3d.dust(tumor.astype(np.uint8), threshold=min_voxels, connectivity=26)
    return kept > 0


def merge_labels(
    organ_labels: np.ndarray,
    tumor: np.ndarray,
    spacing: Sequence[float],
    *,
    tumor_must_touch_organ: bool = False,
    min_tumor_ml: float = 0.0,
) -> np.ndarray:
    """Organ labels with tumor (14) written over them, after the optional tumor filters."""
    organ_labels = np.asarray(organ_labels, dtype=np.uint8)
    tumor = np.asarray(tumor, dtype=bool)
    if tumor.shape != organ_labels.shape:
        raise ValueError(f"tumor mask shape {tumor.shape} != organ map shape {organ_labels.shape}")
    if tumor_must_touch_organ:
        tumor = drop_tumor_not_touching_organ(tumor, organ_labels)
    if min_tumor_ml > 0:
        tumor = drop_small_tumors(tumor, spacing, min_tumor_ml)
    merged = organ_labels.copy()
    merged[tumor] = TUMOR
    return merged


def reconcile_tumor_maps(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The published FLARE23 HIASBUAA combination of two tumor-stage label maps (order-dependent).

    Starting from ``first``, tumor (14) is set wherever ``second`` says tumor (the union). Then
    the union's tumor voxels are taken in raster (C) order and the first ``N`` of them, ``N``
    being the number of ``second``'s tumor voxels, get ``second``'s label wherever that is not
    tumor. So tumor voxels of ``first`` early in raster order can lose their tumor label, and
    the result depends on which map comes first. Kept only to reproduce that pipeline; our rule
    is :func:`tumor_mask_from_models`. Returns a uint8 label map.
    """
    first = np.asarray(first, dtype=np.uint8)
    second = np.asarray(second, dtype=np.uint8)
    if first.shape != second.shape:
        raise ValueError(f"tumor maps differ in shape: {first.shape} vs {second.shape}")
    second_tumor = second == TUMOR
    union = first.copy()
    union[second_tumor] = TUMOR
    flat, other = union.reshape(-1), second.reshape(-1)
    visited = np.flatnonzero(flat == TUMOR)[: int(np.count_nonzero(second_tumor))]
    relabel = visited[other[visited] != TUMOR]
    flat[relabel] = other[relabel]
    return union
