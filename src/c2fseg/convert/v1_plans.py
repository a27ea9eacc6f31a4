"""nnU-Net v1 plans (``model_final_checkpoint.model.pkl`` or ``plans.pkl``), read without running code.

A v1 trainer writes next to each checkpoint a pickle ``{'init': trainer args, 'name': trainer
class, 'class': ..., 'plans': plans}``; the trainer folder's ``plans.pkl`` is the bare plans.
The plans hold per-resolution-stage settings under ``plans_per_stage`` (spacing
``current_spacing``, ``patch_size``, ``pool_op_kernel_sizes``, ``conv_kernel_sizes``), the
intensity statistics under ``dataset_properties['intensityproperties']``, the normalisation
scheme per modality, the axis order (``transpose_forward``), ``num_classes`` (without
background), ``base_num_features`` and ``conv_per_stage``. Values are numpy arrays and
scalars, so the unpickler allows numpy's array/scalar reconstructors and plain containers only.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

from c2fseg.convert.architecture import UNetArchitecture
from c2fseg.convert.errors import ConversionError

#: What a v1 plans pickle may reference: numpy arrays, dtypes and scalars, ordered dicts.
_ALLOWED = {
    ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex"),
    ("_codecs", "encode"),  # how protocol-0/1 pickles store bytes
}
#: v1 Generic_UNet caps the features per stage at this many in 3-D.
V1_MAX_FEATURES_3D = 320
#: Trainer name patterns whose networks a state dict cannot reveal (other nonlinearity or norm).
_REFUSED_TRAINERS = (
    (r"Cascade", "a cascade's full-resolution stage (3d_cascade_fullres): it takes the low-"
                 "resolution stage's segmentation as extra input"),
    (r"_ReLU|GeLU|Mish|LReLU_slope", "its nonlinearity is not LeakyReLU(0.01)"),
    (r"conv[lL]?ReLUIN", "it applies the nonlinearity before the normalisation"),
    (r"_BN|_GN|FRN|NoNormalization", "it does not use InstanceNorm"),
    (r"Resenc|ResencUNet", "it uses a residual encoder"),
    (r"[Rr]egion", "it is trained on regions (overlapping labels), not one channel per label"),
)


class _PlansUnpickler(pickle.Unpickler):
    """Unpickles numpy values and containers only; anything else is refused, never imported."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED and not (module == "numpy.dtypes" and name.endswith("DType")):
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not numpy data)")
        if module.startswith("numpy.core"):
            try:  # numpy 2 moved numpy.core to numpy._core (the old name warns)
                return getattr(importlib.import_module("numpy._core" + module[10:]), name)
            except ImportError:  # pragma: no cover - numpy 1
                pass
        return getattr(importlib.import_module(module), name)


def load_v1_pickle(path: str | os.PathLike) -> dict:
    """The dict in a v1 plans pickle (numpy values only); ConversionError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: nnU-Net v1 plans not found; nnU-Net v1 writes them next "
                              "to the checkpoint as <checkpoint>.model.pkl (copy that file too)")
    try:
        with open(path, "rb") as fh:
            content = _PlansUnpickler(fh).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError) as exc:
        raise ConversionError(f"{path}: cannot read the nnU-Net v1 plans ({exc}); the file is "
                              "damaged or not an nnU-Net v1 plans pickle") from None
    if not isinstance(content, dict):
        raise ConversionError(f"{path}: holds a {type(content).__name__}, not nnU-Net v1 plans")
    return content


@dataclass(frozen=True)
class V1Plans:
    """What inference needs from a v1 plans pickle, in the plans' (model) axis order."""

    spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    ct_statistics: dict[str, float]
    transpose_forward: tuple[int, int, int]
    transpose_backward: tuple[int, int, int]
    architecture: UNetArchitecture
    labels: tuple[int, ...]  # the label value of each network channel (0 = background)
    trainer: str | None
    stage: int
    num_stages: int
    median_shape: tuple[int, ...] | None
    batch_size: int | None


def v1_features(base: int, n_stages: int, cap: int = V1_MAX_FEATURES_3D) -> tuple[int, ...]:
    """Features per stage as v1 plans them: ``base`` doubled per stage, capped at ``cap``."""
    features, f = [], int(base)
    for _ in range(n_stages):
        features.append(min(f, cap))
        f = min(int(round(f * 2)), cap)
    return tuple(features)


def _stage(info: dict, plans: dict, path: Path) -> int:
    per_stage = plans["plans_per_stage"]
    init = info.get("init")
    stage = init[5] if isinstance(init, (tuple, list)) and len(init) > 5 else None
    if stage is None:
        if len(per_stage) != 1:
            raise ConversionError(f"{path}: the plans have {len(per_stage)} resolution stages and "
                                  "do not say which one the checkpoint was trained on; give the "
                                  "checkpoint's own .model.pkl")
        stage = next(iter(per_stage))
    if stage not in per_stage:
        raise ConversionError(f"{path}: the trainer's stage {stage} is not in the plans")
    if len(per_stage) > 1 and int(stage) == 0:
        raise ConversionError(f"{path}: a 3d_lowres model (the low-resolution first stage of an "
                              "nnU-Net cascade); c2fseg does not import cascades: import the "
                              "3d_fullres model instead")
    return int(stage)


