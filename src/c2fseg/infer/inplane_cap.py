"""The in-plane size cap of the published FLARE23 HIASBUAA pipeline.

After resampling to a stage's spacing, a volume whose larger in-plane size (y or x) exceeds
``max_inplane`` (360 there) is scaled once more by ``factor = max_inplane / max(y, x)`` on all
three axes, z included, with ``F.interpolate(scale_factor=factor, mode="trilinear",
align_corners=True)``. With the default ``recompute_scale_factor=None`` PyTorch makes each output
size ``floor(size * factor)`` (double precision), so the capped in-plane size can be 359 rather
than 360 (e.g. 571 voxels); with ``align_corners=True`` the interpolation itself depends only on
the input and output sizes, which is why :func:`cap_inplane` can use our chunked resampler.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from c2fseg.infer.resample import resample_image

#: The published in-plane cap, in voxels.
MAX_INPLANE = 360


def inplane_cap_factor(shape: Sequence[int], max_inplane: int = MAX_INPLANE) -> float | None:
    """The scale factor the cap applies to a [Z, Y, X] shape, or None when it is within the cap."""
    largest = max(int(shape[1]), int(shape[2]))
    if largest <= max_inplane:
        return None
    return max_inplane / largest


def capped_grid_shape(shape: Sequence[int], max_inplane: int = MAX_INPLANE) -> tuple[int, int, int]:
    """The [Z, Y, X] shape after the cap: ``floor(size * factor)`` per axis, or ``shape`` itself.

    An axis is never shrunk to 0 voxels (PyTorch refuses such a resize; we keep 1).
    """
    shape = tuple(int(v) for v in shape)
    factor = inplane_cap_factor(shape, max_inplane)
    if factor is None:
        return shape  # type: ignore[return-value]
    return tuple(max(1, math.floor(float(n) * factor)) for n in shape)  # type: ignore[return-value]


def cap_inplane(image: torch.Tensor, max_inplane: int = MAX_INPLANE, *, chunk_z: int = 16) -> torch.Tensor:
    """A [Z, Y, X] volume scaled by the cap (trilinear, ``align_corners=True``), float32, same device.

    Within the cap the volume comes back unchanged (as float32).
    """
    out_shape = capped_grid_shape(image.shape, max_inplane)
    if out_shape == tuple(image.shape):
        return image.float()
    return resample_image(image, out_shape, device=image.device, chunk_z=chunk_z, align_corners=True)
