"""Clean-up of a label map and pasting the ROI result back into a full-size volume."""

from __future__ import annotations

from collections.abc import Sequence

import cc3d
import numpy as np
from scipy import ndimage

from c2fseg.infer.roi import RoiBox
from c2fseg.labels import SINGLE_COMPONENT_ORGANS


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
