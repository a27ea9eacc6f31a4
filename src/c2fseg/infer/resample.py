"""Trilinear resampling between an image grid and a model grid, on the device, in z-chunks.

Grids are related by physical extent, as in nnU-Net's preprocessing: ``n`` voxels of spacing ``s``
become ``round(n * s / t)`` voxels covering the same extent, and voxel centres map with the
``align_corners=False`` rule ``src = (dst + 0.5) * n_src / n_dst - 0.5``. Resampling is done one
slab of output slices at a time (linear along z by hand and bilinear in y/x with ``F.interpolate``,
z first when the output plane is the larger one), so peak memory depends on the chunk size, not on the number of slices, and a chunked run
gives bit-identical results to an unchunked one (every output slice is computed the same way).

Logits become labels with :func:`logits_to_labels`: by default ("boundary" mode) the argmax is
taken on the model grid and copied to every output voxel whose model-grid cell has one label at
all 8 corners (exact for trilinear interpolation, see there); only the voxels near label
boundaries get all classes interpolated. :func:`grid_box_to_input` maps a box found on a
model grid back to input voxels conservatively.

Every resampling function takes ``align_corners`` (default False, the rule above). With True the
first and last voxel centres of both grids coincide, ``src = dst * (n_src - 1) / (n_dst - 1)``,
as ``F.interpolate(..., align_corners=True)`` does (the published FLARE23 HIASBUAA pipeline
resamples images and probabilities that way). :func:`resize_labels_nearest` is PyTorch's legacy
``nearest`` label resize (that pipeline's coarse-labels-to-input step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def grid_shape(
    shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]
) -> tuple[int, ...]:
    """Shape of the grid with ``target_spacing`` that covers the same physical extent."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target_spacing, strict=True))


