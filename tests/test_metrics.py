"""DSC/NSD against hand-computed values and the FLARE23 scoring rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from c2fseg.labels import NSD_TOLERANCE_MM
from c2fseg.metrics import (
    dice,
    normalized_surface_distance,
    score_case,
    surface_distances,
    surfel_area_table,
)

CORNER = math.sqrt(3) / 8  # marching-cubes patch cutting one corner off a unit cube
EDGE = math.sqrt(2) / 2  # patch of two face-adjacent corners (a tilted 1 x sqrt(1/2) strip)
LIVER, AORTA, TUMOR = 1, 5, 14


def box(shape, lo, hi) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return m


def test_dice_counts():
    a = box((4, 4, 4), (0, 0, 0), (1, 1, 4))  # 4 voxels
    b = box((4, 4, 4), (0, 0, 2), (1, 1, 4))  # 2 voxels, both inside a
    assert dice(a, b) == pytest.approx(2 * 2 / 6)
    assert dice(np.zeros((2, 2, 2)), np.zeros((2, 2, 2))) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0


def test_area_table_is_symmetric_and_scales_with_spacing():
    unit = surfel_area_table((1.0, 1.0, 1.0))
    assert unit[0] == 0 and unit[255] == 0
    assert unit[1] == pytest.approx(CORNER)
    np.testing.assert_allclose(unit, unit[::-1])  # a block and its complement: same surface
    # four corners on one z-plane (bits 0-3) form a flat y-x square of area s_y * s_x
    assert surfel_area_table((3.0, 2.0, 0.5))[0b1111] == pytest.approx(2.0 * 0.5)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.7)])
def test_box_surface_area_matches_chamfered_box(spacing):
    """Marching-cubes surface of an n0 x n1 x n2 voxel box: flat faces, chamfered edges, corners."""
    n = (4, 5, 6)
    mask = box((8, 9, 10), (2, 2, 2), (2 + n[0], 2 + n[1], 2 + n[2]))
    s = spacing
    length = [(n[i] - 1) * s[i] for i in range(3)]
    faces = 2 * (length[1] * length[2] + length[0] * length[2] + length[0] * length[1])
    edges = 4 * sum(
        length[i] * math.hypot(s[j] / 2, s[k] / 2) for i, j, k in ((0, 1, 2), (1, 0, 2), (2, 0, 1))
    )
    corner = 0.5 * math.sqrt((s[1] * s[2]) ** 2 + (s[0] * s[2]) ** 2 + (s[0] * s[1]) ** 2) / 4
    _, areas, _, _ = surface_distances(mask, mask, spacing)
    assert areas.sum() == pytest.approx(faces + edges + 8 * corner)


def ball(radius_mm: float, spacing, shape=None) -> np.ndarray:
    """Voxels whose centres lie within ``radius_mm`` of the volume centre."""
    shape = shape or [int(2 * radius_mm / s) + 8 for s in spacing]
    grid = np.indices(shape).astype(float)
    dist2 = sum(((grid[i] - (shape[i] - 1) / 2) * spacing[i]) ** 2 for i in range(3))
    return dist2 <= radius_mm**2


@pytest.mark.parametrize("spacing, upper", [((1.0, 1.0, 1.0), 1.12), ((2.0, 1.0, 1.0), 1.16)])
def test_sphere_area_close_to_4_pi_r2(spacing, upper):
    """A voxelised sphere's terraced surface is a little larger than 4 pi r^2 (coarser z: more)."""
    sphere = ball(9.0, spacing)
    _, areas, _, _ = surface_distances(sphere, sphere, spacing)
    assert 1.0 < areas.sum() / (4 * math.pi * 9.0**2) < upper
    assert normalized_surface_distance(sphere, sphere, spacing, 0.1) == 1.0


def test_concentric_spheres_one_mm_apart():
    shape = [28, 28, 28]
    small, large = ball(9.0, (1, 1, 1), shape), ball(10.0, (1, 1, 1), shape)
    assert normalized_surface_distance(small, large, (1, 1, 1), 1.5) == pytest.approx(1.0)
    assert normalized_surface_distance(small, large, (1, 1, 1), 0.5) < 0.5


