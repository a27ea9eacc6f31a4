"""Sliding window: tile layout, equality with direct application, step/weighting consistency."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fake_models import tiny_stage_model

from c2fseg.infer.sliding import count_tiles, sliding_window, tile_starts


@pytest.mark.parametrize("size,patch,step", [(100, 32, 0.5), (64, 32, 1.0), (33, 32, 0.5), (40, 16, 0.7), (16, 16, 0.5)])
def test_tile_starts_cover_the_axis_within_the_step(size, patch, step):
    starts = tile_starts(size, patch, step)
    assert starts[0] == 0 and starts[-1] == size - patch
    assert starts == sorted(set(starts))
    assert all(b - a <= patch * step + 1 for a, b in zip(starts, starts[1:], strict=False))
    covered = set().union(*(range(s, s + patch) for s in starts))
    assert covered == set(range(size))


def test_step_one_tiles_without_overlap_when_divisible():
    assert tile_starts(64, 32, 1.0) == [0, 32]
    assert count_tiles((20, 40, 72), (16, 32, 32), 0.5) == 2 * 2 * 4
    with pytest.raises(ValueError, match="step"):
        tile_starts(10, 4, 0.0)


@pytest.fixture(scope="module")
def unet():
    return tiny_stage_model("coarse", seed=1).network


def test_single_tile_equals_direct_network(unet):
    img = torch.randn(16, 32, 32)
    with torch.inference_mode():
        ref = unet(img[None, None])[0]
        out = sliding_window(unet, img, (16, 32, 32), 14, step=0.5)
    assert torch.equal(out, ref)


def test_small_volume_is_padded_and_cropped(unet):
    img = torch.randn(10, 30, 21)
    with torch.inference_mode():
        out = sliding_window(unet, img, (16, 32, 32), 14, pad_value=-3.0)
        padded = torch.full((16, 32, 32), -3.0)
        padded[3:13, 1:31, 5:26] = img  # symmetric padding
        ref = unet(padded[None, None])[0, :, 3:13, 1:31, 5:26]
    assert out.shape == (14, 10, 30, 21)
    assert torch.allclose(out, ref, atol=1e-6)


def test_batched_tiles_match_single_tiles(unet):
    img = torch.randn(20, 40, 40)
    with torch.inference_mode():
        one = sliding_window(unet, img, (16, 32, 32), 14, batch_size=1)
        many = sliding_window(unet, img, (16, 32, 32), 14, batch_size=5)
    assert torch.allclose(one, many, atol=1e-5)


def _pointwise_net(channels=5, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Conv3d(1, channels, 1).eval()


@pytest.mark.parametrize("step,weighting", [(1.0, "uniform"), (0.5, "uniform"), (0.5, "gaussian"), (0.3, "gaussian")])
def test_pointwise_network_gives_direct_result_for_any_tiling(step, weighting):
    net = _pointwise_net()
    img = torch.randn(20, 40, 50)
    with torch.inference_mode():
        ref = net(img[None, None])[0]
        out = sliding_window(net, img, (16, 32, 32), 5, step=step, weighting=weighting, batch_size=2)
    assert torch.allclose(out, ref, atol=1e-5)


def test_mirroring_averages_flipped_predictions():
    net = _pointwise_net()
    img = torch.randn(20, 40, 40)
    with torch.inference_mode():
        ref = net(img[None, None])[0]
        out = sliding_window(net, img, (16, 32, 32), 5, mirror_axes=(0, 1, 2))
    assert torch.allclose(out, ref, atol=1e-5)  # a pointwise net is flip-equivariant

    calls = []

    def counting(x):
        calls.append(x.shape[0])
        return net(x)

    with torch.inference_mode():
        sliding_window(counting, img[:16, :32, :32], (16, 32, 32), 5, mirror_axes=(0, 2))
    assert len(calls) == 4  # identity + 3 flip combinations


def test_wrong_channel_count_is_an_error():
    with torch.inference_mode(), pytest.raises(ValueError, match="channels"):
        sliding_window(_pointwise_net(3), torch.randn(16, 32, 32), (16, 32, 32), 5)


def test_fp16_accumulation_matches_fp32():
    """The CUDA fp16 path accumulates in half precision; check it on CPU against fp32."""
    net = _pointwise_net()
    img = torch.randn(20, 40, 50)
    with torch.inference_mode():
        ref = sliding_window(net, img, (16, 32, 32), 5, step=0.5)
        half = sliding_window(lambda x: net(x).half(), img, (16, 32, 32), 5, step=0.5,
                              acc_dtype=torch.float16)
    assert half.dtype == torch.float16
    assert torch.allclose(half.float(), ref, atol=2e-2, rtol=1e-2)


# -- the published pipeline's tile rule and probability averaging ---------------------------------


@pytest.mark.parametrize("rule", ["stride", "span"])
def test_tile_starts_round_half_to_even(rule):
    # 13 - 8 = 5 over 2 gaps: the middle start is exactly 2.5 -> 2 (half up would give 3)
    assert tile_starts(13, 8, 0.5, rule) == [0, 2, 5]
    # 21 - 8 = 13 over 4 gaps: 0, 3.25, 6.5 -> 6 (half up: 7), 9.75, 13
    assert tile_starts(21, 8, 0.5, rule) == [0, 3, 6, 10, 13]
    # 23 - 8 = 15 over 4 gaps: 0, 3.75, 7.5 -> 8, 11.25, 15
    assert tile_starts(23, 8, 0.5, rule) == [0, 4, 8, 11, 15]


def test_span_rule_rounds_exact_halves_where_stride_rule_drifts():
    stride, span = tile_starts(185, 8, 0.3, "stride"), tile_starts(185, 8, 0.3, "span")
    assert len(stride) == len(span) == 75
    assert span[37] == 88 and stride[37] == 89  # 37 * 177 / 74 = 88.5 exactly
    assert [a for i, a in enumerate(span) if i != 37] == [a for i, a in enumerate(stride) if i != 37]


@pytest.mark.parametrize("patch,step", [(96, 0.5), (160, 0.5), (192, 1.0), (64, 1.0)])
def test_span_rule_is_the_published_formula(patch, step):
    for size in list(range(patch, patch + 400, 7)) + [1105, 1111, 1871]:
        n = math.ceil((size - patch) / (patch * step)) + 1
        expected = [0] if n == 1 else np.round(np.arange(n) * (size - patch) / (n - 1)).astype(int).tolist()
        assert tile_starts(size, patch, step, "span") == expected, size


def test_unknown_tile_rule_or_average_is_refused():
    with pytest.raises(ValueError, match="tile rule"):
        tile_starts(40, 16, 0.5, "nnunet")
    with pytest.raises(ValueError, match="average"):
        sliding_window(_pointwise_net(), torch.randn(16, 32, 32), (16, 32, 32), 5, average="median")


def test_default_padding_is_zero_and_centred():
    seen = []

    def record(batch):
        seen.append(batch.clone())
        return batch.repeat(1, 2, 1, 1, 1)

    img = torch.ones(5, 8, 8)
    sliding_window(record, img, (8, 8, 11), 2)  # z and x: 3 voxels of padding, 1 before, 2 after
    tile = seen[0][0, 0]
    assert tile.shape == (8, 8, 11) and float(tile.sum()) == img.numel()  # padded with 0
    assert (tile[1:6, :, 1:9] == 1).all()


def test_probability_average_of_pointwise_net_is_its_softmax():
    net = _pointwise_net()
    img = torch.randn(20, 40, 50)
    with torch.inference_mode():
        ref = torch.softmax(net(img[None, None])[0], 0)
        out = sliding_window(net, img, (16, 32, 32), 5, step=0.5, average="probabilities")
    assert torch.allclose(out, ref, atol=1e-6)


def _tile_dependent_net(channels=3):
    """Logits that depend on the tile's mean: overlapping tiles disagree."""
    net = _pointwise_net(channels, seed=3)
    offsets = torch.linspace(-4, 4, channels).view(1, -1, 1, 1, 1)

    def fn(batch):
        return net(batch) + 6 * batch.mean(dim=(2, 3, 4), keepdim=True) * offsets

    return fn


