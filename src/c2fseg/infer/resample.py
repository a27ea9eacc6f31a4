"""Trilinear resampling between an image grid and a model grid, on the device, in z-chunks.

Grids are related by physical extent, as in nnU-Net's preprocessing: ``n`` voxels of spacing ``s``
become ``round(n * s / t)`` voxels covering the same extent, and voxel centres map with the
``align_corners=False`` rule ``src = (dst + 0.5) * n_src / n_dst - 0.5``. Resampling is done one
slab of output slices at a time (linear along z by hand and bilinear in y/x with ``F.interpolate``,
z first when the output plane is the larger one), so peak memory depends on the chunk size, not on the number of slices, and a chunked run
gives bit-identical results to an unchunked one (every output slice is computed the same way).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F


def grid_shape(
    shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]
) -> tuple[int, ...]:
    """Shape of the grid with ``target_spacing`` that covers the same physical extent."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target_spacing, strict=True))


def linear_taps(n_src: int, n_dst: int, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For destination indices ``start..stop-1``: the two source indices and the weight of the 2nd."""
    dst = torch.arange(start, stop, dtype=torch.float64)
    src = ((dst + 0.5) * (n_src / n_dst) - 0.5).clamp(min=0.0)
    i0 = src.floor().long().clamp(max=n_src - 1)
    i1 = (i0 + 1).clamp(max=n_src - 1)
    w = (src - i0.double()).clamp(0.0, 1.0)
    w = torch.where(i1 == i0, torch.zeros_like(w), w)
    return i0, i1, w.float()


def iter_z_chunks(
    src: torch.Tensor,
    out_shape: Sequence[int],
    chunk_z: int,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    prep: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield ``(z0, z1, chunk)`` with ``chunk`` = ``src`` [C, Z, Y, X] resampled to ``out_shape``.

    ``chunk`` has layout [z1 - z0, C, Yo, Xo] on ``device``. Only the source slices a chunk needs
    are gathered, moved to ``device`` and passed through ``prep`` (e.g. normalisation), so ``src``
    may live on another device (a CPU image feeding a GPU) and is never copied whole.
    """
    if src.dim() != 4:
        raise ValueError(f"expected a [C, Z, Y, X] tensor, got shape {tuple(src.shape)}")
    z_out, y_out, x_out = (int(v) for v in out_shape)
    z_src, y_src, x_src = (int(v) for v in src.shape[1:])
    # Linear interpolation is separable: interpolate along z on whichever plane is smaller.
    z_first = y_src * x_src <= y_out * x_out
    step = max(1, int(chunk_z))
    for z0 in range(0, z_out, step):
        z1 = min(z_out, z0 + step)
        i0, i1, w = linear_taps(z_src, z_out, z0, z1)
        rows = torch.unique(torch.cat([i0, i1]))  # sorted
        slab = src.index_select(1, rows.to(src.device)).to(device, non_blocking=True)
        if prep is not None:
            slab = prep(slab)
        slab = slab.to(dtype).transpose(0, 1)  # [rows, C, Y, X]
        pos0 = torch.searchsorted(rows, i0).to(device)
        pos1 = torch.searchsorted(rows, i1).to(device)
        weight = w.to(device=device, dtype=dtype).view(-1, 1, 1, 1)

        if z_first:
            out = _in_plane(_along_z(slab, pos0, pos1, weight, z_src == z_out), (y_out, x_out))
        else:
            out = _along_z(_in_plane(slab, (y_out, x_out)), pos0, pos1, weight, z_src == z_out)
        yield z0, z1, out


def _along_z(t: torch.Tensor, pos0, pos1, weight, same_grid: bool) -> torch.Tensor:
    """Rows ``pos0`` blended toward rows ``pos1`` by ``weight`` (exact copy on an unchanged grid)."""
    if same_grid:
        return t.index_select(0, pos0)
    return torch.lerp(t.index_select(0, pos0), t.index_select(0, pos1), weight)


def _in_plane(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of [N, C, Y, X] to ``size`` in y/x."""
    if tuple(t.shape[2:]) == tuple(size):
        return t
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)


def resample_image(
    image: torch.Tensor,
    out_shape: Sequence[int],
    *,
    device: torch.device,
    chunk_z: int = 16,
    prep: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Resample a [Z, Y, X] image (any device) to ``out_shape`` on ``device`` as float32.

    ``prep`` runs on each gathered source slab before interpolation (normalise, then resample,
    the order nnU-Net uses).
    """
    out = torch.empty(tuple(int(v) for v in out_shape), dtype=torch.float32, device=device)
    for z0, z1, chunk in iter_z_chunks(image[None], out_shape, chunk_z, device=device, prep=prep):
        out[z0:z1] = chunk[:, 0]
    return out


def logits_to_labels(
    logits: torch.Tensor,
    out_shape: Sequence[int],
    lut: torch.Tensor,
    *,
    chunk_z: int,
    min_prob: float = 0.0,
    prob_channel: int | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resample [C, Zm, Ym, Xm] logits to ``out_shape`` chunk by chunk and take the argmax.

    Returns uint8 labels (``lut[channel]``) and, if ``prob_channel`` is given, that channel's
    softmax probability as float16. Voxels whose winning probability is below ``min_prob`` become
    background (channel 0), which equals zeroing probabilities below it before the argmax.
    Full-resolution float logits for all classes never exist at once.
    """
    device = logits.device
    dtype = dtype or logits.dtype
    labels = torch.empty(tuple(int(v) for v in out_shape), dtype=torch.uint8, device=device)
    prob = None if prob_channel is None else torch.empty_like(labels, dtype=torch.float16)
    lut = lut.to(device=device, dtype=torch.uint8)
    for z0, z1, chunk in iter_z_chunks(logits, out_shape, chunk_z, device=device, dtype=dtype):
        top, idx = chunk.max(dim=1)  # [zc, Y, X]; first maximum on ties, like argmax
        if min_prob > 0.0 or prob is not None:
            lse = torch.logsumexp(chunk.float(), dim=1)
            if min_prob > 0.0:
                idx[torch.exp(top.float() - lse) < min_prob] = 0
            if prob is not None:
                prob[z0:z1] = torch.exp(chunk[:, prob_channel].float() - lse).half()
        labels[z0:z1] = lut[idx]
    return labels, prob


def chunk_rows(num_channels: int, plane_voxels: int, budget_bytes: int, elem_bytes: int = 4) -> int:
    """How many output slices fit a memory budget (about 3 float copies of a slab per slice)."""
    per_slice = max(1, 3 * num_channels * plane_voxels * elem_bytes)
    return max(1, int(budget_bytes // per_slice))
