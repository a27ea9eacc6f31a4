"""TruncatedUNet: a PlainConvUNet through decoder stage k and its head, upsampled to input size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from convert_support import SMALL_INPUT, released_arch, small_arch

from c2fseg.convert import UNetArchitecture
from c2fseg.infer.truncated import TruncatedUNet, head_scale


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    arch = small_arch(num_classes=3)
    ds = arch.build(deep_supervision=True).eval()
    plain = arch.build(deep_supervision=False).eval()
    plain.load_state_dict(ds.state_dict())
    return ds, plain


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_each_head_upsampled_matches_the_deep_supervision_output(nets, k):
    ds, plain = nets
    x = torch.randn(*SMALL_INPUT)
    with torch.no_grad():
        heads = ds(x)  # full resolution first
        low = heads[len(heads) - 1 - k]
        want = F.interpolate(low, size=x.shape[2:], mode="trilinear", align_corners=True)
        got = TruncatedUNet(plain, k)(x)
        got_ds = TruncatedUNet(ds, k)(x)  # the wrapped network's own mode does not matter
    assert got.shape == (2, 3, *x.shape[2:])
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert torch.allclose(got_ds, want, atol=1e-5, rtol=0)
    assert tuple(low.shape[2:]) == tuple(s // f for s, f in zip(x.shape[2:], head_scale(plain, k), strict=True))


def test_full_resolution_head_is_the_network_itself(nets):
    _, plain = nets
    x = torch.randn(*SMALL_INPUT)
    with torch.no_grad():
        assert torch.equal(TruncatedUNet(plain, 4)(x), plain(x))
    assert head_scale(plain, 4) == (1, 1, 1)


def test_align_corners_is_honoured(nets):
    _, plain = nets
    x = torch.randn(*SMALL_INPUT)
    with torch.no_grad():
        low = TruncatedUNet(plain, 2).head_logits(x)
        off = TruncatedUNet(plain, 2, align_corners=False)(x)
        on = TruncatedUNet(plain, 2, align_corners=True)(x)
    assert torch.allclose(off, F.interpolate(low, size=x.shape[2:], mode="trilinear",
                                             align_corners=False), atol=1e-6)
    assert (off - on).abs().max() > 1e-3


def test_scales_of_the_published_network_and_of_anisotropic_pooling():
    released = released_arch().build(device="meta")
    assert [head_scale(released, k) for k in range(5)] == [
        (16, 16, 16), (8, 8, 8), (4, 4, 4), (2, 2, 2), (1, 1, 1)]
    aniso = UNetArchitecture.uniform((4, 8, 16, 16), ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)),
                                     2).build(device="meta")
    assert [head_scale(aniso, k) for k in range(3)] == [(2, 4, 4), (1, 2, 2), (1, 1, 1)]


def test_bad_stage_and_bad_network_are_refused(nets):
    _, plain = nets
    with pytest.raises(ValueError, match=r"0\.\.4"):
        TruncatedUNet(plain, 5)
    with pytest.raises(ValueError):
        TruncatedUNet(plain, -1)
    with pytest.raises(TypeError, match="not an nnU-Net v2 U-Net"):
        TruncatedUNet(torch.nn.Conv3d(1, 2, 3), 0)
