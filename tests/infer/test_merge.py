"""Merge rules: tumor overrides organ, tumor-model averaging, touch rule, minimum size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from c2fseg.infer.merge import (
    mean_probability,
    merge_labels,
    reconcile_tumor_maps,
    tumor_mask_from_models,
)
from c2fseg.labels import TUMOR


def organ_map() -> np.ndarray:
    organ = np.zeros((10, 10, 10), dtype=np.uint8)
    organ[2:8, 2:8, 2:8] = 1
    return organ


def test_tumor_overrides_organ_and_nothing_else():
    organ = organ_map()
    tumor = np.zeros_like(organ, dtype=bool)
    tumor[3:5, 3:5, 3:5] = True
    merged = merge_labels(organ, tumor, (1.0, 1.0, 1.0))
    assert (merged[tumor] == TUMOR).all()
    assert (merged[~tumor] == organ[~tumor]).all()


def test_single_tumor_model_uses_its_argmax_label():
    labels = np.zeros((4, 4, 4), dtype=np.uint8)
    labels[1, 1, 1] = TUMOR
    labels[2, 2, 2] = 1
    mask = tumor_mask_from_models([labels])
    assert mask.sum() == 1 and mask[1, 1, 1]


def test_two_tumor_models_are_averaged():
    a = np.zeros((1, 1, 4), dtype=np.float16)
    b = np.zeros((1, 1, 4), dtype=np.float16)
    a[0, 0] = [0.9, 0.6, 0.2, 0.5]
    b[0, 0] = [0.3, 0.3, 0.7, 0.5]
    labels = [np.zeros((1, 1, 4), np.uint8)] * 2
    mask = tumor_mask_from_models(labels, [a, b])
    # means 0.6, 0.45, 0.45, 0.5 -> tumor where >= 0.5, whatever each model alone says
    assert mask[0, 0].tolist() == [True, False, False, True]


def test_averaging_works_on_torch_tensors():
    a = torch.tensor([0.2, 0.4], dtype=torch.float16)
    b = torch.tensor([0.4, 0.9], dtype=torch.float16)
    assert mean_probability([a, b]).dtype == torch.float32
    mask = tumor_mask_from_models([a, b], [a, b])
    assert isinstance(mask, torch.Tensor)
    assert mask.tolist() == [False, True]


def test_several_models_without_probabilities_is_an_error():
    labels = [np.zeros((2, 2, 2), np.uint8)] * 2
    with pytest.raises(ValueError, match="probability"):
        tumor_mask_from_models(labels, [None, None])


def test_touch_rule_drops_only_tumor_away_from_organs():
    organ = organ_map()
    tumor = np.zeros(organ.shape, dtype=bool)
    tumor[8, 5, 5] = True  # adjacent to the organ (organ ends at index 7)
    tumor[0, 0, 0] = True  # isolated
    tumor[4, 4, 4] = True  # inside the organ
    off = merge_labels(organ, tumor, (1.0, 1.0, 1.0))
    assert (off == TUMOR).sum() == 3
    on = merge_labels(organ, tumor, (1.0, 1.0, 1.0), tumor_must_touch_organ=True)
    assert on[8, 5, 5] == TUMOR and on[4, 4, 4] == TUMOR
    assert on[0, 0, 0] == 0


def test_min_size_rule_in_ml_uses_spacing():
    organ = organ_map()
    tumor = np.zeros(organ.shape, dtype=bool)
    tumor[2:4, 2:4, 2:4] = True  # 8 voxels
    tumor[6, 6, 6] = True  # 1 voxel
    spacing = (2.0, 2.0, 2.0)  # 8 mm^3 per voxel: 64 mm^3 and 8 mm^3
    merged = merge_labels(organ, tumor, spacing, min_tumor_ml=0.05)
    assert (merged == TUMOR).sum() == 8
    assert merged[6, 6, 6] == 1  # the dropped tumor voxel gets its organ label back
    assert (merge_labels(organ, tumor, spacing, min_tumor_ml=0.07) == TUMOR).sum() == 0


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        merge_labels(organ_map(), np.zeros((2, 2, 2), bool), (1.0, 1.0, 1.0))


# -- the published tumor reconciliation and merge --------------------------------------------------

FIRST = np.array([14, 14, 1, 14, 0, 2, 14, 0], dtype=np.uint8).reshape(2, 2, 2)
SECOND = np.array([1, 0, 14, 3, 14, 2, 0, 14], dtype=np.uint8).reshape(2, 2, 2)


def test_reconciliation_by_hand():
    # union: [14, 14, 14, 14, 14, 2, 14, 14]; tumor voxels in C order 0, 1, 2, 3, 4, 6, 7;
    # SECOND has N = 3 tumor voxels, so voxels 0, 1, 2 take SECOND's label where it is not 14
    out = reconcile_tumor_maps(FIRST, SECOND)
    assert out.dtype == np.uint8
    assert out.ravel().tolist() == [1, 0, 14, 14, 14, 2, 14, 14]


def test_reconciliation_visits_in_c_order_whatever_the_memory_layout():
    out = reconcile_tumor_maps(np.asfortranarray(FIRST), np.asfortranarray(SECOND))
    assert out.ravel().tolist() == [1, 0, 14, 14, 14, 2, 14, 14]  # Fortran order: [1, 14, ...]


def test_reconciliation_depends_on_model_order():
    swapped = reconcile_tumor_maps(SECOND, FIRST)  # N = 4: voxels 0..3, FIRST's 1 lands on 2
    assert swapped.ravel().tolist() == [14, 14, 1, 14, 14, 2, 14, 14]
    with pytest.raises(ValueError, match="shape"):
        reconcile_tumor_maps(FIRST, SECOND[:1])


def test_without_second_tumor_the_first_map_is_kept():
    second = np.where(SECOND == TUMOR, 0, SECOND).astype(np.uint8)
    assert np.array_equal(reconcile_tumor_maps(FIRST, second), FIRST)


def test_merge_with_rules_off_is_the_published_merge():
    """Organ map everywhere, 14 wherever the (reconciled) tumor map says 14, its organs ignored."""
    g = np.random.default_rng(0)
    organ = g.integers(0, 14, size=(6, 7, 8)).astype(np.uint8)
    tumor_map = g.choice([0, 1, 5, TUMOR], size=(6, 7, 8)).astype(np.uint8)
    merged = merge_labels(organ, tumor_map == TUMOR, (2.0, 1.0, 1.0))
    assert np.array_equal(merged, np.where(tumor_map == TUMOR, TUMOR, organ))
    assert (tumor_map == TUMOR).any() and ((tumor_map == 5) & (organ != 5)).any()
