"""Fit a renamed state dict onto a built network: aliases filled, keys and shapes checked.

nnU-Net v2 networks register some modules twice (``decoder.encoder`` is the encoder, a conv is
also ``all_modules.0``), so a loadable state dict repeats those tensors under every name. The
fitter groups the network's state-dict entries by the tensor they share and fills each group
from one supplied name. Biases that the source network did not have (nnU-Net v1 transposed
convs and segmentation heads) are filled with zeros, which computes exactly the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch

from c2fseg.convert.errors import ConversionError

#: How many names a mismatch message lists per kind.
SHOW = 5


def mismatch_report(
    missing: Sequence[str],
    unexpected: Sequence[str],
    wrong_shape: Sequence[tuple[str, tuple, tuple]],
) -> str:
    """Indented lines listing the first few missing / unexpected / wrongly shaped keys."""
    lines = []
    for what, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            more = f", ... ({len(keys) - SHOW} more)" if len(keys) > SHOW else ""
            lines.append(f"  {what} {len(keys)} key(s): {', '.join(keys[:SHOW])}{more}")
    if wrong_shape:
        shown = [f"{k} is {tuple(got)}, expected {tuple(want)}" for k, got, want in wrong_shape[:SHOW]]
        more = f"; ... ({len(wrong_shape) - SHOW} more)" if len(wrong_shape) > SHOW else ""
        lines.append(f"  wrong shape in {len(wrong_shape)} key(s): {'; '.join(shown)}{more}")
    return "\n".join(lines)


def _alias_groups(network: torch.nn.Module) -> tuple[dict[str, int], dict[int, list[str]]]:
    """Group the network's state-dict names by the tensor they refer to."""
    groups: dict[int, list[str]] = {}
    for name, value in network.state_dict(keep_vars=True).items():
        groups.setdefault(id(value), []).append(name)
    return {n: g for g, names in groups.items() for n in names}, groups


def fit_state_dict(
    network: torch.nn.Module,
    tensors: Mapping[str, torch.Tensor],
    *,
    source: str,
    expected: str,
    bias_free: Iterable[str] = (),
    fix: str = "",
) -> dict[str, torch.Tensor]:
    """A complete state dict for ``network`` from ``tensors`` (any alias of each entry).

    Several names of one shared tensor may be given (nnU-Net v2 state dicts repeat them) if
    they hold the same values. ``bias_free`` names modules (by any alias) whose source had no bias: their missing bias is
    zero. Raises :class:`ConversionError` naming ``source``, the ``expected`` network and the
    first few missing, unexpected and wrongly shaped keys.
    """
    group_of, groups = _alias_groups(network)
    target = network.state_dict(keep_vars=True)
    out: dict[str, torch.Tensor] = {}
    filled: set[int] = set()
    unexpected, wrong_shape = [], []
    for key, tensor in tensors.items():
        gid = group_of.get(key)
        if gid is None:
            unexpected.append(key)
        elif tuple(tensor.shape) != tuple(target[key].shape):
            wrong_shape.append((key, tuple(tensor.shape), tuple(target[key].shape)))
        elif gid in filled:  # another name of a tensor already given: must be the same values
            if not _same(out[key], tensor):
                unexpected.append(f"{key} (differs from {groups[gid][0]}, the same tensor)")
        else:
            filled.add(gid)
            out.update({alias: tensor for alias in groups[gid]})
    no_bias = set(bias_free)
    missing = []
    for gid, names in groups.items():
        if gid in filled:
            continue
        if _zero_bias_allowed(names, no_bias):
            weight = out.get(names[0].rsplit(".", 1)[0] + ".weight")
            dtype = weight.dtype if weight is not None else torch.float32
            zero = torch.zeros(target[names[0]].shape, dtype=dtype)
            out.update({alias: zero for alias in names})
        else:
            missing.append(names[0])
    if missing or unexpected or wrong_shape:
        raise ConversionError(
            f"{source}: the weights do not fit the network ({expected}):\n"
            f"{mismatch_report(missing, unexpected, wrong_shape)}" + (f"\n{fix}" if fix else "")
        )
    return {name: out[name] for name in target}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or a.is_meta or b.is_meta or torch.equal(a, b)


def _zero_bias_allowed(names: Sequence[str], bias_free: set[str]) -> bool:
    return any(n.endswith(".bias") and n.rsplit(".", 1)[0] in bias_free for n in names)
