"""A U-Net evaluated only down to one decoder stage: a cheap, coarse segmentation from any model.

nnU-Net v2 U-Nets (``PlainConvUNet``, also ``ResidualEncoderUNet``) keep a segmentation head
after every decoder stage (``decoder.seg_layers``, built even without deep supervision).
:class:`TruncatedUNet` runs the encoder, the decoder up to stage ``k`` and head ``k``, and
upsamples those low-resolution logits by the pooling still left (trilinear) to the input size.
The published FLARE23 coarse model is this with ``k = 2`` of a 6-stage network (1/4 resolution,
upsampled x4 with ``align_corners=True``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _parts(network: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    network = getattr(network, "_orig_mod", network)  # torch.compile wrapper
    encoder, decoder = getattr(network, "encoder", None), getattr(network, "decoder", None)
    if encoder is None or not all(hasattr(decoder, a) for a in ("stages", "transpconvs", "seg_layers")):
        raise TypeError(f"{type(network).__name__} is not an nnU-Net v2 U-Net (encoder + UNetDecoder "
                        "with stages, transpconvs, seg_layers)")
    return encoder, decoder


def head_scale(network: torch.nn.Module, decoder_stage: int) -> tuple[int, ...]:
    """Per-axis factor between the input and the output of decoder stage ``decoder_stage``.

    Decoder stage ``k`` works at the resolution of encoder stage ``n - 2 - k``, i.e. the input
    downsampled by the product of the strides of encoder stages ``0 .. n - 2 - k``.
    """
    encoder, decoder = _parts(network)
    n_decoder = len(decoder.stages)
    if not 0 <= decoder_stage < n_decoder:
        raise ValueError(f"decoder stage must be in 0..{n_decoder - 1} for this {n_decoder + 1}-stage "
                         f"network ({n_decoder - 1} = full resolution), got {decoder_stage}")
    strides = [tuple(int(a) for a in s) for s in encoder.strides]  # per stage, per axis
    used = strides[: len(strides) - 1 - decoder_stage]
    return tuple(math.prod(s[axis] for s in used) for axis in range(len(strides[0])))


class TruncatedUNet(torch.nn.Module):
    """``network`` through decoder stage ``decoder_stage`` and its head, logits at input size.

    The wrapped network is used as is (built with or without deep supervision; its later
    decoder stages are simply not run). ``align_corners`` and ``mode`` are passed to
    :func:`torch.nn.functional.interpolate`; no interpolation happens when the head already
    works at full resolution.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        decoder_stage: int,
        *,
        align_corners: bool = True,
        mode: str = "trilinear",
    ) -> None:
        super().__init__()
        self.scale = head_scale(network, decoder_stage)
        self.network = network
        self.decoder_stage = int(decoder_stage)
        self.align_corners = bool(align_corners)
        self.mode = mode

    def head_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of head ``decoder_stage`` at its own (low) resolution."""
        encoder, decoder = _parts(self.network)
        skips = encoder(x)
        h = skips[-1]
        for s in range(self.decoder_stage + 1):
            h = decoder.transpconvs[s](h)
            h = decoder.stages[s](torch.cat((h, skips[-(s + 2)]), dim=1))
        return decoder.seg_layers[self.decoder_stage](h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head_logits(x)
        if all(f == 1 for f in self.scale):
            return logits
        corners = self.align_corners if self.mode in ("linear", "bilinear", "bicubic", "trilinear") else None
        return F.interpolate(logits, size=tuple(x.shape[2:]), mode=self.mode, align_corners=corners)