def linear_taps(
    n_src: int, n_dst: int, start: int, stop: int, *, align_corners: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For destination indices ``start..stop-1``: the two source indices and the weight of the 2nd.

    Source positions follow ``align_corners`` as in ``F.interpolate`` (module docstring).
    """
    dst = torch.arange(start, stop, dtype=torch.float64)
    if align_corners:
        scale = (n_src - 1) / (n_dst - 1) if n_dst > 1 else 0.0
        src = (dst * scale).clamp(0.0, float(n_src - 1))
    else:
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
    align_corners: bool = False,
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
        i0, i1, w = linear_taps(z_src, z_out, z0, z1, align_corners=align_corners)
        rows = torch.unique(torch.cat([i0, i1]))  # sorted
        slab = src.index_select(1, rows.to(src.device)).to(device, non_blocking=True)
        if prep is not None:
            slab = prep(slab)
        slab = slab.to(dtype).transpose(0, 1)  # [rows, C, Y, X]
        pos0 = torch.searchsorted(rows, i0).to(device)
        pos1 = torch.searchsorted(rows, i1).to(device)
        weight = w.to(device=device, dtype=dtype).view(-1, 1, 1, 1)

        plane, same_z, ac = (y_out, x_out), z_src == z_out, align_corners
        if z_first:
            out = _in_plane(_along_z(slab, pos0, pos1, weight, same_z), plane, ac)
        else:
            out = _along_z(_in_plane(slab, plane, ac), pos0, pos1, weight, same_z)
        yield z0, z1, out


def _along_z(t: torch.Tensor, pos0, pos1, weight, same_grid: bool) -> torch.Tensor:
    """Rows ``pos0`` blended toward rows ``pos1`` by ``weight`` (exact copy on an unchanged grid)."""
    # Advanced indexing: index_select along dim 0 of a 4D tensor is ~15x slower on CPU (torch 2.13).
    if same_grid:
        return t[pos0]
    return torch.lerp(t[pos0], t[pos1], weight)


def _in_plane(t: torch.Tensor, size: tuple[int, int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of [N, C, Y, X] to ``size`` in y/x (identity on the same size)."""
    if tuple(t.shape[2:]) == tuple(size):
        return t
    return F.interpolate(t, size=size, mode="bilinear", align_corners=align_corners)


def resample_image(
    image: torch.Tensor,
    out_shape: Sequence[int],
    *,
    device: torch.device,
    chunk_z: int = 16,
    prep: Callable[[torch.Tensor], torch.Tensor] | None = None,
    align_corners: bool = False,
) -> torch.Tensor:
    """Resample a [Z, Y, X] image (any device) to ``out_shape`` on ``device`` as float32.

    ``prep`` runs on each gathered source slab before interpolation (normalise, then resample,
    the order nnU-Net uses).
    """
    out = torch.empty(tuple(int(v) for v in out_shape), dtype=torch.float32, device=device)
    chunks = iter_z_chunks(image[None], out_shape, chunk_z, device=device, prep=prep,
                           align_corners=align_corners)
    for z0, z1, chunk in chunks:
        out[z0:z1] = chunk[:, 0]
    return out


RESAMPLE_MODES = ("boundary", "full")
#: Marks a model-grid cell whose 8 corners disagree (never a label or channel index).
_MIXED = 255


def logits_to_labels(
    logits: torch.Tensor,
    out_shape: Sequence[int],
    lut: torch.Tensor,
    *,
    chunk_z: int,
    min_prob: float = 0.0,
    prob_channel: int | None = None,
    dtype: torch.dtype | None = None,
    mode: str = "boundary",
    align_corners: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Labels (``lut[argmax]``, uint8) of [C, Zm, Ym, Xm] logits trilinearly resampled to ``out_shape``.

    ``mode="full"`` resamples every class's logits chunk by chunk and takes the argmax (the
    reference). ``mode="boundary"`` gives the same labels (up to exact ties and float rounding)
    doing the all-class interpolation only where it can matter: the interpolated logit vector
    at an output voxel is a convex combination of the vectors at the 8 corners of its model-grid
    cell, so when all 8 corners share the argmax ``c`` (``l_c >= l_k`` at each corner), ``c`` is
    also the argmax of the combination. Such voxels just copy the cell's label (a cheap uint8
    gather); only voxels in cells whose corners disagree are interpolated.

    ``min_prob > 0`` (voxels whose winning probability is below it become background, which
    equals zeroing probabilities below it before the argmax) breaks that argument, so it always
    takes the full path. With ``prob_channel`` that channel's softmax probability comes back as
    float16: in full mode the softmax of the interpolated logits; in boundary mode the
    trilinear interpolation of the model-grid probability (one channel instead of all; the two
    differ slightly where the probability changes fast). Full-resolution float logits for all
    classes never exist at once; peak memory depends on ``chunk_z``, not on the slice count.
    ``align_corners`` picks the interpolation grid rule (module docstring) for every path.
    """
    if mode not in RESAMPLE_MODES:
        raise ValueError(f"resample mode must be one of {', '.join(RESAMPLE_MODES)}, got {mode!r}")
    if mode == "full" or min_prob > 0.0 or logits.shape[0] >= _MIXED:
        return _full_labels(logits, out_shape, lut, chunk_z=chunk_z, min_prob=min_prob,
                            prob_channel=prob_channel, dtype=dtype, align_corners=align_corners)
    labels = boundary_labels(logits, out_shape, lut, chunk_z=chunk_z, align_corners=align_corners)
    prob = None
    if prob_channel is not None:
        prob = resample_probability(logits, out_shape, prob_channel, chunk_z=chunk_z,
                                    align_corners=align_corners)
    return labels, prob


def _full_labels(
    logits, out_shape, lut, *, chunk_z, min_prob, prob_channel, dtype, align_corners=False
):
    """All-class trilinear interpolation per chunk, then argmax (and softmax where asked)."""
    device = logits.device
    dtype = dtype or logits.dtype
    labels = torch.empty(tuple(int(v) for v in out_shape), dtype=torch.uint8, device=device)
    prob = None if prob_channel is None else torch.empty_like(labels, dtype=torch.float16)
    lut = lut.to(device=device, dtype=torch.uint8)
    chunks = iter_z_chunks(logits, out_shape, chunk_z, device=device, dtype=dtype,
                           align_corners=align_corners)
    for z0, z1, chunk in chunks:
        top, idx = chunk.max(dim=1)  # [zc, Y, X]; first maximum on ties, like argmax
        if min_prob > 0.0 or prob is not None:
            lse = torch.logsumexp(chunk.float(), dim=1)
            if min_prob > 0.0:
                idx[torch.exp(top.float() - lse) < min_prob] = 0
            if prob is not None:
                prob[z0:z1] = torch.exp(chunk[:, prob_channel].float() - lse).half()
        labels[z0:z1] = lut[idx]
    return labels, prob


def model_grid_labels(
    logits: torch.Tensor,
    lut: torch.Tensor,
    *,
    chunk_z: int,
    min_prob: float = 0.0,
    prob_channel: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Labels (and one channel's float16 probability) of [C, Z, Y, X] logits on their own grid."""
    return _full_labels(logits, logits.shape[1:], lut, chunk_z=chunk_z, min_prob=min_prob,
                        prob_channel=prob_channel, dtype=None)


