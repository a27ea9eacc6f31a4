"""nnU-Net v1 ``Generic_UNet`` state dicts: their key layout, what they describe, and the renaming.

A v1 trainer's network (``nnUNetTrainerV2``: convolutional pooling and upsampling, InstanceNorm,
LeakyReLU, deep supervision) names its parameters

- ``conv_blocks_context.{i}.blocks.{j}.{conv,instnorm}.*`` for encoder stage ``i`` (``j``: conv),
- ``conv_blocks_context.{L}.{0,1}.blocks.{j}.*`` for the bottleneck ``L`` (two conv stacks),
- ``tu.{u}.weight`` for the transposed conv of decoder stage ``u`` (lowest resolution first),
- ``conv_blocks_localization.{u}.{0,1}.blocks.{j}.*`` for its convs (two stacks again),
- ``seg_outputs.{u}.weight`` for its 1x1x1 segmentation head.

nnU-Net v2's ``PlainConvUNet`` computes the same thing with other names
(``encoder.stages.{i}.0.convs.{c}.{conv,norm}.*``, ``decoder.transpconvs.{u}``,
``decoder.stages.{u}.convs.{c}``, ``decoder.seg_layers.{u}``); the two-stack blocks become one
list of convs. This module reads the architecture off a v1 state dict, generates the key layout
a v1 network of a given architecture has, and renames v1 keys to v2 keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from c2fseg.convert.architecture import UNetArchitecture
from c2fseg.convert.errors import ConversionError
from c2fseg.convert.fit import fit_state_dict, mismatch_report

_CONV = r"\.(?P<layer>conv|instnorm)\.(?P<param>weight|bias)$"
_ENCODER = re.compile(r"^conv_blocks_context\.(?P<stage>\d+)\.blocks\.(?P<conv>\d+)" + _CONV)
_BOTTLENECK = re.compile(r"^conv_blocks_context\.(?P<stage>\d+)\.(?P<part>[01])\.blocks\.(?P<conv>\d+)"
                         + _CONV)
_DECODER = re.compile(r"^conv_blocks_localization\.(?P<stage>\d+)\.(?P<part>[01])\.blocks\.(?P<conv>\d+)"
                      + _CONV)
_UPSAMPLE = re.compile(r"^tu\.(?P<stage>\d+)\.(?P<param>weight|bias)$")
_HEAD = re.compile(r"^seg_outputs\.(?P<stage>\d+)\.(?P<param>weight|bias)$")
_LAYER = {"conv": "conv", "instnorm": "norm"}
#: Kernel sizes whose padding v1 (1 for 3, else 0) and v2 ((k - 1) // 2) agree on.
_SAME_PADDING = (1, 3)

FIX = ("Fix: use the nnU-Net v1 checkpoint this stage was trained as (re-download it if the file "
       "is damaged), or give the architecture it was trained with.")


@dataclass(frozen=True)
class V1Network:
    """A v1 ``Generic_UNet``: its architecture plus the two biases v1 leaves out by default."""

    arch: UNetArchitecture
    upsample_bias: bool = False  # ``tu.*.bias`` (v1 always builds them without)
    head_bias: bool = False  # ``seg_outputs.*.bias`` (only the *_biasInSegOutput trainers)


# ---------------------------------------------------------------------------------------------
# The layout a v1 network has
# ---------------------------------------------------------------------------------------------


def _conv_entries(prefix: str, cin: int, cout: int, kernel, bias: bool) -> dict[str, tuple]:
    entries = {f"{prefix}.conv.weight": (cout, cin, *kernel)}
    if bias:
        entries[f"{prefix}.conv.bias"] = (cout,)
    entries[f"{prefix}.instnorm.weight"] = (cout,)
    entries[f"{prefix}.instnorm.bias"] = (cout,)
    return entries


def _two_stacks(prefix: str, n_conv: int, cin: int, cout: int, kernel, bias: bool) -> dict:
    """v1 bottleneck/decoder blocks: ``n_conv - 1`` convs in stack 0, the last one in stack 1."""
    if n_conv < 2:
        raise ConversionError(f"nnU-Net v1 has at least 2 convs in the bottleneck and decoder "
                              f"stages, not {n_conv}")
    entries: dict[str, tuple] = {}
    for j in range(n_conv - 1):
        entries |= _conv_entries(f"{prefix}.0.blocks.{j}", cin if j == 0 else cout, cout, kernel, bias)
    return entries | _conv_entries(f"{prefix}.1.blocks.0", cout, cout, kernel, bias)


def v1_layout(net: V1Network) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the v1 ``Generic_UNet`` with this architecture, with its shape."""
    a = net.arch
    last = a.n_stages - 1
    f, k, bias = a.features, a.kernel_sizes, a.conv_bias
    layout: dict[str, tuple[int, ...]] = {}
    cin = a.input_channels
    for i in range(last):
        for j in range(a.n_conv_per_stage[i]):
            layout |= _conv_entries(f"conv_blocks_context.{i}.blocks.{j}", cin if j == 0 else f[i],
                                    f[i], k[i], bias)
        cin = f[i]
    layout |= _two_stacks(f"conv_blocks_context.{last}", a.n_conv_per_stage[last], cin, f[last],
                          k[last], bias)
    for u in range(last):
        below, skip = f[last - u], f[last - 1 - u]
        layout[f"tu.{u}.weight"] = (below, skip, *a.strides[last - u])
        if net.upsample_bias:
            layout[f"tu.{u}.bias"] = (skip,)
        # v1 gives decoder stage u the kernel of stage last - u (PlainConvUNet: of last - 1 - u);
        # the two agree because only networks with one kernel size everywhere are converted.
        layout |= _two_stacks(f"conv_blocks_localization.{u}", a.n_conv_per_stage_decoder[u],
                              2 * skip, skip, k[last - u], bias)
    for u in range(last):
        layout[f"seg_outputs.{u}.weight"] = (a.num_classes, f[last - 1 - u], 1, 1, 1)
        if net.head_bias:
            layout[f"seg_outputs.{u}.bias"] = (a.num_classes,)
    return layout