def test_single_voxels_shifted_by_one():
    """Two unit voxels sharing a face: 4 of each one's 8 corner surfels coincide."""
    a = box((3, 3, 4), (1, 1, 1), (2, 2, 2))
    b = box((3, 3, 4), (1, 1, 2), (2, 2, 3))
    assert normalized_surface_distance(a, b, (1, 1, 1), 0.5) == pytest.approx(0.5)
    assert normalized_surface_distance(a, b, (1, 1, 1), 1.0) == pytest.approx(1.0)


def test_unequal_surfaces_weighted_by_area():
    """gt: one voxel; pred: that voxel plus its x neighbour. Only pred's 4 far corners are 1 mm off."""
    gt = box((3, 3, 5), (1, 1, 1), (2, 2, 2))
    pred = box((3, 3, 5), (1, 1, 1), (2, 2, 3))
    expected = (12 * CORNER + 4 * EDGE) / (16 * CORNER + 4 * EDGE)
    assert normalized_surface_distance(pred, gt, (1, 1, 1), 0.5) == pytest.approx(expected)
    assert normalized_surface_distance(pred, gt, (1, 1, 1), 1.0) == pytest.approx(1.0)


@pytest.mark.parametrize("axis, step_mm", [(0, 3.0), (2, 0.8)])
def test_shift_along_thick_and_thin_axis(axis, step_mm):
    """Spacing (3, 0.8, 0.8): a one-voxel shift costs 3 mm along z but 0.8 mm along x."""
    spacing = (3.0, 0.8, 0.8)
    gt = box((12, 14, 14), (3, 3, 3), (8, 10, 10))
    pred = np.roll(gt, 1, axis=axis)
    assert normalized_surface_distance(pred, gt, spacing, step_mm) == pytest.approx(1.0)
    below = normalized_surface_distance(pred, gt, spacing, step_mm - 0.05)
    assert 0.0 < below < 1.0


def test_shift_by_two_voxels():
    gt = box((10, 10, 14), (2, 2, 2), (8, 8, 8))
    pred = np.roll(gt, 2, axis=2)
    assert normalized_surface_distance(pred, gt, (1, 1, 1), 2.0) == pytest.approx(1.0)
    assert normalized_surface_distance(pred, gt, (1, 1, 1), 1.9) < 1.0
    assert normalized_surface_distance(pred, gt, (1, 1, 1), 0.5) < normalized_surface_distance(
        pred, gt, (1, 1, 1), 1.5
    )


def test_result_independent_of_volume_size():
    """Cropping to the bounding box must not change the score (also at the volume border)."""
    gt = box((6, 6, 6), (0, 0, 0), (4, 4, 4))  # touches the border
    pred = box((6, 6, 6), (0, 0, 1), (4, 4, 5))
    big_gt, big_pred = np.pad(gt, 5), np.pad(pred, 5)
    small = normalized_surface_distance(pred, gt, (1, 2, 3), 1.5)
    assert small == pytest.approx(normalized_surface_distance(big_pred, big_gt, (1, 2, 3), 1.5))


def test_nsd_empty_cases():
    z = np.zeros((4, 4, 4), dtype=bool)
    m = box((4, 4, 4), (1, 1, 1), (3, 3, 3))
    assert normalized_surface_distance(z, z, (1, 1, 1), 2) == 1.0
    assert normalized_surface_distance(m, z, (1, 1, 1), 2) == 0.0
    assert normalized_surface_distance(z, m, (1, 1, 1), 2) == 0.0


def test_score_case_empty_rules():
    gt = np.zeros((6, 6, 6), np.uint8)
    pred = np.zeros((6, 6, 6), np.uint8)
    gt[1:3, 1:3, 1:3] = LIVER
    pred[3:5, 3:5, 3:5] = 3  # spleen only in the prediction
    scores = score_case(pred, gt, (1, 1, 1))
    assert set(scores) == set(NSD_TOLERANCE_MM)
    assert scores[2] == {"dsc": 1.0, "nsd": 1.0}  # absent on both sides
    assert scores[3] == {"dsc": 0.0, "nsd": 0.0}  # prediction only
    assert scores[LIVER] == {"dsc": 0.0, "nsd": 0.0}  # ground truth only


