"""Device-side resampling: identity, agreement with torch trilinear, physical alignment, chunking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from c2fseg.infer.resample import (
    grid_shape,
    iter_z_chunks,
    legacy_nearest_indices,
    linear_taps,
    logits_to_labels,
    resample_image,
    resize_labels_nearest,
)

CPU = torch.device("cpu")


def test_grid_shape_keeps_physical_extent():
    assert grid_shape((100, 512, 512), (2.5, 0.8, 0.8), (2.5, 1.6, 1.6)) == (100, 256, 256)
    assert grid_shape((3, 10, 10), (1.0, 1.0, 1.0), (5.0, 5.0, 5.0)) == (1, 2, 2)  # never 0


def test_same_grid_is_exact_identity():
    img = torch.randn(7, 11, 13)
    out = resample_image(img, img.shape, device=CPU, chunk_z=3)
    assert torch.equal(out, img)


@pytest.mark.parametrize("out_shape", [(9, 15, 8), (4, 6, 20), (7, 11, 13)])
def test_matches_torch_trilinear(out_shape):
    img = torch.randn(7, 11, 13)
    ref = F.interpolate(img[None, None], size=out_shape, mode="trilinear", align_corners=False)[0, 0]
    out = resample_image(img, out_shape, device=CPU, chunk_z=2)
    assert torch.allclose(out, ref, atol=1e-5)


def _centre_mm(vol: np.ndarray, spacing) -> np.ndarray:
    """Intensity-weighted centre in mm, voxel i covering [i*s, (i+1)*s)."""
    idx = np.indices(vol.shape).reshape(3, -1).astype(float)
    w = vol.reshape(-1)
    return np.array([((idx[a] + 0.5) * spacing[a] * w).sum() / w.sum() for a in range(3)])


def test_shifted_blob_stays_at_same_physical_place():
    spacing, target = (2.5, 0.8, 0.9), (1.5, 1.5, 1.5)
    shape = (40, 90, 80)
    grid = np.indices(shape).astype(float)
    centre_mm = np.array([53.0, 31.7, 40.2])  # deliberately off voxel centres
    d2 = sum((((grid[a] + 0.5) * spacing[a]) - centre_mm[a]) ** 2 for a in range(3))
    blob = np.exp(-d2 / (2 * 6.0**2)).astype(np.float32)
    out_shape = grid_shape(shape, spacing, target)
    out = resample_image(torch.from_numpy(blob), out_shape, device=CPU, chunk_z=5).numpy()
    effective = [n * s / m for n, s, m in zip(shape, spacing, out_shape, strict=True)]
    assert np.allclose(_centre_mm(blob, spacing), centre_mm, atol=0.05)
    assert np.allclose(_centre_mm(out, effective), centre_mm, atol=0.3)
    back = resample_image(torch.from_numpy(out), shape, device=CPU, chunk_z=7).numpy()
    assert np.allclose(_centre_mm(back, spacing), centre_mm, atol=0.3)


def test_prep_runs_on_source_before_interpolation():
    img = torch.tensor([[[0.0, 4000.0]]]).repeat(2, 1, 1)  # [2, 1, 2]
    out = resample_image(img, (2, 1, 3), device=CPU, prep=lambda x: x.clamp(-1, 1))
    # clip first, then interpolate: the middle sample is 0.5 (clipping afterwards would give 1)
    assert torch.allclose(out[0, 0], torch.tensor([0.0, 0.5, 1.0]))


def _smooth_logits(c=6, shape=(6, 10, 12), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(c, *shape, generator=g)
    return F.avg_pool3d(x[None], 3, 1, 1)[0] * 4


@pytest.mark.parametrize("chunk_z", [1, 3, 7, 64])
def test_chunked_labels_equal_unchunked(chunk_z):
    logits = _smooth_logits()
    lut = torch.tensor([0, 3, 5, 7, 9, 14], dtype=torch.uint8)
    out_shape = (23, 17, 29)
    ref_l, ref_p = logits_to_labels(logits, out_shape, lut, chunk_z=out_shape[0], prob_channel=2, min_prob=0.3)
    lab, prob = logits_to_labels(logits, out_shape, lut, chunk_z=chunk_z, prob_channel=2, min_prob=0.3)
    assert lab.dtype == torch.uint8 and prob.dtype == torch.float16
    assert torch.equal(lab, ref_l) and torch.equal(prob, ref_p)
    assert set(torch.unique(lab).tolist()) <= set(lut.tolist())


@pytest.mark.parametrize("mode", ["full", "boundary"])
def test_labels_match_full_trilinear_then_argmax(mode):
    logits = _smooth_logits()
    lut = torch.arange(6, dtype=torch.uint8)
    out_shape = (15, 21, 9)
    full = F.interpolate(logits[None], size=out_shape, mode="trilinear", align_corners=False)[0]
    lab, prob = logits_to_labels(logits, out_shape, lut, chunk_z=4, prob_channel=4, mode=mode)
    assert (lab == full.argmax(0).to(torch.uint8)).float().mean() > 0.999
    if mode == "full":  # softmax of the interpolated logits
        assert torch.allclose(prob.float(), torch.softmax(full, 0)[4], atol=2e-3)
    else:  # the model-grid probability, interpolated
        model_prob = torch.softmax(logits, 0)[4]
        ref = F.interpolate(model_prob[None, None], size=out_shape, mode="trilinear", align_corners=False)[0, 0]
        assert torch.allclose(prob.float(), ref, atol=2e-3)
        assert not torch.allclose(prob.float(), torch.softmax(full, 0)[4], atol=2e-3)  # they do differ


def test_unknown_resample_mode_is_refused():
    with pytest.raises(ValueError, match="resample mode"):
        logits_to_labels(_smooth_logits(), (2, 2, 2), torch.arange(6, dtype=torch.uint8), chunk_z=1, mode="fast")


def test_min_prob_makes_unsure_voxels_background():
    logits = torch.zeros(15, 2, 2, 2)  # uniform: every probability is 1/15 < 0.1
    logits[3, 0] = 5.0  # confident in the first slice
    lut = torch.arange(15, dtype=torch.uint8)
    lab, _ = logits_to_labels(logits, (2, 2, 2), lut, chunk_z=1, min_prob=0.1)
    assert torch.equal(lab[0], torch.full((2, 2), 3, dtype=torch.uint8))
    assert torch.equal(lab[1], torch.zeros(2, 2, dtype=torch.uint8))
    logits[5, 1] = 0.01  # argmax 5 without the threshold
    lab, _ = logits_to_labels(logits, (2, 2, 2), lut, chunk_z=1)
    assert torch.equal(lab[1], torch.full((2, 2), 5, dtype=torch.uint8))


def test_chunks_cover_output_once():
    src = torch.randn(2, 5, 4, 4)
    seen = []
    for z0, z1, chunk in iter_z_chunks(src, (12, 3, 3), 5, device=CPU):
        assert chunk.shape == (z1 - z0, 2, 3, 3)
        seen.extend(range(z0, z1))
    assert seen == list(range(12))


def test_half_precision_logits_give_nearly_the_same_labels():
    """The CUDA path resamples fp16 logits; labels may differ only at near-ties."""
    logits = _smooth_logits(seed=3)
    lut = torch.arange(6, dtype=torch.uint8)
    ref, _ = logits_to_labels(logits, (15, 21, 9), lut, chunk_z=4)
    half, prob = logits_to_labels(logits.half(), (15, 21, 9), lut, chunk_z=4, prob_channel=1)
    assert prob.dtype == torch.float16
    assert (half == ref).float().mean() > 0.99


# -- align_corners=True (the published pipeline's interpolation) ------------------------------


@pytest.mark.parametrize("out_shape", [(9, 15, 8), (4, 6, 20), (7, 11, 13), (1, 3, 1)])
def test_align_corners_matches_torch_trilinear(out_shape):
    img = torch.randn(7, 11, 13)
    ref = F.interpolate(img[None, None], size=out_shape, mode="trilinear", align_corners=True)[0, 0]
    out = resample_image(img, out_shape, device=CPU, chunk_z=2, align_corners=True)
    assert torch.allclose(out, ref, atol=1e-5)
    if out_shape != img.shape:  # a different rule from our default
        ours = resample_image(img, out_shape, device=CPU, chunk_z=2)
        assert not torch.allclose(ours, ref, atol=1e-3)


def test_align_corners_samples_the_end_voxels():
    """9 -> 5 along z: the corners coincide, samples 0, 2, 4, 6, 8 (ours: 0.4, 2.2, 4, 5.8, 7.6)."""
    ramp = torch.arange(9, dtype=torch.float32)[:, None, None].repeat(1, 2, 3)
    out = resample_image(ramp, (5, 2, 3), device=CPU, align_corners=True)
    assert torch.allclose(out[:, 0, 0], torch.tensor([0.0, 2.0, 4.0, 6.0, 8.0]), atol=1e-6)
    ours = resample_image(ramp, (5, 2, 3), device=CPU)
    assert torch.allclose(ours[:, 0, 0], torch.tensor([0.4, 2.2, 4.0, 5.8, 7.6]), atol=1e-5)
    assert torch.equal(resample_image(ramp, (5, 2, 3), device=CPU, align_corners=False), ours)


def test_linear_taps_align_corners():
    i0, i1, w = linear_taps(5, 3, 0, 3, align_corners=True)  # positions 0, 2, 4
    assert i0.tolist() == [0, 2, 4] and i1.tolist() == [1, 3, 4]
    assert w.tolist() == [0.0, 0.0, 0.0]
    i0, i1, w = linear_taps(3, 5, 0, 5, align_corners=True)  # positions 0, .5, 1, 1.5, 2
    assert i0.tolist() == [0, 0, 1, 1, 2] and torch.allclose(w, torch.tensor([0, 0.5, 0, 0.5, 0]))
    i0, _, w = linear_taps(4, 1, 0, 1, align_corners=True)  # one output: the first voxel
    assert i0.tolist() == [0] and w.tolist() == [0.0]


@pytest.mark.parametrize("mode", ["full", "boundary"])
def test_align_corners_labels_match_torch_then_argmax(mode):
    logits = _smooth_logits()
    lut = torch.arange(6, dtype=torch.uint8)
    out_shape = (15, 21, 9)
    full = F.interpolate(logits[None], size=out_shape, mode="trilinear", align_corners=True)[0]
    lab, prob = logits_to_labels(logits, out_shape, lut, chunk_z=4, prob_channel=4, mode=mode,
                                 align_corners=True)
    assert (lab == full.argmax(0).to(torch.uint8)).float().mean() > 0.999
    ours = F.interpolate(logits[None], size=out_shape, mode="trilinear", align_corners=False)[0]
    assert (lab != ours.argmax(0).to(torch.uint8)).any()
    if mode == "boundary":
        model_prob = torch.softmax(logits, 0)[4]
        ref = F.interpolate(model_prob[None, None], size=out_shape, mode="trilinear", align_corners=True)
        assert torch.allclose(prob.float(), ref[0, 0], atol=2e-3)


# -- PyTorch's legacy 'nearest' label resize ----------------------------------------------------


@pytest.mark.parametrize("n_in", [1, 2, 3, 7, 31, 64, 97, 160])
def test_legacy_nearest_indices_match_torch(n_in):
    for n_out in [1, 2, 5, 13, 64, 82, 94, 110, 255, 512]:
        x = torch.arange(n_in, dtype=torch.float32)[None, None, :, None, None]
        ref = F.interpolate(x, size=(n_out, 1, 1), mode="nearest")[0, 0, :, 0, 0].long().numpy()
        assert np.array_equal(legacy_nearest_indices(n_in, n_out), ref), (n_in, n_out)


def test_legacy_nearest_is_floor_not_centre_nor_corner_rounding():
    # 4 -> 6: legacy floor(i * 4/6); nearest-exact would give [0, 1, 1, 2, 3, 3], align-corners
    # rounding round(i * 3/5) would give [0, 1, 1, 2, 2, 3]
    assert legacy_nearest_indices(4, 6).tolist() == [0, 0, 1, 2, 2, 3]
    # float32 as in PyTorch: output 41 of 2 -> 82 reads source 0, not the exact floor(41*2/82) = 1
    assert legacy_nearest_indices(2, 82)[41] == 0


def test_resize_labels_nearest_matches_torch_for_arrays_and_tensors():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 15, (5, 9, 7), generator=g, dtype=torch.uint8)
    out_shape = (13, 4, 82)
    ref = F.interpolate(labels[None, None], size=out_shape, mode="nearest")[0, 0]
    out_t = resize_labels_nearest(labels, out_shape)
    out_n = resize_labels_nearest(labels.numpy(), out_shape)
    assert out_t.dtype == torch.uint8 and torch.equal(out_t, ref)
    assert out_n.dtype == np.uint8 and np.array_equal(out_n, ref.numpy())
    with pytest.raises(ValueError, match="shape"):
        resize_labels_nearest(labels, (3, 3))
