"""Stage settings and the nnU-Net plans configuration each stage trains with.

Settings come from the packaged ``stage_defaults.json`` (:mod:`c2fseg.settings`; a named config,
"default" or "tiny", then per-stage values, then user overrides). They are written into nnU-Net's plans JSON as an extra
configuration ``c2fseg_<stage>`` that inherits from the planned ``3d_fullres``: target spacing,
patch size, network depth/width and batch size replace the planned ones, and the training
schedule is stored under the configuration's ``c2fseg`` key, where our trainer reads it. So a
stage's plans file fully describes how it was trained and how to rebuild its network.

Resampling: the planned 3d_fullres resamples CT with cubic splines, and with nearest neighbour
along z when the spacing is anisotropic (z > 3x in-plane). c2fseg's inference resamples CT
trilinearly on every axis (on the device), so the stage configuration sets nnU-Net's data (and
probability) resampling to order 1 on every axis, so the network sees at inference the same kind
of input it was trained on. Training labels keep nnU-Net's default label resampling.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping

import numpy as np

from c2fseg.labels import check_stage
from c2fseg.plans import features_per_stage, resolve_configuration
from c2fseg.settings import load_defaults

PLANS_IDENTIFIER = "nnUNetPlans"
BASE_CONFIGURATION = "3d_fullres"

#: Settings that change the preprocessed data (a change means "preprocess again").
PREPROCESSING_KEYS = ("spacing", "resampling")


def export_name(stage: str, variant: int | None = None) -> str:
    """Folder name of a stage's model: ``tumor``, or ``tumor_2`` for ``variant`` 2 (a second
    model of the stage, trained with its own settings and folders, an ensemble member)."""
    check_stage(stage)
    if variant is None or int(variant) == 1:
        return stage
    if stage != "tumor" or int(variant) < 2:
        raise ValueError(f"variant {variant!r}: only the tumor stage has variants, numbered 2, 3, ...")
    return f"{stage}_{int(variant)}"


def configuration_name(stage: str, variant: int | None = None) -> str:
    """Name of the stage's configuration inside the plans, e.g. ``c2fseg_coarse``, ``c2fseg_tumor_2``."""
    return f"c2fseg_{export_name(stage, variant)}"


def dataset_name(stage: str, defaults: Mapping | None = None) -> str:
    """nnU-Net dataset folder name of a stage, e.g. ``Dataset901_c2fsegCoarse``."""
    defaults = defaults or load_defaults()
    return f"Dataset{int(defaults['dataset_ids'][check_stage(stage)]):03d}_c2fseg{stage.capitalize()}"


def resolve_settings(stage: str, config: str = "default", overrides: Mapping | None = None,
                     defaults: Mapping | None = None, variant: int | None = None) -> dict:
    """Flat settings dict for ``stage``: config base, then stage values, then ``overrides``.

    A ``variant`` (e.g. 2 for ``tumor_2``) adds the config's ``tumor_2`` values over the stage's.

    ``overrides`` with value None are ignored (an unset command-line flag); unknown keys raise
    ValueError naming the valid ones.
    """
    check_stage(stage)
    defaults = defaults or load_defaults()
    configs = defaults["configs"]
    if config not in configs:
        raise ValueError(f"unknown training config {config!r}; choose one of {', '.join(configs)}")
    name = export_name(stage, variant)
    settings = {**configs[config]["base"], **configs[config].get(stage, {})}
    if name != stage:
        settings.update(configs[config].get(name, {}))
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in settings:
            raise ValueError(f"unknown training setting {key!r}; valid: {', '.join(sorted(settings))}")
        settings[key] = list(value) if isinstance(value, tuple) else value
    settings["z_margin"] = int(defaults.get("z_margin_slices", 10))
    settings["resampling"] = copy.deepcopy(defaults["resampling"])
    _check_settings(settings)
    return settings


