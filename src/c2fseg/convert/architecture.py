"""The network a converted model runs on: nnU-Net v2's ``PlainConvUNet``, described as data.

:class:`UNetArchitecture` holds everything that fixes the shapes and the maths of a 3-D plain
U-Net (stages, features, kernels, strides, convolutions per stage, classes, biases, norm eps,
LeakyReLU slope). It writes the ``architecture`` entry of nnU-Net v2 plans, which
``get_network_from_plans`` (and so c2fseg's stage loader) builds. Networks are built on the
``meta`` device when only keys and shapes are needed, so checking a 30 M-parameter checkpoint
costs no memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

PLAIN_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESENC_UNET = "ResidualEncoderUNet"
_REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]
Triple = tuple[int, int, int]


def _triples(values: Sequence, what: str) -> tuple[Triple, ...]:
    out = []
    for v in values:
        t = tuple(int(a) for a in (v if isinstance(v, Sequence) else (v, v, v)))
        if len(t) != 3:
            raise ValueError(f"{what} must be 3-D (z, y, x) per stage, got {v}")
        out.append(t)
    return tuple(out)  # type: ignore[return-value]


@dataclass(frozen=True)
class UNetArchitecture:
    """A 3-D PlainConvUNet: per-stage features/kernels/strides/convs, classes and constants.

    ``strides[0]`` is the first stage's stride (1 in nnU-Net); stage ``i > 0`` downsamples by
    ``strides[i]`` with its first convolution. ``n_conv_per_stage_decoder`` has one entry per
    decoder stage, lowest resolution first.
    """

    features: tuple[int, ...]
    kernel_sizes: tuple[Triple, ...]
    strides: tuple[Triple, ...]
    n_conv_per_stage: tuple[int, ...]
    n_conv_per_stage_decoder: tuple[int, ...]
    num_classes: int
    input_channels: int = 1
    conv_bias: bool = True
    norm_eps: float = 1e-5
    negative_slope: float = 0.01

    def __post_init__(self) -> None:
        n = len(self.features)
        object.__setattr__(self, "features", tuple(int(f) for f in self.features))
        object.__setattr__(self, "kernel_sizes", _triples(self.kernel_sizes, "kernel_sizes"))
        object.__setattr__(self, "strides", _triples(self.strides, "strides"))
        object.__setattr__(self, "n_conv_per_stage", tuple(int(c) for c in self.n_conv_per_stage))
        object.__setattr__(
            self, "n_conv_per_stage_decoder", tuple(int(c) for c in self.n_conv_per_stage_decoder)
        )
        lengths = (len(self.kernel_sizes), len(self.strides), len(self.n_conv_per_stage))
        if n < 2 or lengths != (n, n, n) or len(self.n_conv_per_stage_decoder) != n - 1:
            raise ValueError(
                f"inconsistent U-Net description: {n} feature entries, kernels/strides/convs "
                f"{lengths}, decoder convs {len(self.n_conv_per_stage_decoder)} (need n, n, n, n-1)"
            )
        if self.num_classes < 1 or self.input_channels < 1:
            raise ValueError(f"need >= 1 class and input channel, got {self.num_classes}, "
                             f"{self.input_channels}")

    @classmethod
    def uniform(
        cls,
        features: Sequence[int],
        strides: Sequence[Sequence[int]],
        num_classes: int,
        *,
        kernel: int = 3,
        n_conv: int = 2,
        **constants,
    ) -> UNetArchitecture:
        """Same kernel and convolution count everywhere (nnU-Net's default 3-D U-Net)."""
        n = len(features)
        return cls(tuple(features), ((kernel,) * 3,) * n, tuple(tuple(s) for s in strides),
                   (n_conv,) * n, (n_conv,) * (n - 1), num_classes, **constants)

    @property
    def n_stages(self) -> int:
        return len(self.features)

    def plans_entry(self) -> dict:
        """The ``architecture`` entry of nnU-Net v2 plans (classes and channels are not in it)."""
        return {
            "network_class_name": PLAIN_UNET,
            "arch_kwargs": {
                "n_stages": self.n_stages,
                "features_per_stage": list(self.features),
                "conv_op": "torch.nn.modules.conv.Conv3d",
                "kernel_sizes": [list(k) for k in self.kernel_sizes],
                "strides": [list(s) for s in self.strides],
                "n_conv_per_stage": list(self.n_conv_per_stage),
                "n_conv_per_stage_decoder": list(self.n_conv_per_stage_decoder),
                "conv_bias": self.conv_bias,
                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                "norm_op_kwargs": {"eps": self.norm_eps, "affine": True},
                "dropout_op": None,
                "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU",
                "nonlin_kwargs": {"negative_slope": self.negative_slope, "inplace": True},
            },
            "_kw_requires_import": list(_REQUIRES_IMPORT),
        }

    def describe(self) -> str:
        """One line naming every shape-relevant setting (for error messages and reports)."""
        return (
            f"PlainConvUNet, {self.n_stages} stages, features {list(self.features)}, strides "
            f"{[list(s) for s in self.strides]}, kernels {_short(self.kernel_sizes)}, convs per "
            f"stage {list(self.n_conv_per_stage)} / decoder {list(self.n_conv_per_stage_decoder)}, "
            f"{self.input_channels} input channel(s), {self.num_classes} classes, conv bias "
            f"{self.conv_bias}"
        )

    def build(self, *, deep_supervision: bool = False, device: str | torch.device = "cpu"
              ) -> torch.nn.Module:
        """The network, built by nnU-Net's own helper from :meth:`plans_entry`."""
        return build_from_plans_entry(self.plans_entry(), self.input_channels, self.num_classes,
                                      deep_supervision=deep_supervision, device=device)


def _short(kernels: Sequence[Triple]) -> str:
    kinds = {tuple(k) for k in kernels}
    return f"all {list(kernels[0])}" if len(kinds) == 1 else str([list(k) for k in kernels])


def build_from_plans_entry(
    entry: dict,
    input_channels: int,
    num_classes: int,
    *,
    deep_supervision: bool = False,
    device: str | torch.device = "cpu",
) -> torch.nn.Module:
    """Build a plans ``architecture`` entry with ``get_network_from_plans``; no init on ``meta``."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    device = torch.device(device)
    with device:
        network = get_network_from_plans(
            entry["network_class_name"], entry["arch_kwargs"], entry["_kw_requires_import"],
            input_channels, num_classes, allow_init=device.type != "meta",
            deep_supervision=deep_supervision,
        )
    return network
