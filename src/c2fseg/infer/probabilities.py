"""Class probabilities after the sliding window: floor, resize (optionally in z-chunks), argmax.

These are the steps of the published FLARE23 HIASBUAA pipeline, which works on averaged softmax
probabilities rather than logits (our default path resamples logits, see
:func:`c2fseg.infer.resample.logits_to_labels`):

* :func:`floor_probabilities`: every probability below a floor (0.10 there) becomes 0;
* :func:`resize_probabilities` / :func:`resized_probability_labels`: trilinear resize of all
  classes (``align_corners=True`` there) to the output grid, either as one interpolation or as
  independent interpolations of z-chunks (:func:`even_z_splits`), then argmax;
* :func:`probabilities_to_labels`: argmax on the same grid.

The argmax takes the first maximum, so a voxel whose probabilities were all floored to 0 gets
channel 0 (background). All functions take [C, Z, Y, X] tensors on any device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from c2fseg.infer.resample import iter_z_chunks

#: One z-chunk: source slices ``[s0, s1)`` are resized to output slices ``[d0, d1)``.
ZSplit = tuple[int, int, int, int]


def floor_probabilities(probs: torch.Tensor, floor: float) -> torch.Tensor:
    """A copy of ``probs`` with every value below ``floor`` set to 0 (``floor <= 0``: unchanged copy)."""
    if floor <= 0.0:
        return probs.clone()
    return torch.where(probs < floor, torch.zeros((), dtype=probs.dtype, device=probs.device), probs)


def probabilities_to_labels(probs: torch.Tensor, lut: torch.Tensor, *, chunk_z: int = 16) -> torch.Tensor:
    """uint8 ``lut[argmax]`` of [C, Z, Y, X] probabilities on their own grid, slabs of slices at a time."""
    lut = lut.to(device=probs.device, dtype=torch.uint8)
    out = torch.empty(tuple(probs.shape[1:]), dtype=torch.uint8, device=probs.device)
    step = max(1, int(chunk_z))
    for z0 in range(0, out.shape[0], step):
        out[z0 : z0 + step] = lut[probs[:, z0 : z0 + step].argmax(dim=0)]
    return out


def even_z_splits(n_src: int, n_dst: int, chunks: int) -> list[ZSplit]:
    """``chunks`` z-chunks splitting source and output slices alike, first chunks one slice longer.

    Both axes are cut as ``numpy.array_split`` cuts them. One chunk is the whole volume (a
    single interpolation). The published pipeline uses 2, 3 or 4 chunks above 380 slices; how
    it cuts them is not documented, so other rules can be passed as explicit splits instead.
    """
    if chunks < 1 or chunks > min(n_src, n_dst):
        raise ValueError(f"cannot cut {n_src} -> {n_dst} slices into {chunks} z-chunks")
    src, dst = _cuts(n_src, chunks), _cuts(n_dst, chunks)
    return [(src[i], src[i + 1], dst[i], dst[i + 1]) for i in range(chunks)]


#: The published pipeline resizes in one interpolation up to this many output (ROI) slices.
SINGLE_RESIZE_MAX_SLICES = 380


def z_splits_for_roi(
    n_src: int, n_dst: int, *, max_slices: int = SINGLE_RESIZE_MAX_SLICES, chunks: int = 1
) -> list[ZSplit] | None:
    """None (one interpolation) up to ``max_slices`` output slices, else ``chunks`` even splits.

    The published pipeline uses 2, 3 or 4 chunks above 380 slices, chosen by a rule that is not
    documented; ``chunks=1`` (the default) keeps one interpolation there too.
    """
    if n_dst <= max_slices or chunks <= 1:
        return None
    return even_z_splits(n_src, n_dst, chunks)


def _cuts(n: int, chunks: int) -> list[int]:
    """Boundaries 0 = b0 < ... < b_chunks = n of ``numpy.array_split(range(n), chunks)``."""
    size, extra = divmod(n, chunks)
    bounds = [0]
    for i in range(chunks):
        bounds.append(bounds[-1] + size + (1 if i < extra else 0))
    return bounds


def _check_splits(splits: Sequence[ZSplit], n_src: int, n_dst: int) -> list[ZSplit]:
    """The splits as ints, refused unless they tile both z axes in order without gaps."""
    splits = [tuple(int(v) for v in s) for s in splits]
    ok = bool(splits) and splits[0][0] == 0 and splits[0][2] == 0
    ok = ok and splits[-1][1] == n_src and splits[-1][3] == n_dst
    for a, b in zip(splits, splits[1:], strict=False):
        ok = ok and a[1] == b[0] and a[3] == b[2]
    ok = ok and all(s1 > s0 and d1 > d0 for s0, s1, d0, d1 in splits)
    if not ok:
        raise ValueError(f"z splits {splits} do not tile {n_src} source and {n_dst} output slices")
    return splits  # type: ignore[return-value]


def _iter_resized(
    probs: torch.Tensor,
    out_shape: Sequence[int],
    *,
    align_corners: bool,
    z_splits: Sequence[ZSplit] | None,
    chunk_z: int,
):
    """Yield ``(z0, z1, chunk [z1 - z0, C, Y, X])`` of the resized probabilities, chunk by chunk.

    Each z-split is interpolated on its own (its first and last slices are its own corners).
    """
    out_shape = tuple(int(v) for v in out_shape)
    n_src = int(probs.shape[1])
    splits = _check_splits(z_splits or [(0, n_src, 0, out_shape[0])], n_src, out_shape[0])
    for s0, s1, d0, d1 in splits:
        part = probs[:, s0:s1]
        for z0, z1, chunk in iter_z_chunks(part, (d1 - d0, *out_shape[1:]), chunk_z,
                                           device=probs.device, align_corners=align_corners):
            yield d0 + z0, d0 + z1, chunk


def resize_probabilities(
    probs: torch.Tensor,
    out_shape: Sequence[int],
    *,
    align_corners: bool = True,
    z_splits: Sequence[ZSplit] | None = None,
    chunk_z: int = 16,
) -> torch.Tensor:
    """All classes of [C, Z, Y, X] probabilities trilinearly resized to ``out_shape`` (float32).

    ``z_splits`` (see :func:`even_z_splits`) resizes z-chunks independently; None is one
    interpolation of the whole volume. Holds every class at full size: prefer
    :func:`resized_probability_labels` when only the labels are needed.
    """
    out = torch.empty((probs.shape[0], *(int(v) for v in out_shape)), dtype=torch.float32,
                      device=probs.device)
    for z0, z1, chunk in _iter_resized(probs, out_shape, align_corners=align_corners,
                                       z_splits=z_splits, chunk_z=chunk_z):
        out[:, z0:z1] = chunk.transpose(0, 1)
    return out


def resized_probability_labels(
    probs: torch.Tensor,
    out_shape: Sequence[int],
    lut: torch.Tensor,
    *,
    align_corners: bool = True,
    z_splits: Sequence[ZSplit] | None = None,
    chunk_z: int = 16,
) -> torch.Tensor:
    """uint8 ``lut[argmax]`` of the resized probabilities, without holding them all at once.

    Gives the same labels as ``probabilities_to_labels(resize_probabilities(...))``; peak
    memory depends on ``chunk_z``, not on the output size.
    """
    lut = lut.to(device=probs.device, dtype=torch.uint8)
    out = torch.empty(tuple(int(v) for v in out_shape), dtype=torch.uint8, device=probs.device)
    for z0, z1, chunk in _iter_resized(probs, out_shape, align_corners=align_corners,
                                       z_splits=z_splits, chunk_z=chunk_z):
        out[z0:z1] = lut[chunk.argmax(dim=1)]
    return out