def _check_trainer(name: str | None, path: Path) -> None:
    for pattern, why in _REFUSED_TRAINERS:
        if name and re.search(pattern, name):
            raise ConversionError(f"{path}: trainer {name} cannot be converted: {why}")


def _ct_statistics(plans: dict, path: Path) -> dict[str, float]:
    schemes = dict(plans.get("normalization_schemes") or {})
    modalities = plans.get("num_modalities", len(schemes))
    if modalities != 1 or len(schemes) != 1:
        raise ConversionError(f"{path}: the model takes {modalities} input channels; c2fseg "
                              "stages take exactly one (CT)")
    scheme = next(iter(schemes.values()))
    if scheme != "CT":
        raise ConversionError(f"{path}: normalisation {scheme!r}; c2fseg converts models "
                              "with nnU-Net's CT normalisation ('CT') only")
    props = plans.get("dataset_properties", {}).get("intensityproperties", {})
    props = props.get(0, props.get("0"))
    names = {"mean": "mean", "std": "sd", "percentile_00_5": "percentile_00_5",
             "percentile_99_5": "percentile_99_5", "median": "median", "min": "mn", "max": "mx"}
    if not props or any(names[k] not in props for k in ("mean", "std", "percentile_00_5",
                                                        "percentile_99_5")):
        raise ConversionError(f"{path}: the plans lack the CT intensity statistics "
                              "(dataset_properties -> intensityproperties -> 0: mean, sd, "
                              "percentile_00_5, percentile_99_5)")
    return {ours: float(props[theirs]) for ours, theirs in names.items() if theirs in props}


def _triple(values, what: str, path: Path) -> tuple:
    out = tuple(values)
    if len(out) != 3:
        raise ConversionError(f"{path}: {what} {list(out)} is not 3-D; c2fseg converts 3-D models "
                              "only (a 2-D model's plans have 2-D patches)")
    return out


def read_v1_plans(path: str | os.PathLike) -> V1Plans:
    """Spacing, patch, CT statistics, axis order and network of a v1 plans pickle.

    Refuses (ConversionError) 2-D models, cascade stages, several input channels, non-CT
    normalisation and trainers whose network differs from Generic_UNet's defaults.
    """
    path = Path(path)
    info = load_v1_pickle(path)
    plans = info.get("plans", info)
    if not isinstance(plans, dict) or "plans_per_stage" not in plans:
        raise ConversionError(f"{path}: not nnU-Net v1 plans (no 'plans_per_stage')")
    trainer = info.get("name") if isinstance(info.get("name"), str) else None
    _check_trainer(trainer, path)
    stage = _stage(info, plans, path)
    sp = plans["plans_per_stage"][stage]
    patch = tuple(int(v) for v in _triple(sp["patch_size"], "patch_size", path))
    pools = [tuple(int(a) for a in _triple(p, "pool kernel", path)) for p in sp["pool_op_kernel_sizes"]]
    kernels = [tuple(int(a) for a in _triple(k, "conv kernel", path)) for k in sp["conv_kernel_sizes"]]
    n = len(pools) + 1
    if len(kernels) != n:
        raise ConversionError(f"{path}: {len(kernels)} conv kernels for {n} stages")
    convs = int(plans.get("conv_per_stage", 2))
    arch = UNetArchitecture(
        v1_features(plans["base_num_features"], n), tuple(kernels), ((1, 1, 1), *pools),
        # v1 bottleneck/decoder blocks are two stacks of (convs - 1) and 1 convs, each at least 1
        (convs,) * (n - 1) + (max(convs, 2),), (max(convs, 2),) * (n - 1), num_classes=int(plans["num_classes"]) + 1,
        input_channels=int(plans.get("num_modalities", 1)),
    )
    fwd = tuple(int(a) for a in plans.get("transpose_forward", (0, 1, 2)))
    bwd = tuple(int(a) for a in plans.get("transpose_backward", sorted(range(3), key=fwd.__getitem__)))
    classes = [int(c) for c in plans.get("all_classes", range(1, arch.num_classes))]
    median = sp.get("median_patient_size_in_voxels")
    return V1Plans(
        spacing=tuple(float(v) for v in _triple(sp["current_spacing"], "current_spacing", path)),
        patch_size=patch,  # type: ignore[arg-type]
        ct_statistics=_ct_statistics(plans, path),
        transpose_forward=fwd,  # type: ignore[arg-type]
        transpose_backward=bwd,  # type: ignore[arg-type]
        architecture=arch,
        labels=(0, *classes),
        trainer=trainer,
        stage=stage,
        num_stages=len(plans["plans_per_stage"]),
        median_shape=None if median is None else tuple(int(v) for v in median),
        batch_size=None if sp.get("batch_size") is None else int(sp["batch_size"]),
    )

