"""The published 360-voxel in-plane cap: sizes exactly as PyTorch computes them, and the resize."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from c2fseg.infer.inplane_cap import cap_inplane, capped_grid_shape, inplane_cap_factor


def torch_capped_shape(shape, factor):
    """The output shape of the published call, asked of PyTorch itself."""
    x = torch.zeros(1, 1, *shape)
    return tuple(F.interpolate(x, scale_factor=factor, mode="trilinear", align_corners=True).shape[2:])


def test_within_the_cap_nothing_changes():
    assert inplane_cap_factor((500, 360, 200)) is None
    assert capped_grid_shape((500, 360, 360)) == (500, 360, 360)


@pytest.mark.parametrize("shape", [(120, 400, 300), (64, 361, 361), (80, 280, 571), (33, 642, 500),
                                   (200, 512, 512), (7, 1189, 900)])
def test_capped_sizes_equal_torch_scale_factor_output(shape):
    factor = inplane_cap_factor(shape)
    assert factor == 360 / max(shape[1:])
    out = capped_grid_shape(shape)
    assert out == torch_capped_shape(shape, factor)
    assert out == tuple(math.floor(n * factor) for n in shape)  # z shrinks too


def test_cap_can_give_359_from_float_rounding():
    assert capped_grid_shape((10, 571, 100)) == (6, 359, 63)  # 571 * (360 / 571) < 360 in floats
    assert capped_grid_shape((10, 100, 400)) == (9, 90, 360)


def test_cap_never_makes_an_empty_axis():
    assert capped_grid_shape((1, 800, 20)) == (1, 360, 9)  # torch would refuse: 0 slices


def test_cap_resize_matches_torch_interpolate():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(9, 30, 41, generator=g)
    out = cap_inplane(img, max_inplane=25)
    factor = 25 / 41
    ref = F.interpolate(img[None, None], scale_factor=factor, mode="trilinear", align_corners=True)[0, 0]
    assert out.shape == ref.shape == (5, 18, 25)
    assert torch.allclose(out, ref, atol=1e-5)
    same = torch.randn(4, 10, 12, generator=g)
    assert torch.equal(cap_inplane(same, max_inplane=12), same)