def test_nsd_zeroed_below_dsc_floor():
    """Lines 1 voxel apart: surfaces within liver's 5 mm, but DSC < 0.2 -> NSD 0."""
    gt = np.zeros((4, 5, 14), np.uint8)
    pred = np.zeros_like(gt)
    gt[1, 1, 1:11] = LIVER  # 10 voxels
    pred[1, 2, 1:11] = LIVER  # 10 voxels beside it ...
    pred[1, 1, 1] = LIVER  # ... plus one overlapping: DSC = 2 / 21
    raw = normalized_surface_distance(pred == LIVER, gt == LIVER, (1, 1, 1), 5.0)
    assert raw == pytest.approx(1.0)
    scores = score_case(pred, gt, (1, 1, 1), labels=[LIVER])
    assert scores[LIVER]["dsc"] == pytest.approx(2 / 21)
    assert scores[LIVER]["nsd"] == 0.0


def test_nsd_kept_at_dsc_floor():
    gt = np.zeros((3, 3, 12), np.uint8)
    pred = np.zeros_like(gt)
    gt[1, 1, 1:6] = LIVER
    pred[1, 1, 5:10] = LIVER  # 1 of 5 + 5 overlaps: DSC = 0.2 exactly
    scores = score_case(pred, gt, (1, 1, 1), labels=[LIVER])
    assert scores[LIVER]["dsc"] == pytest.approx(0.2)
    raw = normalized_surface_distance(pred == LIVER, gt == LIVER, (1, 1, 1), 5.0)
    assert raw == pytest.approx(1.0)  # every surface point within 4 mm of the other line
    assert scores[LIVER]["nsd"] == raw  # kept, not zeroed


@pytest.mark.parametrize("label", [AORTA, 6, 10])
def test_z_range_labels_scored_on_gt_slices(label):
    """A tube predicted beyond the annotated axial range is not penalised for tubular labels."""
    gt = np.zeros((12, 6, 6), np.uint8)
    gt[4:8, 2:4, 2:4] = label
    pred = np.zeros_like(gt)
    pred[0:12, 2:4, 2:4] = label  # same tube over all slices
    tubular = score_case(pred, gt, (2.0, 1.0, 1.0), labels=[label])[label]
    assert tubular == {"dsc": pytest.approx(1.0), "nsd": pytest.approx(1.0)}
    as_liver = score_case(np.where(pred, LIVER, 0), np.where(gt, LIVER, 0), (2.0, 1, 1), [LIVER])
    assert as_liver[LIVER]["dsc"] == pytest.approx(2 * 16 / (16 + 48))


def test_z_range_uses_axis_zero_and_counts_misses_inside_range():
    gt = np.zeros((10, 8, 8), np.uint8)
    gt[2:6, 3:5, 3:5] = AORTA
    pred = np.zeros_like(gt)
    pred[2:4, 3:5, 3:5] = AORTA  # covers half of the annotated slices
    pred[7:10, 3:5, 3:5] = AORTA  # outside the range: ignored
    s = score_case(pred, gt, (1, 1, 1), labels=[AORTA], z_drop=None)[AORTA]
    assert s["dsc"] == pytest.approx(2 * 8 / (8 + 16))
    # along a different axis the rule does not crop: extra voxels count
    gt_x = np.moveaxis(gt, 0, 2)
    pred_x = np.moveaxis(pred, 0, 2)
    s_x = score_case(pred_x, gt_x, (1, 1, 1), labels=[AORTA])[AORTA]
    assert s_x["dsc"] == pytest.approx(2 * 8 / (20 + 16))


def test_z_range_leaves_out_one_end_slice_like_the_official_scorer():
    """Official range is gt[z_min:z_max] (half-open): the slice at z_max is not scored."""
    gt = np.zeros((10, 8, 8), np.uint8)
    gt[2:6, 3:5, 3:5] = AORTA  # annotated slices 2, 3, 4, 5
    miss_top = gt.copy()
    miss_top[5] = 0  # prediction misses only the last slice
    miss_bottom = gt.copy()
    miss_bottom[2] = 0  # ... or only the first
    def dsc(pred, z_drop):
        return score_case(pred, gt, (1, 1, 1), labels=[AORTA], z_drop=z_drop)[AORTA]["dsc"]
    assert dsc(miss_top, "last") == 1.0  # slice 5 is not scored
    assert dsc(miss_bottom, "last") == pytest.approx(2 * 8 / (8 + 12))
    assert dsc(miss_bottom, "first") == 1.0  # head-first storage: slice 2 is the dropped one
    assert dsc(miss_top, "first") == pytest.approx(2 * 8 / (8 + 12))
    assert dsc(miss_top, None) == pytest.approx(2 * 12 / (12 + 16))  # inclusive range
    assert dsc(miss_top, "last") == score_case(miss_top, gt, (1, 1, 1), [AORTA])[AORTA]["dsc"]
    # liver is not range-limited: the missed slice always counts
    as_liver = score_case(np.where(miss_top, LIVER, 0), np.where(gt, LIVER, 0), (1, 1, 1), [LIVER])
    assert as_liver[LIVER]["dsc"] == pytest.approx(2 * 12 / (12 + 16))
    with pytest.raises(ValueError, match="z_drop"):
        score_case(gt, gt, (1, 1, 1), labels=[AORTA], z_drop="top")


