"""Largest component per label, hole filling, pasting the ROI back."""

from __future__ import annotations

import numpy as np
import pytest

from c2fseg.infer.postprocess import (
    clean_coarse_labels,
    delete_labels,
    drop_components_far_from,
    fill_holes,
    keep_largest_components,
    largest_component_centroid,
    paste_roi,
)
from c2fseg.infer.roi import RoiBox
from c2fseg.labels import ROI_ORGANS, TUMOR


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


# -- the published coarse clean-up and largest-component sets ------------------------------------


def test_largest_component_centroid_is_the_mean_voxel_of_the_biggest_piece():
    labels = np.zeros((6, 6, 12), dtype=np.uint8)
    labels[0:2, 0:2, 0:3] = 1  # 12 voxels, centroid (0.5, 0.5, 1)
    labels[4:6, 4:6, 8:12] = 1  # 16 voxels, centroid (4.5, 4.5, 9.5)
    assert largest_component_centroid(labels).tolist() == [4.5, 4.5, 9.5]
    assert largest_component_centroid(labels, label=3) is None
    labels[4:6, 4:6, 8:12] = 0
    labels[5, 5, 5:11] = 1  # 6 voxels: now the first piece wins
    assert largest_component_centroid(labels).tolist() == [0.5, 0.5, 1.0]


def test_far_components_are_dropped_strictly_beyond_the_distance():
    labels = np.zeros((3, 12, 14), dtype=np.uint8)
    labels[0, 6, 8] = 2  # distance exactly 10 from (0, 0, 0): kept
    labels[2, 0, 11] = 3  # distance sqrt(4 + 121) > 10: dropped
    out = drop_components_far_from(labels, (0.0, 0.0, 0.0), 10.0)
    assert out[0, 6, 8] == 2 and out[2, 0, 11] == 0
    assert out.dtype == np.uint8 and int((out > 0).sum()) == 1


def test_far_rule_treats_touching_labels_as_one_component():
    labels = np.zeros((1, 3, 16), dtype=np.uint8)
    labels[0, 0, 10] = 2  # alone at distance 10: would be kept
    labels[0, 0, 11:13] = 3  # touching it: the joint centroid is at x = 11
    out = drop_components_far_from(labels, (0.0, 0.0, 0.0), 10.0)
    assert not out.any()


def _coarse_case() -> np.ndarray:
    labels = np.zeros((8, 8, 70), dtype=np.uint8)
    labels[0:5, 0:5, 0:5] = 1  # liver, centroid (2, 2, 2)
    labels[2, 2, 58] = 2  # distance 56 < 170/3: kept
    labels[2, 7, 59] = 9  # distance sqrt(25 + 57^2) > 170/3: dropped
    labels[6, 0, 0] = 7  # adrenal next to the liver: deleted
    labels[7, 7, 10] = 12  # duodenum: deleted
    return labels


def test_clean_coarse_labels_distance_then_delete():
    out = clean_coarse_labels(_coarse_case())
    assert out[2, 2, 58] == 2 and out[2, 7, 59] == 0
    assert not np.isin(out, [7, 8, 12]).any()
    assert int((out == 1).sum()) == 125


def test_clean_coarse_labels_filters_by_distance_before_the_largest_component():
    labels = _coarse_case()
    labels[0:3, 5:8, 64:70] = 3  # big spleen piece, far away (centroid x = 66.5)
    labels[6:8, 6:8, 6:8] = 3  # small spleen piece near the liver
    out = clean_coarse_labels(labels)
    # largest-first would keep the far piece, then drop it by distance: no spleen at all
    assert int((out == 3).sum()) == 8 and out[7, 7, 7] == 3


def test_clean_coarse_labels_without_liver_skips_the_distance_rule():
    labels = _coarse_case()
    labels[labels == 1] = 0
    out = clean_coarse_labels(labels)
    assert out[2, 7, 59] == 9 and out[2, 2, 58] == 2


def test_delete_labels():
    labels = np.array([[[0, 7, 8, 12, 1, 14]]], dtype=np.uint8)
    assert delete_labels(labels, (7, 8, 12)).tolist() == [[[0, 0, 0, 0, 1, 14]]]


def test_largest_components_of_the_published_set_use_26_connectivity():
    labels = np.zeros((8, 8, 8), dtype=np.uint8)
    labels[0, 0, 0] = labels[1, 1, 1] = 1  # one piece only through a corner (26-connectivity)
    labels[5, 5, 5] = 1  # a smaller, separate piece
    for lab, where in [(7, (3, 0, 3)), (8, (0, 6, 0)), (12, (6, 0, 0)), (TUMOR, (6, 6, 0))]:
        labels[where] = lab  # fragments of labels outside the set
        labels[where[0], where[1], where[2] + 2] = lab
    labels[3:5, 6:8, 6:8] = 2
    labels[0, 7, 7] = 2
    out = keep_largest_components(labels, ROI_ORGANS)
    assert out[0, 0, 0] == 1 and out[1, 1, 1] == 1 and out[5, 5, 5] == 0
    assert out[0, 7, 7] == 0 and int((out == 2).sum()) == 8
    for lab in (7, 8, 12, TUMOR):
        assert int((out == lab).sum()) == 2
