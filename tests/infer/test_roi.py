"""ROI from constructed coarse label maps."""

from __future__ import annotations

import numpy as np
import pytest

from c2fseg.infer.roi import (
    RoiBox,
    box_gap_mm,
    compute_roi,
    foreground_bounds,
    largest_components,
    roi_from_foreground,
)


def coarse_map(shape=(40, 40, 40)) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint8)
    labels[10:20, 10:20, 10:20] = 1  # liver
    labels[12:18, 12:18, 22:26] = 3  # spleen near the liver
    return labels


def test_box_is_tight_without_margin():
    box = compute_roi(coarse_map(), (1.0, 1.0, 1.0), margin_mm=0)
    assert box == RoiBox((10, 10, 10), (20, 20, 26))


def test_smaller_component_of_same_organ_is_ignored():
    labels = coarse_map()
    labels[30:32, 30:32, 30:32] = 3  # a second, smaller spleen component
    box = compute_roi(labels, (1.0, 1.0, 1.0), margin_mm=0, max_liver_gap_mm=1000)
    assert box == RoiBox((10, 10, 10), (20, 20, 26))
    comps = largest_components(labels)
    assert comps[3][0] == 6 * 6 * 4


def test_component_far_from_liver_is_dropped_near_one_kept():
    labels = coarse_map((120, 40, 40))
    labels[100:110, 10:20, 10:20] = 2  # a big "kidney" 80 mm below the liver
    far = compute_roi(labels, (1.0, 1.0, 1.0), margin_mm=0, max_liver_gap_mm=50)
    assert far == RoiBox((10, 10, 10), (20, 20, 26))
    near = compute_roi(labels, (1.0, 1.0, 1.0), margin_mm=0, max_liver_gap_mm=100)
    assert near.stop[0] == 110


def test_ignored_labels_do_not_count():
    labels = coarse_map()
    labels[0:3, 0:3, 0:3] = 12  # duodenum (not an ROI organ)
    labels[35:38, 35:38, 35:38] = 7  # adrenal
    assert compute_roi(labels, (1.0, 1.0, 1.0), margin_mm=0) == RoiBox((10, 10, 10), (20, 20, 26))


def test_margin_in_mm_with_anisotropic_spacing():
    box = compute_roi(coarse_map(), (5.0, 2.0, 1.0), margin_mm=10)
    # 10 mm = 2 voxels along z, 5 along y, 10 along x
    assert box == RoiBox((8, 5, 0), (22, 25, 36))


def test_margin_per_axis():
    box = compute_roi(coarse_map(), (1.0, 1.0, 1.0), margin_mm=(1, 2, 3))
    assert box == RoiBox((9, 8, 7), (21, 22, 29))


def test_box_clipped_to_volume():
    labels = np.zeros((20, 20, 20), dtype=np.uint8)
    labels[0:5, 15:20, 2:8] = 1
    box = compute_roi(labels, (1.0, 1.0, 1.0), margin_mm=4)
    assert box == RoiBox((0, 11, 0), (9, 20, 12))


def test_no_organ_gives_none():
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[2:4, 2:4, 2:4] = 12  # only an ignored label
    assert compute_roi(labels, (1.0, 1.0, 1.0)) is None


@pytest.mark.parametrize("work", [(2.0, 2.0, 2.0), (3.0, 1.0, 4.0)])
def test_subsampled_box_contains_full_resolution_box(work):
    labels = np.zeros((41, 37, 43), dtype=np.uint8)
    labels[11:23, 7:20, 13:30] = 1
    labels[15:19, 9:12, 31:34] = 3
    full = compute_roi(labels, (1.0, 1.0, 1.0), margin_mm=0)
    coarse = compute_roi(labels, (1.0, 1.0, 1.0), margin_mm=0, work_spacing_mm=work)
    for a in range(3):
        assert coarse.start[a] <= full.start[a] and coarse.stop[a] >= full.stop[a]
        assert full.start[a] - coarse.start[a] < 4 and coarse.stop[a] - full.stop[a] < 4


def test_box_gap_mm():
    a = np.array([0, 9, 0, 9, 0, 9])
    b = np.array([20, 29, 0, 9, 15, 20])  # 10 voxels apart in z, 5 in x
    assert box_gap_mm(a, b, (1.0, 1.0, 2.0)) == pytest.approx(np.hypot(10, 10))
    assert box_gap_mm(a, a, (1.0, 1.0, 1.0)) == 0


def test_box_to_dict_in_voxels_and_mm():
    d = RoiBox((1, 2, 3), (5, 6, 9)).to_dict((2.0, 1.0, 0.5))
    assert d["shape_zyx"] == [4, 4, 6]
    assert d["size_mm_zyx"] == [8.0, 4.0, 3.0]
    assert d["offset_mm_zyx"] == [2.0, 2.0, 1.5]


# -- the published ROI rule ------------------------------------------------------------------------


def test_published_roi_stop_is_last_voxel_plus_pad_exclusive():
    labels = np.zeros((40, 40, 40), dtype=np.uint8)
    labels[10:20, 12:15, 5:31] = 3  # first/last voxels: z 10..19, y 12..14, x 5..30
    box = roi_from_foreground(labels, (1.0, 2.0, 4.0))  # pads int(20/s): 20, 10, 5
    assert box == RoiBox((0, 2, 0), (39, 24, 35))
    # the last foreground row is 19 (z): the box ends at 19 + 20 = 39 exclusive, one short of ours
    assert box.stop[0] - 1 == 19 + 20 - 1


def test_published_roi_pad_is_truncated_not_rounded_up():
    labels = np.zeros((30, 30, 30), dtype=np.uint8)
    labels[15, 15, 15] = 1
    box = roi_from_foreground(labels, (3.0, 0.7, 2.5), margin_mm=10.0)  # 3.33 -> 3, 14.29 -> 14, 4
    assert box == RoiBox((12, 1, 11), (18, 29, 19))
    ours = compute_roi(labels, (3.0, 0.7, 2.5), margin_mm=10.0)  # rounded up, inclusive end + pad
    assert ours == RoiBox((11, 0, 11), (20, 30, 20))


def test_published_roi_counts_every_label_and_clips():
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[0, 9, 4] = 12  # any label > 0 counts (the clean-up deleted what should not)
    labels[2, 3, 9] = 14
    assert roi_from_foreground(labels, (1.0, 1.0, 1.0), margin_mm=5.0) == RoiBox((0, 0, 0), (7, 10, 10))
    assert roi_from_foreground(np.zeros((4, 4, 4), np.uint8), (1.0, 1.0, 1.0)) is None


def test_foreground_bounds_are_inclusive():
    labels = np.zeros((5, 6, 7), dtype=np.uint8)
    labels[1, 2, 3] = labels[3, 5, 4] = 2
    assert foreground_bounds(labels) == ([1, 2, 3], [3, 5, 4])
    assert foreground_bounds(np.zeros((2, 2, 2))) is None
