"""Largest component per label, hole filling, pasting the ROI back."""

from __future__ import annotations

import numpy as np
import pytest

from c2fseg.infer.postprocess import fill_holes, keep_largest_components, paste_roi
from c2fseg.infer.roi import RoiBox
from c2fseg.labels import TUMOR


def test_keeps_largest_component_of_each_label_and_leaves_tumor():
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[0:4, 0:4, 0:4] = 1  # liver, big
    labels[8:10, 8:10, 8:10] = 1  # liver, stray piece
    labels[0:2, 8:10, 0:2] = 3  # spleen, small piece
    labels[6:10, 0:3, 6:10] = 3  # spleen, big piece
    labels[11, 0, 11] = TUMOR  # tumor pieces are all kept
    labels[11, 11, 0] = TUMOR
    out = keep_largest_components(labels)
    assert (out == 1).sum() == 64 and out[9, 9, 9] == 0
    assert (out == 3).sum() == 48 and out[0, 8, 0] == 0
    assert (out == TUMOR).sum() == 2
    kept = out > 0
    assert (out[kept] == labels[kept]).all()


def test_touching_labels_stay_separate_components():
    labels = np.zeros((4, 4, 8), dtype=np.uint8)
    labels[:, :, 0:4] = 2
    labels[:, :, 4:8] = 13
    out = keep_largest_components(labels)
    assert np.array_equal(out, labels)


def test_fill_holes_fills_only_enclosed_background():
    labels = np.zeros((9, 9, 9), dtype=np.uint8)
    labels[1:8, 1:8, 1:8] = 1
    labels[4, 4, 4] = 0  # enclosed hole
    labels[3, 3, 3] = TUMOR  # another label inside: must stay
    labels[0, 0, 0] = 0
    out = fill_holes(labels)
    assert out[4, 4, 4] == 1 and out[3, 3, 3] == TUMOR and out[0, 0, 0] == 0


def test_paste_roi_places_crop_and_checks_shape():
    roi = np.arange(1, 2 * 3 * 4 + 1, dtype=np.uint8).reshape(2, 3, 4)
    box = RoiBox((1, 2, 3), (3, 5, 7))
    full = paste_roi(roi, box, (5, 6, 8))
    assert full.dtype == np.uint8 and full.shape == (5, 6, 8)
    assert np.array_equal(full[1:3, 2:5, 3:7], roi)
    assert full.sum() == roi.sum()
    with pytest.raises(ValueError):
        paste_roi(roi, RoiBox((0, 0, 0), (2, 3, 3)), (5, 6, 8))