def argmax_channels(logits: torch.Tensor, chunk_z: int) -> torch.Tensor:
    """uint8 argmax over the channels of [C, Z, Y, X] logits, a slab of slices at a time."""
    out = torch.empty(tuple(logits.shape[1:]), dtype=torch.uint8, device=logits.device)
    step = max(1, int(chunk_z))
    for z0 in range(0, out.shape[0], step):
        out[z0 : z0 + step] = logits[:, z0 : z0 + step].max(dim=0).indices.to(torch.uint8)
    return out


def uniform_cells(codes: torch.Tensor) -> torch.Tensor:
    """True where all 8 corners of the cell ``[z:z+2, y:y+2, x:x+2]`` hold the same code.

    The grid is replicate-padded at the upper border, matching the clamp of the upper
    interpolation neighbour to the last voxel. Min == max over a separable 2x2x2 window.
    """
    lo = hi = codes
    for dim in range(3):
        lo = torch.minimum(lo, _shift_up(lo, dim))
        hi = torch.maximum(hi, _shift_up(hi, dim))
    return lo == hi


def _shift_up(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t`` shifted by one toward lower indices along ``dim``, the last slice repeated."""
    n = t.shape[dim]
    return torch.cat([t.narrow(dim, 1, n - 1), t.narrow(dim, n - 1, 1)], dim=dim)


#: Output slices with more mixed voxels than this fraction are interpolated densely (cheaper).
DENSE_FRACTION = 0.25


def boundary_labels(
    logits: torch.Tensor,
    out_shape: Sequence[int],
    lut: torch.Tensor,
    *,
    chunk_z: int,
    dense_fraction: float = DENSE_FRACTION,
    align_corners: bool = False,
) -> torch.Tensor:
    """Trilinear-resample-then-argmax labels, interpolating logits only in mixed cells.

    See :func:`logits_to_labels` for why this is exact. Per output chunk: gather the cell codes
    (the cell's label, or ``_MIXED``) with separable per-axis index arrays, then interpolate all
    classes at the mixed voxels only (8 corner gathers of C values each). Output slices whose lower
    model slice has more than ``dense_fraction`` mixed cells are interpolated in-plane as a
    whole, as the full path does, ``chunk_z`` slices at a time (cheaper than gathering nearly
    everything). Every decision is per output slice, so any chunking gives the same labels.
    The argument holds for either ``align_corners`` rule (both interpolate within one cell).
    """
    ac = align_corners
    device = logits.device
    n_src = tuple(int(v) for v in logits.shape[1:])
    n_out = tuple(int(v) for v in out_shape)
    lut = lut.to(device=device, dtype=torch.uint8)
    channel = argmax_channels(logits, chunk_z)
    codes = torch.where(uniform_cells(channel), lut[channel.long()], torch.full_like(channel, _MIXED))
    del channel
    row_mixed = (codes == _MIXED).flatten(1).float().mean(dim=1)  # per model slice
    taps_y = [t.to(device) for t in linear_taps(n_src[1], n_out[1], 0, n_out[1], align_corners=ac)]
    taps_x = [t.to(device) for t in linear_taps(n_src[2], n_out[2], 0, n_out[2], align_corners=ac)]
    labels = torch.empty(n_out, dtype=torch.uint8, device=device)
    same_z = n_src[0] == n_out[0]
    flat, strides = _flat_channels(logits)
    # chunk_z slices is what the full path's float work may use: dense slices go by chunk_z, mixed
    # voxels by half a chunk's voxel count (~300 bytes each vs 12 per class and voxel), and the
    # uint8 label copying by 8 * chunk_z slices (few, large operations: much faster on CPU).
    dense_step = max(1, int(chunk_z))
    sparse_batch = max(1, dense_step * n_out[1] * n_out[2] // 2)
    step = 8 * dense_step
    for z0 in range(0, n_out[0], step):
        z1 = min(n_out[0], z0 + step)
        taps_z = [t.to(device) for t in linear_taps(n_src[0], n_out[0], z0, z1, align_corners=ac)]
        out = labels[z0:z1]
        out.copy_(codes[taps_z[0]].index_select(1, taps_y[0]).index_select(2, taps_x[0]))
        dense = (row_mixed[taps_z[0]] > dense_fraction).nonzero(as_tuple=True)[0]
        for i in range(0, dense.numel(), dense_step):  # as the full path, chunk_z slices at a time
            at = dense[i : i + dense_step]
            planes = _planes_along_z(logits, [t[at] for t in taps_z], same_z)
            # first max on ties, like argmax
            out[at] = lut[_in_plane(planes, n_out[1:], ac).max(dim=1).indices]
        mixed = out == _MIXED
        if bool(mixed.any()):
            where = mixed.nonzero(as_tuple=True)
            for i in range(0, where[0].numel(), sparse_batch):
                part = tuple(w[i : i + sparse_batch] for w in where)
                _fill_sparse(out, part, flat, strides, taps_z, taps_y, taps_x, lut)
    return labels


def _planes_along_z(logits: torch.Tensor, taps_z: Sequence[torch.Tensor], same_grid: bool) -> torch.Tensor:
    """All-class float32 logits at the output slices' z, still on the model plane: [zc, C, Ym, Xm]."""
    rows = torch.unique(torch.cat([taps_z[0], taps_z[1]]))  # sorted source slices used
    slab = logits.index_select(1, rows).transpose(0, 1).float()
    pos0, pos1 = torch.searchsorted(rows, taps_z[0]), torch.searchsorted(rows, taps_z[1])
    return _along_z(slab, pos0, pos1, taps_z[2].view(-1, 1, 1, 1), same_grid)


def _flat_channels(logits: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """A [C, L] view of [C, Z, Y, X] logits (any strides) and the z, y, x strides into its rows."""
    extent = 1 + sum((n - 1) * st for n, st in zip(logits.shape[1:], logits.stride()[1:], strict=True))
    view = logits.as_strided((logits.shape[0], extent), (logits.stride(0), 1))
    return view, tuple(int(st) for st in logits.stride()[1:])  # type: ignore[return-value]


def _fill_sparse(out, where, flat, strides, taps_z, taps_y, taps_x, lut) -> None:
    """Voxels ``where`` (chunk z, y, x indices) from trilinear interpolation of all classes.

    ``flat``/``strides`` come from :func:`_flat_channels`; ``taps_*`` are (lower index, upper
    index, upper weight) per output index of each axis (z for this chunk only). Each of the 8
    cell corners is one gather of C values per voxel straight from the model-grid logits.
    """
    offsets, weights = [], []
    for taps, idx, st in zip((taps_z, taps_y, taps_x), where, strides, strict=True):
        offsets.append((taps[0][idx] * st, taps[1][idx] * st))
        weights.append(taps[2][idx])
    (z0, z1), (y0, y1), (x0, x1) = offsets
    wz, wy, wx = weights

    def corner(oz: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor) -> torch.Tensor:
        return flat.index_select(1, oz + oy + ox).float()  # [C, K]

    def along_x(oz: torch.Tensor, oy: torch.Tensor) -> torch.Tensor:
        return torch.lerp(corner(oz, oy, x0), corner(oz, oy, x1), wx)

    def along_y(oz: torch.Tensor) -> torch.Tensor:
        return torch.lerp(along_x(oz, y0), along_x(oz, y1), wy)

    values = torch.lerp(along_y(z0), along_y(z1), wz)
    out[where] = lut[values.max(dim=0).indices]


def resample_probability(
    logits: torch.Tensor,
    out_shape: Sequence[int],
    channel: int,
    *,
    chunk_z: int,
    align_corners: bool = False,
) -> torch.Tensor:
    """float16 softmax probability of one channel on the model grid, resampled to ``out_shape``.

    One channel is interpolated instead of all. The softmax is taken on the model grid in slabs
    of a fixed number of slices whatever ``chunk_z``: vectorised exp rounds the tail of a buffer
    differently, so a chunk-dependent slab would make the result depend on the chunking.
    """
    n_src = logits.shape[1:]
    src = torch.empty((1, *n_src), dtype=torch.float32, device=logits.device)
    step = 8
    for z0 in range(0, n_src[0], step):
        part = logits[:, z0 : z0 + step].float()
        src[0, z0 : z0 + step] = torch.exp(part[channel] - torch.logsumexp(part, dim=0))
    prob = torch.empty(tuple(int(v) for v in out_shape), dtype=torch.float16, device=logits.device)
    chunks = iter_z_chunks(src, out_shape, chunk_z, device=logits.device,
                           align_corners=align_corners)
    for z0, z1, chunk in chunks:
        prob[z0:z1] = chunk[:, 0].half()
    return prob


def grid_box_to_input(
    start: Sequence[int],
    stop: Sequence[int],
    grid_shape_zyx: Sequence[int],
    input_shape: Sequence[int],
    expand: int = 1,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Input-grid voxel box (start, stop exclusive) covering a box of a coarser/finer grid.

    Both grids cover the same physical extent (voxel ``j`` of an ``m``-voxel grid spans
    ``[j, j + 1) * n / m`` input voxels). The box is first widened by ``expand`` grid voxels per
    side; its physical extent is then rounded outward to whole input voxels. With ``expand=1``
    this covers every input voxel whose trilinear interpolation uses a voxel of the box.
    """
    lo, hi = [], []
    for a, b, m, n in zip(start, stop, grid_shape_zyx, input_shape, strict=True):
        a, b, m, n = max(0, int(a) - expand), min(int(m), int(b) + expand), int(m), int(n)
        lo.append(max(0, (a * n) // m))
        hi.append(min(n, -((-b * n) // m)))
    return tuple(lo), tuple(hi)


def chunk_rows(num_channels: int, plane_voxels: int, budget_bytes: int, elem_bytes: int = 4) -> int:
    """How many output slices fit a memory budget (about 3 float copies of a slab per slice)."""
    per_slice = max(1, 3 * num_channels * plane_voxels * elem_bytes)
    return max(1, int(budget_bytes // per_slice))


def legacy_nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each of ``n_out`` outputs under PyTorch's legacy ``nearest`` rule.

    ``floor(i * scale)`` with ``scale = n_in / n_out``, both in float32 as PyTorch computes them
    (so a few indices are one lower than the exact ``floor(i * n_in / n_out)``, e.g. output 41 of
    2 -> 82), clamped to the last source index.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"nearest resize needs positive sizes, got {n_in} -> {n_out}")
    scale = np.float32(n_in) / np.float32(n_out)
    idx = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def resize_labels_nearest(labels, out_shape: Sequence[int]):
    """A [Z, Y, X] label map (numpy or torch, any device) resized to ``out_shape`` by legacy nearest.

    Equal to ``F.interpolate(labels[None, None], size=out_shape, mode="nearest")`` without a
    float copy of the output: three index gathers. Returns the same kind and dtype as ``labels``.
    """
    out_shape = tuple(int(v) for v in out_shape)
    if len(out_shape) != labels.ndim:
        raise ValueError(f"output shape {out_shape} does not match a {labels.ndim}-D label map")
    idx = [legacy_nearest_indices(int(n), m) for n, m in zip(labels.shape, out_shape, strict=True)]
    if isinstance(labels, torch.Tensor):
        out = labels
        for axis, ix in enumerate(idx):
            out = out.index_select(axis, torch.from_numpy(ix).to(labels.device))
        return out
    return np.asarray(labels)[np.ix_(*idx)]