# ---------------------------------------------------------------------------------------------
# Reading the architecture off a state dict
# ---------------------------------------------------------------------------------------------


def _count(state: Mapping[str, torch.Tensor], pattern: re.Pattern, **fixed: str) -> int:
    """Number of distinct conv indices among keys matching ``pattern`` with the given groups."""
    found = set()
    for key in state:
        m = pattern.match(key)
        if m and all(m.group(g) == v for g, v in fixed.items()):
            found.add(int(m.group("conv")))
    return len(found)


def _indices(state: Mapping[str, torch.Tensor], pattern: re.Pattern) -> list[int]:
    return sorted({int(m.group("stage")) for k in state if (m := pattern.match(k))})


def _unsupported(state: Mapping[str, torch.Tensor]) -> list[str]:
    patterns = (_ENCODER, _BOTTLENECK, _DECODER, _UPSAMPLE, _HEAD)
    return [k for k in state if not any(p.match(k) for p in patterns)]


def _check_form(state: Mapping[str, torch.Tensor], source: str) -> tuple[int, int]:
    """(number of stages, conv weight dimensions); refuses what cannot be a supported Generic_UNet."""
    if not state:
        raise ConversionError(f"{source}: the checkpoint's state dict is empty")
    odd = _unsupported(state)
    if odd:
        norm_stats = [k for k in odd if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        why = ("it uses batch norm (running statistics); only InstanceNorm networks are converted"
               if norm_stats else "these keys are not part of nnU-Net v1's Generic_UNet")
        raise ConversionError(f"{source}: cannot convert this network: {why}: "
                              f"{', '.join(odd[:5])}{' ...' if len(odd) > 5 else ''}")
    encoder, bottleneck = _indices(state, _ENCODER), _indices(state, _BOTTLENECK)
    if len(bottleneck) != 1 or encoder != list(range(len(encoder))) or bottleneck[0] != len(encoder):
        raise ConversionError(f"{source}: not a Generic_UNet layout (encoder stages {encoder}, "
                              f"bottleneck {bottleneck})")
    ndim = state["conv_blocks_context.0.blocks.0.conv.weight"].dim() - 2
    if ndim != 3:
        raise ConversionError(f"{source}: a {ndim}-D network; c2fseg converts 3-D networks only "
                              "(import the model's 3d_fullres configuration)")
    if not any(k.endswith("instnorm.weight") for k in state):
        raise ConversionError(f"{source}: a network without normalisation layers; only "
                              "InstanceNorm networks are converted")
    return len(encoder) + 1, ndim


def _stage_conv(state, prefix: str) -> torch.Tensor:
    return state[f"{prefix}.conv.weight"]


def infer_v1_network(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> V1Network:
    """The architecture a v1 Generic_UNet state dict describes, read off its keys and shapes.

    Strides come from the transposed convs (their kernel is the stride they undo). Raises
    :class:`ConversionError` for what PlainConvUNet cannot compute identically: 2-D networks,
    batch or no normalisation, kernels that differ between stages (v1 gives each decoder stage
    the kernel of the stage below it, v2 that of its skip stage), kernels other than 1 or 3.
    """
    n, _ = _check_form(state, source)
    last = n - 1
    features, kernels, convs = [], [], []
    for i in range(last):
        count = _count(state, _ENCODER, stage=str(i))
        w = _stage_conv(state, f"conv_blocks_context.{i}.blocks.0")
        features.append(w.shape[0])
        kernels.append(tuple(w.shape[2:]))
        convs.append(count)
    w = _stage_conv(state, f"conv_blocks_context.{last}.0.blocks.0")
    features.append(w.shape[0])
    kernels.append(tuple(w.shape[2:]))
    convs.append(_count(state, _BOTTLENECK, part="0") + _count(state, _BOTTLENECK, part="1"))
    decoder = [_count(state, _DECODER, stage=str(u), part="0")
               + _count(state, _DECODER, stage=str(u), part="1") for u in range(last)]
    strides = [(1, 1, 1)] + [None] * last
    for u in range(last):
        key = f"tu.{u}.weight"
        if key not in state:
            raise ConversionError(f"{source}: {key} is missing; not a complete Generic_UNet")
        strides[last - u] = tuple(state[key].shape[2:])
    if "seg_outputs.0.weight" not in state:
        raise ConversionError(f"{source}: seg_outputs.0.weight is missing; not a complete Generic_UNet")
    _check_kernels(kernels, source)
    arch = UNetArchitecture(
        tuple(features), tuple(kernels), tuple(strides), tuple(convs), tuple(decoder),
        num_classes=state["seg_outputs.0.weight"].shape[0],
        input_channels=_stage_conv(state, "conv_blocks_context.0.blocks.0").shape[1],
        conv_bias=any(k.endswith(".conv.bias") for k in state),
    )
    net = V1Network(arch, upsample_bias="tu.0.bias" in state, head_bias="seg_outputs.0.bias" in state)
    check_v1_layout(state, net, source)
    return net


def _check_kernels(kernels: list[tuple], source: str) -> None:
    if len(set(kernels)) != 1:
        raise ConversionError(
            f"{source}: the stages use different kernel sizes {[list(k) for k in kernels]}; nnU-Net "
            "v1's Generic_UNet gives each decoder stage the kernel of the stage below it, nnU-Net "
            "v2's PlainConvUNet the kernel of its skip stage, so only networks with one kernel size "
            "everywhere convert exactly (this one cannot be run by c2fseg)"
        )
    if any(k not in _SAME_PADDING for k in kernels[0]):
        raise ConversionError(f"{source}: kernel size {list(kernels[0])}: nnU-Net v1 and v2 pad "
                              "kernels other than 1 and 3 differently; cannot convert exactly")


def check_v1_layout(
    state: Mapping[str, torch.Tensor],
    expected: V1Network,
    source: str = "checkpoint",
    found: V1Network | None = None,
) -> None:
    """Raise :class:`ConversionError` unless ``state`` has exactly the keys and shapes of ``expected``."""
    layout = v1_layout(expected)
    missing = [k for k in layout if k not in state]
    unexpected = [k for k in state if k not in layout]
    wrong = [(k, tuple(state[k].shape), layout[k]) for k in layout
             if k in state and tuple(state[k].shape) != layout[k]]
    if missing or unexpected or wrong:
        holds = f"\nThe file holds: {found.arch.describe()}." if found is not None else ""
        raise ConversionError(
            f"{source}: the weights do not match the expected network "
            f"({expected.arch.describe()}):\n{mismatch_report(missing, unexpected, wrong)}{holds}\n{FIX}"
        )


# ---------------------------------------------------------------------------------------------
# Renaming
# ---------------------------------------------------------------------------------------------


def v2_name(key: str, net: V1Network) -> str:
    """The PlainConvUNet name of a v1 Generic_UNet key (``KeyError`` for keys it does not have)."""
    if m := _ENCODER.match(key):
        return (f"encoder.stages.{m['stage']}.0.convs.{m['conv']}.{_LAYER[m['layer']]}."
                f"{m['param']}")
    if m := _BOTTLENECK.match(key):
        conv = int(m["conv"]) + (net.arch.n_conv_per_stage[-1] - 1) * int(m["part"])
        return f"encoder.stages.{m['stage']}.0.convs.{conv}.{_LAYER[m['layer']]}.{m['param']}"
    if m := _DECODER.match(key):
        u = int(m["stage"])
        conv = int(m["conv"]) + (net.arch.n_conv_per_stage_decoder[u] - 1) * int(m["part"])
        return f"decoder.stages.{u}.convs.{conv}.{_LAYER[m['layer']]}.{m['param']}"
    if m := _UPSAMPLE.match(key):
        return f"decoder.transpconvs.{m['stage']}.{m['param']}"
    if m := _HEAD.match(key):
        return f"decoder.seg_layers.{m['stage']}.{m['param']}"
    raise KeyError(f"{key} is not a Generic_UNet parameter name")


def rename_v1_state_dict(
    state: Mapping[str, torch.Tensor], net: V1Network
) -> tuple[dict[str, torch.Tensor], set[str]]:
    """(tensors under PlainConvUNet names, v2 modules whose v1 counterpart has no bias)."""
    renamed = {v2_name(k, net): v for k, v in state.items()}
    modules = {name.rsplit(".", 1)[0] for name in renamed if name.endswith(".weight")}
    bias_free = {m for m in modules if not m.endswith(".norm") and f"{m}.bias" not in renamed}
    return renamed, bias_free


def convert_v1_state_dict(
    state: Mapping[str, torch.Tensor],
    expected: UNetArchitecture | None = None,
    *,
    source: str = "checkpoint",
) -> tuple[UNetArchitecture, dict[str, torch.Tensor]]:
    """(architecture, PlainConvUNet state dict) for a v1 Generic_UNet state dict.

    With ``expected`` the file must hold exactly that network (else the error lists missing,
    unexpected and wrongly shaped keys and what the file holds); without, the architecture is
    read off the state dict. The result loads with ``strict=True`` into ``arch.build()`` with or
    without deep supervision.
    """
    if expected is not None:
        found = _try_infer(state)
        check_v1_layout(state, V1Network(expected, "tu.0.bias" in state,
                                         "seg_outputs.0.bias" in state), source, found)
    net = infer_v1_network(state, source)
    arch = expected or net.arch
    renamed, bias_free = rename_v1_state_dict(state, net)
    network = arch.build(deep_supervision=True, device="meta")
    return arch, fit_state_dict(network, renamed, source=source, expected=arch.describe(),
                                bias_free=bias_free, fix=FIX)


def _try_infer(state: Mapping[str, torch.Tensor]) -> V1Network | None:
    try:
        return infer_v1_network(state)
    except (ConversionError, KeyError, IndexError):
        return None
