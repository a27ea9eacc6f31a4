"""Sliding window: tile layout, equality with direct application, step/weighting consistency."""

from __future__ import annotations

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
