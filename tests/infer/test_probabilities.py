"""Probability floor, argmax, and the (z-chunked) align_corners=True probability resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from c2fseg.infer.probabilities import (
    even_z_splits,
    floor_probabilities,
    probabilities_to_labels,
    resize_probabilities,
    resized_probability_labels,
    z_splits_for_roi,
)
from c2fseg.infer.resample import model_grid_labels


def random_probs(c=5, shape=(6, 7, 8), seed=0, scale=2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(c, *shape, generator=g) * scale, dim=0)


def test_floor_zeroes_only_values_below_it():
    probs = torch.tensor([0.05, 0.1, 0.0999, 0.85]).view(4, 1, 1, 1)
    out = floor_probabilities(probs, 0.1)
    assert out.flatten().tolist() == pytest.approx([0.0, 0.1, 0.0, 0.85])
    assert probs.flatten()[0] == pytest.approx(0.05)  # the input is left alone
    assert torch.equal(floor_probabilities(probs, 0.0), probs)


def test_all_classes_floored_gives_background_even_if_background_was_not_the_max():
    probs = torch.full((15, 1, 1, 2), 1 / 15)
    probs[3, 0, 0, 0] += 0.01  # class 3 wins without the floor
    probs[0, 0, 0, 0] -= 0.01
    probs[4, 0, 0, 1] = 0.5  # a confident voxel
    lut = torch.arange(15, dtype=torch.uint8)
    assert probabilities_to_labels(probs, lut)[0, 0].tolist() == [3, 4]
    assert probabilities_to_labels(floor_probabilities(probs, 0.1), lut)[0, 0].tolist() == [0, 4]


def test_our_min_prob_equals_floor_then_argmax_on_one_grid():
    """On the same grid our min_prob rule gives the labels of the published floor + argmax."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(15, 6, 7, 8, generator=g) * 0.3  # flat enough for many sub-0.1 voxels
    lut = torch.tensor([0, *range(1, 14), 14], dtype=torch.uint8)
    ours, _ = model_grid_labels(logits, lut, chunk_z=2, min_prob=0.1)
    published = probabilities_to_labels(floor_probabilities(torch.softmax(logits, 0), 0.1), lut)
    assert (ours == 0).float().mean() > 0.2  # the floor matters here
    assert torch.equal(ours, published)


def test_single_resize_matches_torch_align_corners():
    probs = random_probs()
    out = resize_probabilities(probs, (11, 5, 13), chunk_z=3)
    ref = F.interpolate(probs[None], size=(11, 5, 13), mode="trilinear", align_corners=True)[0]
    assert out.dtype == torch.float32 and torch.allclose(out, ref, atol=1e-6)
    ours = resize_probabilities(probs, (11, 5, 13), align_corners=False)
    assert not torch.allclose(ours, ref, atol=1e-3)


def test_z_chunks_are_resized_independently():
    ramp = torch.arange(4, dtype=torch.float32).view(1, 4, 1, 1)
    single = resize_probabilities(ramp, (6, 1, 1))
    assert single.flatten().tolist() == pytest.approx([0.0, 0.6, 1.2, 1.8, 2.4, 3.0])
    split = resize_probabilities(ramp, (6, 1, 1), z_splits=even_z_splits(4, 6, 2))
    # source slices [0, 2) -> outputs [0, 3), [2, 4) -> [3, 6), each with its own corners
    assert split.flatten().tolist() == pytest.approx([0.0, 0.5, 1.0, 2.0, 2.5, 3.0])


def test_even_z_splits_cut_like_array_split():
    assert even_z_splits(10, 7, 3) == [(0, 4, 0, 3), (4, 7, 3, 5), (7, 10, 5, 7)]
    for n_src, n_dst, k in [(10, 7, 3), (400, 513, 4), (9, 9, 2)]:
        splits = even_z_splits(n_src, n_dst, k)
        assert [s1 - s0 for s0, s1, _, _ in splits] == [len(a) for a in np.array_split(range(n_src), k)]
        assert [d1 - d0 for _, _, d0, d1 in splits] == [len(a) for a in np.array_split(range(n_dst), k)]
    assert even_z_splits(5, 8, 1) == [(0, 5, 0, 8)]
    with pytest.raises(ValueError, match="z-chunks"):
        even_z_splits(3, 8, 4)


def test_bad_splits_are_refused():
    probs = random_probs(shape=(6, 3, 3))
    with pytest.raises(ValueError, match="tile"):
        resize_probabilities(probs, (8, 3, 3), z_splits=[(0, 3, 0, 4), (4, 6, 4, 8)])  # gap
    with pytest.raises(ValueError, match="tile"):
        resize_probabilities(probs, (8, 3, 3), z_splits=[(0, 6, 0, 7)])  # short


@pytest.mark.parametrize("chunks", [1, 2, 3])
def test_labels_of_resized_probabilities_without_holding_them(chunks):
    probs = floor_probabilities(random_probs(c=6, shape=(9, 10, 7), seed=2, scale=1.0), 0.1)
    lut = torch.tensor([0, 2, 4, 6, 9, 14], dtype=torch.uint8)
    out_shape = (20, 13, 15)
    splits = even_z_splits(9, 20, chunks)
    ref = probabilities_to_labels(resize_probabilities(probs, out_shape, z_splits=splits), lut)
    out = resized_probability_labels(probs, out_shape, lut, z_splits=splits, chunk_z=4)
    assert out.dtype == torch.uint8 and torch.equal(out, ref)
    assert set(torch.unique(out).tolist()) <= set(lut.tolist())


def test_z_splits_for_roi_split_only_above_the_slice_limit():
    assert z_splits_for_roi(200, 380, chunks=3) is None
    assert z_splits_for_roi(200, 381, chunks=3) == even_z_splits(200, 381, 3)
    assert z_splits_for_roi(200, 600) is None  # default: one interpolation
    assert z_splits_for_roi(20, 12, max_slices=10, chunks=2) == [(0, 10, 0, 6), (10, 20, 6, 12)]
