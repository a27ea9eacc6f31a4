"""Sliding-window inference over a normalised volume at model resolution, all on one device.

Tiles are laid out on a regular grid per axis (``step`` is the stride as a fraction of the patch),
run through the network in batches, and their logits are accumulated in place. Tile weights are
separable (a product of one 1D profile per axis: flat for "uniform", a bell for "gaussian"), so the
normaliser is an outer product of three 1D sums instead of a second full-size volume.

By default the network's logits are averaged (``average="logits"``); ``average="probabilities"``
averages each tile's softmax instead, as the published FLARE23 HIASBUAA pipeline does (with
uniform weights and float32 sums). The two differ wherever overlapping tiles disagree: the
softmax of a mean of logits is not the mean of the softmaxes. Tile starts follow
:data:`TILE_RULES`; padding of volumes smaller than the patch is centred, ``diff // 2`` before.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

NetFn = Callable[[torch.Tensor], torch.Tensor]

#: How tile start ``i`` of ``n`` is rounded (both half to even): "stride" (ours, nnU-Net's order)
#: ``round(i * ((size - patch) / (n - 1)))``, "span" (the published pipeline's order)
#: ``round(i * (size - patch) / (n - 1))``. They differ by one voxel in rare cases where the exact
#: start is a half and float rounding moves only "stride" off it (size 185, patch 8, step 0.3:
#: start 37 is exactly 88.5, "span" rounds it to 88, "stride" computes 88.50000000000001 -> 89).
TILE_RULES = ("stride", "span")
AVERAGES = ("logits", "probabilities")


def tile_starts(size: int, patch: int, step: float, rule: str = "stride") -> list[int]:
    """Evenly spaced tile start indices covering ``size`` with stride at most ``patch * step``.

    ``n = ceil((size - patch) / (patch * step)) + 1`` tiles, starts rounded by ``rule``
    (:data:`TILE_RULES`).
    """
    if not 0 < step <= 1:
        raise ValueError(f"sliding-window step must be in (0, 1], got {step}")
    if rule not in TILE_RULES:
        raise ValueError(f"tile rule must be one of {', '.join(TILE_RULES)}, got {rule!r}")
    if size <= patch:
        return [0]
    n = math.ceil((size - patch) / (patch * step)) + 1
    if rule == "span":
        return [int(round(i * (size - patch) / (n - 1))) for i in range(n)]
    stride = (size - patch) / (n - 1)
    return [int(round(stride * i)) for i in range(n)]


def axis_profile(patch: int, weighting: str, device: torch.device) -> torch.Tensor:
    """1D tile weight along one axis: ones ("uniform") or a bell with sigma = patch / 8 ("gaussian")."""
    if weighting == "uniform":
        return torch.ones(patch, dtype=torch.float32, device=device)
    if weighting == "gaussian":
        x = torch.arange(patch, dtype=torch.float32, device=device) - (patch - 1) / 2
        sigma = max(patch / 8.0, 1e-3)
        return torch.exp(-0.5 * (x / sigma) ** 2).clamp(min=0.05)
    raise ValueError(f"tile weighting must be 'uniform' or 'gaussian', got {weighting!r}")


def _normaliser(size: int, starts: list[int], profile: torch.Tensor) -> torch.Tensor:
    """Sum of the 1D tile profiles covering each index of one axis."""
    total = torch.zeros(size, dtype=torch.float32, device=profile.device)
    for s in starts:
        total[s : s + profile.numel()] += profile
    return total


def _pad_to_patch(image: torch.Tensor, patch: Sequence[int], value: float) -> tuple[torch.Tensor, tuple]:
    """Pad a [Z, Y, X] volume symmetrically up to ``patch``; return it and the crop undoing it."""
    before = [max(0, p - s) // 2 for s, p in zip(image.shape, patch, strict=True)]
    after = [max(0, p - s) - b for s, p, b in zip(image.shape, patch, before, strict=True)]
    crop = tuple(slice(b, b + s) for b, s in zip(before, image.shape, strict=True))
    if not any(before) and not any(after):
        return image, crop
    pads = [v for b, a in zip(reversed(before), reversed(after), strict=True) for v in (b, a)]
    return F.pad(image, pads, mode="constant", value=value), crop


def _run_tiles(net_fn: NetFn, batch: torch.Tensor, mirror_axes: Sequence[int]) -> torch.Tensor:
    """Network output for a batch of tiles, averaged over all flips of ``mirror_axes`` if any."""
    out = net_fn(batch)
    if not mirror_axes:
        return out
    out = out.float()
    combos = [c for r in range(1, len(mirror_axes) + 1) for c in itertools.combinations(mirror_axes, r)]
    for axes in combos:
        dims = [a + 2 for a in axes]
        out += torch.flip(net_fn(torch.flip(batch, dims)), dims).float()
    return out / (len(combos) + 1)


def _softmax_of(net_fn: NetFn) -> NetFn:
    """``net_fn`` followed by a float32 softmax over the class channel."""

    def probs(batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(net_fn(batch).float(), dim=1)

    return probs


def sliding_window(
    net_fn: NetFn,
    image: torch.Tensor,
    patch: Sequence[int],
    num_classes: int,
    *,
    step: float = 0.5,
    batch_size: int = 1,
    weighting: str = "uniform",
    mirror_axes: Sequence[int] = (),
    acc_dtype: torch.dtype = torch.float32,
    pad_value: float = 0.0,
    acc_device: torch.device | str | None = None,
    average: str = "logits",
    tile_rule: str = "stride",
) -> torch.Tensor:
    """Logits [C, Z, Y, X] of ``net_fn`` over a normalised [Z, Y, X] ``image``.

    ``net_fn`` maps [B, 1, *patch] to [B, C, *patch] on the image's device. The logits (the
    largest allocation: every class over the whole volume) are accumulated on ``acc_device``
    (default: the image's device); the CPU there lets a GPU that ran out of memory still run the
    tiles. Volumes smaller than the patch are padded with ``pad_value`` and cropped back.
    Non-finite outputs are left for the caller to detect.

    ``average="probabilities"`` returns averaged softmax probabilities instead (each tile's, and
    each mirrored tile's, softmax over the classes, computed in float32); pass
    ``acc_dtype=torch.float32`` for float32 tile sums. ``tile_rule``: see :data:`TILE_RULES`.
    """
    if average not in AVERAGES:
        raise ValueError(f"tile average must be one of {', '.join(AVERAGES)}, got {average!r}")
    if average == "probabilities":
        net_fn = _softmax_of(net_fn)
    patch = tuple(int(p) for p in patch)
    device = image.device
    acc_device = torch.device(acc_device) if acc_device is not None else device
    padded, crop = _pad_to_patch(image, patch, pad_value)
    shape = tuple(padded.shape)
    starts = [tile_starts(s, p, step, tile_rule) for s, p in zip(shape, patch, strict=True)]
    profiles = [axis_profile(p, weighting, device) for p in patch]
    tile_w = None
    if weighting != "uniform":
        tile_w = (profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None, :])
    acc = torch.zeros((num_classes, *shape), dtype=acc_dtype, device=acc_device)
    boxes = [tuple(slice(s, s + p) for s, p in zip(corner, patch, strict=True)) for corner in itertools.product(*starts)]
    for i in range(0, len(boxes), max(1, batch_size)):
        group = boxes[i : i + max(1, batch_size)]
        batch = torch.stack([padded[box] for box in group])[:, None]
        out = _run_tiles(net_fn, batch, mirror_axes)
        if out.shape[1] != num_classes:
            raise ValueError(f"network returned {out.shape[1]} channels, expected {num_classes}")
        for j, box in enumerate(group):
            tile = out[j] if tile_w is None else out[j].float() * tile_w
            acc[(slice(None), *box)] += tile.to(acc_device, acc_dtype)
    norm = [_normaliser(s, st, pr).to(acc_device) for s, st, pr in zip(shape, starts, profiles, strict=True)]
    denom = norm[0][:, None, None] * norm[1][None, :, None] * norm[2][None, None, :]
    acc /= denom.to(acc_dtype)
    return acc[(slice(None), *crop)]


def count_tiles(shape: Sequence[int], patch: Sequence[int], step: float) -> int:
    """Number of tiles :func:`sliding_window` runs for a volume of ``shape`` (after padding).

    Both :data:`TILE_RULES` give the same count.
    """
    return math.prod(len(tile_starts(max(s, p), p, step)) for s, p in zip(shape, patch, strict=True))
