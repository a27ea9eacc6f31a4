"""Boundary-only label resampling (exact vs trilinear-then-argmax) and model-grid stage output."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fake_models import band_stage_model, tiny_stage_model
from infer_support import abdomen_ct, make_models

from c2fseg.infer.cascade import CascadeOptions, segment_volume
from c2fseg.infer.resample import (
    argmax_channels,
    boundary_labels,
    grid_box_to_input,
    grid_shape,
    logits_to_labels,
    uniform_cells,
)
from c2fseg.io import Volume, make_geometry


def region_logits(c: int, shape, seed: int = 0, cells: int = 3, noise: float = 0.2) -> torch.Tensor:
    """Random logits with label regions a few voxels wide: a coarse random field upsampled, plus noise."""
    g = torch.Generator().manual_seed(seed)
    small = [max(1, s // cells) for s in shape]
    field = torch.randn(1, c, *small, generator=g) * 4
    field[:, 0] += 2.0  # a dominant background, as in CT
    up = F.interpolate(field, size=tuple(shape), mode="trilinear", align_corners=False)[0]
    return up + noise * torch.randn(c, *shape, generator=g)


def full_reference(logits: torch.Tensor, out_shape) -> torch.Tensor:
    """F.interpolate of all logits, [C, *out_shape]."""
    return F.interpolate(logits[None], size=tuple(out_shape), mode="trilinear", align_corners=False)[0]


def assert_equal_up_to_ties(labels: torch.Tensor, interpolated: torch.Tensor, lut: torch.Tensor) -> None:
    """Labels equal lut[argmax] of the reference except at (near-)exact ties of its top two logits."""
    ref = lut[interpolated.argmax(0)]
    diff = labels != ref
    assert int(diff.sum()) <= 1e-4 * labels.numel()
    if diff.any():
        top2 = interpolated.topk(2, dim=0).values[:, diff]
        assert float((top2[0] - top2[1]).max()) < 1e-5


CASES = [
    ((6, 10, 12), (23, 17, 29)),  # non-integer upsampling
    ((8, 12, 12), (16, 36, 36)),  # integer upsampling
    ((20, 30, 30), (7, 11, 13)),  # downsampling
    ((9, 14, 11), (40, 14, 5)),  # anisotropic: up, same, down
    ((13, 17, 19), (13, 17, 19)),  # same grid
    ((1, 5, 7), (3, 9, 1)),  # size 1 along axes
    ((5, 1, 8), (5, 4, 3)),
    ((7, 9, 11), (1, 1, 1)),
]


@pytest.mark.parametrize("dense_fraction", [0.0, 0.4, 1.1])  # dense where mixed, default, never dense
@pytest.mark.parametrize(("src", "out"), CASES)
def test_boundary_labels_equal_full_interpolation(src, out, dense_fraction):
    logits = region_logits(7, src, seed=sum(src) + sum(out))
    lut = torch.tensor([0, 2, 3, 5, 7, 11, 14], dtype=torch.uint8)
    labels = boundary_labels(logits, out, lut, chunk_z=3, dense_fraction=dense_fraction)
    assert labels.shape == out and labels.dtype == torch.uint8
    assert_equal_up_to_ties(labels, full_reference(logits, out), lut)


def test_mixed_cells_are_a_minority_on_region_logits():
    """The test data above does exercise both the copied and the interpolated voxels."""
    codes = argmax_channels(region_logits(7, (12, 20, 20)), chunk_z=4)
    frac = uniform_cells(codes).float().mean().item()
    assert 0.3 < frac < 0.95


def test_uniform_cells_match_brute_force():
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 2, (5, 6, 7), generator=g, dtype=torch.uint8)
    codes[:, :3, :3] = 1  # some uniform cells too
    got = uniform_cells(codes)
    z, y, x = codes.shape
    for k in range(z):
        for j in range(y):
            for i in range(x):
                cell = codes[k : min(k + 2, z), j : min(j + 2, y), i : min(i + 2, x)]
                assert bool(got[k, j, i]) == bool((cell == cell.flatten()[0]).all())


@pytest.mark.parametrize("chunk_z", [1, 2, 5, 64])
def test_chunking_is_bit_identical(chunk_z):
    logits = region_logits(6, (7, 11, 13), seed=3)
    lut = torch.arange(6, dtype=torch.uint8)
    out = (19, 30, 22)
    ref_l, ref_p = logits_to_labels(logits, out, lut, chunk_z=out[0], prob_channel=2)
    lab, prob = logits_to_labels(logits, out, lut, chunk_z=chunk_z, prob_channel=2)
    assert torch.equal(lab, ref_l) and torch.equal(prob, ref_p)


def test_min_prob_takes_the_full_path():
    logits = region_logits(6, (7, 11, 13), seed=4, noise=1.0)
    lut = torch.arange(6, dtype=torch.uint8)
    out = (15, 20, 25)
    full, _ = logits_to_labels(logits, out, lut, chunk_z=4, min_prob=0.5, mode="full")
    default, _ = logits_to_labels(logits, out, lut, chunk_z=4, min_prob=0.5)
    assert torch.equal(default, full)
    plain, _ = logits_to_labels(logits, out, lut, chunk_z=4)
    assert not torch.equal(plain, full)  # the threshold did make voxels background


@pytest.mark.parametrize(("grid", "inp"), [((10, 12, 9), (31, 40, 17)), ((12, 8, 9), (5, 8, 30))])
def test_grid_box_covers_every_voxel_interpolation_could_label(grid, inp):
    """Upsample one-hot labels of a box: every input voxel touched lies inside the mapped box."""
    start, stop = (3, 2, 4), (6, 5, 7)
    onehot = torch.zeros(2, *grid)
    onehot[0] = 1.0
    onehot[0][tuple(slice(a, b) for a, b in zip(start, stop, strict=True))] = 0.0
    onehot[1] = 1.0 - onehot[0]
    touched = full_reference(onehot, inp)[1] > 0  # any weight from a box voxel
    lo, hi = grid_box_to_input(start, stop, grid, inp)
    inside = torch.zeros(inp, dtype=torch.bool)
    inside[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    assert bool(touched.any()) and not bool((touched & ~inside).any())
    for a in range(3):  # and not much more: one grid voxel plus rounding per side
        r = inp[a] / grid[a]
        assert lo[a] >= max(0, (start[a] - 1) * r - 1) and hi[a] <= min(inp[a], (stop[a] + 1) * r + 1)


def test_grid_box_is_clipped_and_exact_on_equal_grids():
    assert grid_box_to_input((0, 2, 3), (4, 5, 6), (4, 8, 8), (4, 8, 8), expand=0) == ((0, 2, 3), (4, 5, 6))
    assert grid_box_to_input((0, 2, 3), (4, 5, 6), (4, 8, 8), (4, 8, 8)) == ((0, 1, 2), (4, 6, 7))


def test_stage_model_boundary_and_full_modes_agree():
    ct = F.avg_pool3d(torch.randn(1, 1, 16, 30, 24, generator=torch.Generator().manual_seed(1)), 7, 1, 3)[0, 0]
    spacing = (2.5, 1.2, 1.7)
    a = tiny_stage_model("organ", seed=5).predict(ct * 3000, spacing, prob_label=1)
    b = tiny_stage_model("organ", seed=5, resample_mode="full").predict(ct * 3000, spacing, prob_label=1)
    assert a.info["resample_mode"] == "boundary" and b.info["resample_mode"] == "full"
    assert (a.labels == b.labels).float().mean() > 0.999
    assert (a.prob.float() - b.prob.float()).abs().mean() < 0.02
    with pytest.raises(ValueError, match="resample_mode"):
        tiny_stage_model("organ", resample_mode="nearest")


def test_model_grid_output_and_box_mapping():
    model = band_stage_model("coarse", {1: 150.0, 3: 450.0})
    ct = np.full((30, 50, 44), -1000.0, dtype=np.float32)
    ct[10:22, 10:30, 5:20] = 150.0  # "liver"
    spacing = (1.2, 0.9, 1.1)
    pred = model.predict(ct, spacing, grid="model", prob_label=1)
    grid = grid_shape(ct.shape, spacing, model.spacing)
    assert pred.grid == "model" and tuple(pred.labels.shape) == grid and pred.prob.shape == grid
    assert pred.input_shape == ct.shape
    assert pred.grid_spacing == pytest.approx([n * s / m for n, s, m in zip(ct.shape, spacing, grid, strict=True)])
    assert "resample_out" in pred.timings and pred.info["grid"] == "model"
    liver = np.argwhere(pred.labels.numpy() == 1)
    lo, hi = pred.box_to_input(liver.min(0), liver.max(0) + 1)
    for a, (s0, s1) in enumerate(((10, 22), (10, 30), (5, 20))):
        assert lo[a] <= s0 and hi[a] >= s1 and s0 - lo[a] <= 4 and hi[a] - s1 <= 4
    on_input = model.predict(ct, spacing)
    assert on_input.grid == "input" and on_input.box_to_input((1, 2, 3), (4, 5, 6)) == ((1, 2, 3), (4, 5, 6))
    with pytest.raises(ValueError, match="grid"):
        model.predict(ct, spacing, grid="both")


def test_cascade_roi_from_model_grid_contains_the_input_grid_roi():
    ct, expected = abdomen_ct()
    volume = Volume(ct, make_geometry(ct.shape, (2.0, 1.5, 1.0)))
    results = {}
    for grid in ("model", "input"):
        models = make_models()
        models.coarse = band_stage_model("coarse")  # a real StageModel: model grid (2, 1.5, 1.5) mm
        options = CascadeOptions(margin_mm=3.0, coarse_grid=grid, roi_at_coarse_spacing=False)
        results[grid] = segment_volume(volume, models, options)
    fine, coarse = results["input"].roi, results["model"].roi
    for a in range(3):
        assert coarse.start[a] <= fine.start[a] and coarse.stop[a] >= fine.stop[a]
        assert fine.start[a] - coarse.start[a] <= 3 and coarse.stop[a] - fine.stop[a] <= 3
    assert coarse != fine  # the model grid is coarser in x: the box did change
    assert np.array_equal(results["model"].labels, expected)
    with pytest.raises(ValueError, match="coarse_grid"):
        CascadeOptions(coarse_grid="full")


def test_cascade_asks_coarse_model_for_its_grid():
    ct, _ = abdomen_ct()
    volume = Volume(ct, make_geometry(ct.shape, (2.0, 1.5, 1.0)))
    models = make_models()
    segment_volume(volume, models)
    assert models.coarse.grids == ["model"] and models.organ.grids == ["input"]


@pytest.mark.slow
def test_speed_of_boundary_vs_full_resampling():
    """Not asserted (shared machines): prints the time of both modes on a CT-like upsampling."""
    logits = region_logits(14, (60, 110, 110), seed=0, cells=12, noise=0.0)
    lut = torch.arange(14, dtype=torch.uint8)
    out = (150, 256, 256)
    times, labels = {}, {}
    for mode in ("full", "boundary", "full", "boundary"):
        t0 = time.perf_counter()
        labels[mode], _ = logits_to_labels(logits, out, lut, chunk_z=8, mode=mode)
        times[mode] = time.perf_counter() - t0
    mixed = 1 - uniform_cells(argmax_channels(logits, 8)).float().mean().item()
    print(f"\nmixed cells {mixed:.1%}: full {times['full']:.2f} s, boundary {times['boundary']:.2f} s, "
          f"ratio {times['full'] / times['boundary']:.1f}x")
    assert (labels["full"] == labels["boundary"]).float().mean() > 0.9999
