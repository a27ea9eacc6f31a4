"""nnU-Net v2 plans for benchmark networks of production size (or thinner), with random weights.

Timing does not need trained weights: a network of the same architecture costs the same with
random ones. ``production_plans`` writes what nnU-Net's default planner would give for
FLARE-like data with the published per-stage settings (``../shared/reference/flare23.md``):
PlainConvUNet, 6 stages, ``width`` base features doubling up to 320, 3x3x3 kernels, nnU-Net's
own pooling rule (first stride 1, then 2; z stops pooling when the patch is short), two convs per
stage, instance norm, leaky ReLU. The per-stage spacing, patch and CT statistics live in
``STAGE_SETTINGS`` (data, not code paths), "thin" overrides in ``THIN_SETTINGS``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

from c2fseg.labels import check_stage

CONFIGURATION = "3d_fullres"
MAX_FEATURES = 320
N_STAGES = 6

#: Published per-stage settings: spacing (z, y, x) mm, patch, step, HU clip and z-score stats.
STAGE_SETTINGS: Mapping[str, dict] = {
    "coarse": {"spacing": [2.3, 1.26, 1.26], "patch": [64, 160, 224], "step": 1.0,
               "clip": [-325.0, 266.0], "mean": 59.28, "std": 83.44},
    "tumor": {"spacing": [1.76, 1.44, 1.44], "patch": [96, 160, 192], "step": 0.5,
              "clip": [-325.0, 273.0], "mean": 86.60, "std": 81.02},
    "organ": {"spacing": [2.5, 1.26, 1.26], "patch": [64, 160, 224], "step": 0.5,
              "clip": [-325.0, 267.0], "mean": 70.34, "std": 82.54},
}

#: "thin" models for 2-core CPUs: 16 base features, fine stages at 2.5 x 1.5 x 1.5 mm, and a
#: coarse stage at twice the production voxel size (it only has to find the abdomen).
THIN_WIDTH = 16
THIN_SETTINGS: Mapping[str, dict] = {
    "coarse": {"spacing": [4.6, 2.52, 2.52], "patch": [48, 112, 112]},
    "tumor": {"spacing": [2.5, 1.5, 1.5], "patch": [64, 128, 160]},
    "organ": {"spacing": [2.5, 1.5, 1.5], "patch": [64, 160, 224]},
}


def stage_dataset_json(stage: str) -> dict:
    """dataset.json of a stage, exactly as training writes it (no training cases)."""
    from c2fseg.data.stage_dataset import stage_dataset_json as training_dataset_json

    return training_dataset_json(check_stage(stage), 0)


def _architecture(width: int, strides: Sequence, kernels: Sequence) -> dict:
    """nnU-Net's default PlainConvUNet description for the plans."""
    n = len(strides)
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": [min(width * 2**i, MAX_FEATURES) for i in range(n)],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [list(k) for k in kernels],
            "strides": [list(s) for s in strides],
            "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1),
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _ct_properties(settings: Mapping) -> dict:
    lo, hi = settings["clip"]
    return {"mean": float(settings["mean"]), "std": float(settings["std"]),
            "percentile_00_5": float(lo), "percentile_99_5": float(hi),
            "median": float(settings["mean"]), "min": -1024.0, "max": 3071.0}


def production_plans(
    stage: str,
    width: int = 32,
    *,
    spacing: Sequence[float] | None = None,
    patch: Sequence[int] | None = None,
    n_stages: int = N_STAGES,
) -> dict:
    """nnU-Net v2 plans (configuration ``3d_fullres``) of a production-size stage network.

    ``spacing``/``patch`` override the published stage values (canonical z, y, x; the plans use
    no transpose). Topology follows nnU-Net's planner rule for that spacing and patch.
    """
    from c2fseg.train.plans import network_topology

    settings = dict(STAGE_SETTINGS[check_stage(stage)])
    spacing = [float(s) for s in (spacing or settings["spacing"])]
    strides, kernels, patch_fit = network_topology(spacing, list(patch or settings["patch"]), n_stages)
    config = {
        "data_identifier": f"c2fsegBench_{stage}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": patch_fit,
        "median_image_size_in_voxels": [max(p, 128) for p in patch_fit],
        "spacing": spacing,
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                               "force_separate_z": None},
        "architecture": _architecture(int(width), strides, kernels),
        "batch_dice": False,
    }
    return {
        "dataset_name": f"Dataset990_c2fsegBench{stage.capitalize()}",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": config["median_image_size_in_voxels"],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {CONFIGURATION: config},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": _ct_properties(settings)},
    }


def thin_plans(stage: str) -> dict:
    """Plans of the thin CPU variant: 16 base features and the ``THIN_SETTINGS`` spacing/patch."""
    over = THIN_SETTINGS[check_stage(stage)]
    return production_plans(stage, THIN_WIDTH, spacing=over["spacing"], patch=over["patch"])


def bench_plans(stage: str, kind: str) -> dict:
    """Plans for ``kind`` 'production' or 'thin'."""
    if kind == "production":
        return production_plans(stage)
    if kind == "thin":
        return thin_plans(stage)
    raise ValueError(f"unknown model kind {kind!r}; use production, thin or a weights folder")


def stage_step(stage: str) -> float:
    """The published sliding-window step of a stage."""
    return float(STAGE_SETTINGS[check_stage(stage)]["step"])


def with_patch(plans: dict, patch: Sequence[int]) -> dict:
    """A copy of ``plans`` with another patch size (tests: tiny patches on tiny volumes)."""
    out = copy.deepcopy(plans)
    out["configurations"][CONFIGURATION]["patch_size"] = [int(p) for p in patch]
    return out