def test_probabilities_are_averaged_uniformly_not_the_logits():
    fn = _tile_dependent_net()
    g = torch.Generator().manual_seed(0)
    img = torch.randn(24, 8, 8, generator=g)
    img[:12] += 1.0  # the two tiles see different means
    with torch.inference_mode():
        out = sliding_window(fn, img, (16, 8, 8), 3, step=0.5, average="probabilities")
        logit_avg = sliding_window(fn, img, (16, 8, 8), 3, step=0.5)
        p0 = torch.softmax(fn(img[None, None, 0:16])[0], 0)  # tile starts 0 and 8
        p1 = torch.softmax(fn(img[None, None, 8:24])[0], 0)
    expected = torch.empty(3, 24, 8, 8)
    expected[:, :8], expected[:, 16:] = p0[:, :8], p1[:, 8:]
    expected[:, 8:16] = (p0[:, 8:] + p1[:, :8]) / 2
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(out.sum(0), torch.ones(24, 8, 8), atol=1e-5)
    assert not torch.allclose(torch.softmax(logit_avg, 0)[:, 8:16], expected[:, 8:16], atol=1e-3)


def test_probability_sums_stay_float32_with_fp16_network_output():
    net = _pointwise_net()
    img = torch.randn(20, 40, 50)
    with torch.inference_mode():
        ref = sliding_window(net, img, (16, 32, 32), 5, average="probabilities")
        half = sliding_window(lambda x: net(x).half(), img, (16, 32, 32), 5, average="probabilities",
                              acc_dtype=torch.float32)
    assert half.dtype == torch.float32
    assert torch.allclose(half, ref, atol=5e-3)