def test_z_range_single_slice_ground_truth_is_scored_on_that_slice():
    gt = np.zeros((6, 6, 6), np.uint8)
    gt[3, 2:4, 2:4] = AORTA
    pred = np.zeros_like(gt)
    pred[3, 2:3, 2:4] = AORTA  # half of the one annotated slice
    pred[0:2, 2:4, 2:4] = AORTA  # outside the range: ignored
    for z_drop in ("last", "first", None):
        s = score_case(pred, gt, (1, 1, 1), labels=[AORTA], z_drop=z_drop)[AORTA]
        assert s["dsc"] == pytest.approx(2 * 2 / (2 + 4))


def test_z_range_label_without_gt_falls_back():
    gt = np.zeros((6, 6, 6), np.uint8)
    pred = np.zeros_like(gt)
    assert score_case(pred, gt, (1, 1, 1), labels=[AORTA])[AORTA] == {"dsc": 1.0, "nsd": 1.0}
    pred[1:3, 1:3, 1:3] = AORTA
    assert score_case(pred, gt, (1, 1, 1), labels=[AORTA])[AORTA] == {"dsc": 0.0, "nsd": 0.0}


def test_score_case_uses_label_tolerance():
    """Shift of 3 mm: inside liver's 5 mm tolerance, outside tumor's 2 mm."""
    gt = np.zeros((8, 10, 14), np.uint8)
    gt[2:6, 2:8, 2:8] = LIVER
    gt[2:6, 2:8, 9:13] = TUMOR
    pred = np.roll(gt, 1, axis=0)  # spacing 3 mm along z
    scores = score_case(pred, gt, (3.0, 1.0, 1.0), labels=[LIVER, TUMOR])
    assert scores[LIVER]["nsd"] == pytest.approx(1.0)
    assert scores[TUMOR]["nsd"] < 1.0


def test_score_case_rejects_bad_input():
    a = np.zeros((3, 3, 3), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        score_case(a, np.zeros((3, 3, 4), np.uint8), (1, 1, 1))
    with pytest.raises(ValueError, match="tolerance"):
        score_case(a, a, (1, 1, 1), labels=[15])


def test_nsd_floor_is_configurable_between_our_rule_and_the_public_script():
    """DSC 0.15: NSD is zeroed under our 0.2 floor, computed under the script's 0.1 floor."""
    import numpy as np

    from c2fseg.metrics import score_case

    gt = np.zeros((10, 40, 40), np.uint8)
    pred = np.zeros_like(gt)
    gt[2:8, 5:25, 5:25] = 1
    pred[2:8, 5:25, 22:40] = 1  # overlaps gt in 3 of 20 columns -> DSC = 2*3/(20+18) ~ 0.158
    ours = score_case(pred, gt, (1.0, 1.0, 1.0), labels=[1])[1]
    script = score_case(pred, gt, (1.0, 1.0, 1.0), labels=[1], nsd_min_dsc=0.1)[1]
    overlap, sizes = 6 * 20 * 3, 6 * 20 * 20 + 6 * 20 * 18
    assert ours["dsc"] == script["dsc"] == pytest.approx(2 * overlap / sizes)
    assert ours["nsd"] == 0.0
    raw = normalized_surface_distance(pred == 1, gt == 1, (1.0, 1.0, 1.0), NSD_TOLERANCE_MM[1])
    assert 0.4 < raw < 0.5  # the overlap and the surfaces 5 mm either side of it
    assert script["nsd"] == raw