def _check_settings(s: Mapping) -> None:
    for key in ("spacing", "patch"):
        v = s[key]
        if v is not None and (len(v) != 3 or not all(x > 0 for x in v)):
            raise ValueError(f"{key} must be three positive numbers (z, y, x), got {v}")
    for key in ("n_stages", "features", "batch_size", "epochs", "iters_per_epoch", "convs_per_stage"):
        if int(s[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {s[key]}")
    if s["optimizer"] not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {s['optimizer']!r}")
    if s.get("cpu_bf16", "auto") not in (True, False, "auto"):
        raise ValueError(f"cpu_bf16 must be true, false or 'auto', got {s['cpu_bf16']!r}")
    share = s.get("oversample_foreground")
    if share is not None and not 0.0 <= float(share) <= 1.0:
        raise ValueError(f"oversample_foreground must be a share between 0 and 1 (or null), got {share}")
    clip = s.get("ct_clip")
    if clip is not None and (len(clip) != 2 or not float(clip[0]) < float(clip[1])):
        raise ValueError(f"ct_clip must be [low, high] HU with low < high (or null), got {clip}")


def config_inference(stage: str, config: str = "default", defaults: Mapping | None = None) -> dict:
    """Inference settings a config gives its exported stages (its ``inference`` block: ``all``
    then the stage's values); empty for configs without one (the stage defaults apply)."""
    check_stage(stage)
    defaults = defaults or load_defaults()
    block = defaults["configs"][config].get("inference", {})
    if not block:
        return {}
    return copy.deepcopy({**block.get("all", {}), **block.get(stage, {})})


def settings_hash(settings: Mapping, keys: tuple[str, ...]) -> str:
    """Short hash of the chosen settings (to name data folders and detect changes)."""
    sub = {k: settings.get(k) for k in keys}
    return hashlib.sha256(json.dumps(sub, sort_keys=True).encode()).hexdigest()[:10]


def network_topology(spacing, patch, n_stages: int, min_edge: int = 4) -> tuple[list, list, list[int]]:
    """Strides, kernel sizes and a divisible patch size for a U-Net with ``n_stages`` stages.

    Uses nnU-Net's own pooling rule (pool an axis while its spacing is within 2x of the finest and
    its size allows), limited to ``n_stages`` stages; the patch is then rounded up to a multiple
    of the total stride per axis. Fewer stages come back when the patch is too small for more.
    """
    from nnunetv2.experiment_planning.experiment_planners.network_topology import (
        get_pool_and_conv_props,
    )

    _, strides, kernels, _, _ = get_pool_and_conv_props(list(spacing), list(patch), min_edge, 999999)
    strides = [list(map(int, s)) for s in strides[:n_stages]]
    kernels = [list(map(int, k)) for k in kernels[:n_stages]]
    divisor = np.prod(np.array(strides), axis=0)
    patch = [int(np.ceil(p / d) * d) for p, d in zip(patch, divisor, strict=True)]
    return strides, kernels, patch


def _fit_patch(patch, median_shape) -> list[int]:
    """Clip the patch to the median image size (no point in patches larger than the images)."""
    return [int(max(8, min(p, np.ceil(m)))) for p, m in zip(patch, median_shape, strict=True)]


def stage_configuration(plans: Mapping, stage: str, settings: Mapping,
                        variant: int | None = None) -> dict:
    """The ``c2fseg_<stage>`` configuration for ``plans`` (from nnU-Net's planner) and settings."""
    base = resolve_configuration(plans, BASE_CONFIGURATION)
    base_spacing = np.array(base["spacing"], dtype=float)
    if settings.get("spacing") is not None:
        spacing = np.array(settings["spacing"], dtype=float)
    else:
        spacing = base_spacing * float(settings.get("spacing_factor", 1.0))
    median = np.array(base["median_image_size_in_voxels"], dtype=float) * base_spacing / spacing
    patch = _fit_patch(settings["patch"], median)
    strides, kernels, patch = network_topology(spacing, patch, int(settings["n_stages"]))
    n = len(strides)
    arch = copy.deepcopy(base["architecture"])
    kw = arch["arch_kwargs"]
    conv_key = "n_conv_per_stage" if "n_conv_per_stage" in kw else "n_blocks_per_stage"
    convs = int(settings.get("convs_per_stage", 2))
    kw.update({
        "n_stages": n,
        "features_per_stage": features_per_stage(settings["features"], n, settings["max_features"]),
        "kernel_sizes": kernels,
        "strides": strides,
        conv_key: [convs] * n,
        "n_conv_per_stage_decoder": [convs] * (n - 1),
    })
    spacing_list = [float(round(s, 6)) for s in spacing]
    resampling = settings.get("resampling") or load_defaults()["resampling"]
    tag = settings_hash({"spacing": spacing_list, "resampling": resampling}, PREPROCESSING_KEYS)
    training_keys = ("epochs", "iters_per_epoch", "val_iters_per_epoch", "optimizer", "lr",
                     "weight_decay", "cpu_bf16", "save_every", "final_validation", "mirror_axes",
                     "augmentation", "ct_clip", "oversample_foreground", "class_sampling",
                     "channels_last", "init_from", "ce_class_weights", "plot_every")
    return {
        "inherits_from": BASE_CONFIGURATION,
        "data_identifier": f"{configuration_name(stage)}_{tag}",  # variants share the data
        "spacing": spacing_list,
        "patch_size": patch,
        "batch_size": int(settings["batch_size"]),
        "architecture": arch,
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": dict(resampling["data"]),
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": dict(resampling["probabilities"]),
        "c2fseg": {
            "stage": stage,
            "variant": export_name(stage, variant),
            "settings": dict(settings),
            "training": {k: settings.get(k) for k in training_keys},  # absent: the trainer default
        },
    }


def add_stage_configuration(plans: Mapping, stage: str, settings: Mapping,
                            variant: int | None = None) -> dict:
    """A copy of ``plans`` with the stage (or variant) configuration added (or replaced)."""
    out = copy.deepcopy(dict(plans))
    out["configurations"][configuration_name(stage, variant)] = stage_configuration(
        plans, stage, settings, variant)
    return out


def architecture_signature(plans: Mapping, name: str) -> str:
    """Hash of what a checkpoint depends on (network, patch, spacing, normalisation, labels)."""
    conf = resolve_configuration(plans, name)
    sub = {k: conf.get(k) for k in ("architecture", "patch_size", "spacing", "normalization_schemes")}
    sub["intensity"] = plans.get("foreground_intensity_properties_per_channel")
    sub["transpose"] = plans.get("transpose_forward")
    return hashlib.sha256(json.dumps(sub, sort_keys=True).encode()).hexdigest()
