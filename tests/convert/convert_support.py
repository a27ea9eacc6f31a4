"""Helpers for the conversion tests: the nnU-Net v1 reference network, v1 files, tiny v2 plans.

The reference ``Generic_UNet`` comes from PyPI's ``nnunet==1.7.1`` (a test-only dependency:
``pip install --no-deps nnunet==1.7.1``; its network module needs only torch, numpy, scipy and
batchgenerators, which nnunetv2 already brings). Installed elsewhere (``pip install --no-deps
--target DIR nnunet==1.7.1``), point ``NNUNET_V1_PATH`` at DIR. Tests that need it use
:data:`requires_nnunet_v1` and are skipped, saying so, when it cannot be imported.
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from c2fseg.convert import UNetArchitecture

INSTALL_V1 = "pip install --no-deps nnunet==1.7.1"
#: The released HIASBUAA networks (hiasbuaa-inference.md), z, y, x.
RELEASED_FEATURES = (32, 64, 128, 256, 320, 320)
RELEASED_STRIDES = ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2))
#: Same structure, thin: 6 stages, last pooling [1, 2, 2], features capped at 24.
SMALL_FEATURES = (4, 8, 16, 24, 24, 24)
POOLS = [list(s) for s in RELEASED_STRIDES[1:]]
#: Input for the small network: divisible by the total pooling (16, 32, 32).
SMALL_INPUT = (2, 1, 16, 32, 64)


def released_arch(num_classes: int = 14) -> UNetArchitecture:
    return UNetArchitecture.uniform(RELEASED_FEATURES, RELEASED_STRIDES, num_classes)


def small_arch(num_classes: int = 5, n_conv: int = 2) -> UNetArchitecture:
    return UNetArchitecture.uniform(SMALL_FEATURES, RELEASED_STRIDES, num_classes, n_conv=n_conv)


def documented_keys() -> set[str]:
    """The released networks' keys as hiasbuaa-inference.md documents them: context 0-4 x
    blocks 0,1; bottleneck 5.{0,1}.blocks.0; tu 0-4; localization 0-4 x {0,1}.blocks.0;
    seg_outputs 0-4; convs with bias, transposed convs and heads without."""

    def conv(prefix: str) -> set[str]:
        return {f"{prefix}.conv.weight", f"{prefix}.conv.bias", f"{prefix}.instnorm.weight",
                f"{prefix}.instnorm.bias"}

    keys: set[str] = set()
    for i in range(5):
        for j in (0, 1):
            keys |= conv(f"conv_blocks_context.{i}.blocks.{j}")
    for part in (0, 1):
        keys |= conv(f"conv_blocks_context.5.{part}.blocks.0")
    for u in range(5):
        keys.add(f"tu.{u}.weight")
        keys.add(f"seg_outputs.{u}.weight")
        for part in (0, 1):
            keys |= conv(f"conv_blocks_localization.{u}.{part}.blocks.0")
    return keys


def _import_v1():
    extra = os.environ.get("NNUNET_V1_PATH")
    if extra and extra not in sys.path:
        sys.path.insert(0, extra)
    try:
        return importlib.import_module("nnunet.network_architecture.generic_UNet")
    except ImportError:
        return None


GENERIC_UNET = _import_v1()
if GENERIC_UNET is None and os.environ.get("CI") == "true":  # CI installs it: never skip there silently
    raise ImportError(f"CI needs the nnU-Net v1 reference network for the conversion tests: {INSTALL_V1}")
requires_nnunet_v1 = pytest.mark.skipif(
    GENERIC_UNET is None,
    reason=f"needs the nnU-Net v1 reference network: {INSTALL_V1} (or set NNUNET_V1_PATH)",
)


def build_v1_unet(
    *,
    base: int = 4,
    num_classes: int = 5,
    pools=None,
    kernels=None,
    conv_per_stage: int = 2,
    max_features: int | None = 24,
    head_bias: bool = False,
) -> nn.Module:
    """A Generic_UNet built with nnUNetTrainerV2's settings (what its checkpoints hold)."""
    pools = POOLS if pools is None else pools
    kernels = [[3, 3, 3]] * (len(pools) + 1) if kernels is None else kernels
    m = GENERIC_UNET
    return m.Generic_UNet(
        1, base, num_classes, len(pools), conv_per_stage, 2, nn.Conv3d, nn.InstanceNorm3d,
        {"eps": 1e-5, "affine": True}, nn.Dropout3d, {"p": 0, "inplace": True}, nn.LeakyReLU,
        {"negative_slope": 1e-2, "inplace": True}, True, False, lambda x: x,
        m.InitWeights_He(1e-2), pools, kernels, False, True, True,
        max_num_features=max_features, seg_output_use_bias=head_bias,
    )


def perturb(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random non-trivial values everywhere (norm scales/offsets and biases included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.dim() == 1:
                p.copy_((1.0 if name.endswith("instnorm.weight") else 0.0) + 0.2 * noise)
            else:
                p.add_(0.05 * noise * p.std().clamp(min=1e-3))
    return net


def save_v1_checkpoint(net: nn.Module, path: Path, *, fp16: bool = False) -> Path:
    """Save ``net`` the way nnU-Net v1's trainer does (state dict, SGD state, logs with numpy)."""
    optimizer = torch.optim.SGD(net.parameters(), 1e-2, momentum=0.99, nesterov=True)
    net.train()
    out = net(torch.randn(1, 1, *SMALL_INPUT[2:]))
    (out[0] if isinstance(out, tuple) else out).mean().backward()
    optimizer.step()
    optimizer.zero_grad()
    net.eval()
    checkpoint = {
        "epoch": 7,
        "state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
        "optimizer_state_dict": optimizer.state_dict(),
        "lr_scheduler_state_dict": None,
        "plot_stuff": ([0.9, 0.8], [0.85, np.float64(0.75)], [0.8], [np.float64(0.4), np.float64(0.5)]),
        "best_stuff": (5, np.float64(0.8), np.float64(0.45)),
    }
    if fp16:
        checkpoint["amp_grad_scaler"] = {"scale": 65536.0, "growth_factor": 2.0,
                                         "backoff_factor": 0.5, "growth_interval": 2000,
                                         "_growth_tracker": 0}
    torch.save(checkpoint, path)
    return path


def random_v1_state(layout: dict, seed: int = 0, device: str = "cpu") -> dict:
    """Random tensors with the shapes of a v1 key layout (``meta``: shapes only)."""
    gen = torch.Generator().manual_seed(seed)
    if device == "meta":
        return {k: torch.empty(s, device="meta") for k, s in layout.items()}
    return {k: torch.randn(s, generator=gen) for k, s in layout.items()}


def v1_plans_info(
    *,
    base: int = 4,
    num_classes: int = 5,
    patch=(16, 32, 64),
    spacing=(2.5, 1.25, 1.25),
    pools=None,
    kernels=None,
    stages: int = 1,
    stage: int | None = 0,
    trainer: str = "nnUNetTrainerV2",
    scheme: str = "CT",
    modalities: int = 1,
    transpose_forward=(0, 1, 2),
) -> OrderedDict:
    """What nnU-Net v1 pickles next to a checkpoint (``.model.pkl``), with numpy values as v1 has."""
    pools = POOLS if pools is None else pools
    kernels = [[3, 3, 3]] * (len(pools) + 1) if kernels is None else kernels
    per_stage = {}
    for s in range(stages):
        factor = 2.0 ** (stages - 1 - s)
        per_stage[s] = {
            "batch_size": 2, "num_pool_per_axis": [4, 5, 5], "patch_size": np.array(patch),
            "median_patient_size_in_voxels": np.array([100, 200, 200]) // int(factor),
            "current_spacing": np.array(spacing) * factor, "original_spacing": np.array(spacing),
            "do_dummy_2D_data_aug": False, "pool_op_kernel_sizes": pools,
            "conv_kernel_sizes": kernels,
        }
    props = OrderedDict(median=np.float64(80.0), mean=np.float64(70.34444), sd=np.float64(82.539795),
                        mn=np.float64(-1024.0), mx=np.float64(3071.0),
                        percentile_99_5=np.float64(267.0), percentile_00_5=np.float64(-325.0),
                        local_props=OrderedDict())
    fwd = list(transpose_forward)
    plans = {
        "num_stages": stages, "num_modalities": modalities,
        "modalities": {i: "CT" for i in range(modalities)},
        "normalization_schemes": OrderedDict((i, scheme) for i in range(modalities)),
        "dataset_properties": {"intensityproperties": OrderedDict({0: props}),
                               "all_classes": list(range(1, num_classes))},
        "list_of_npz_files": [], "original_spacings": [np.array(spacing)], "original_sizes": [],
        "preprocessed_data_folder": "/somewhere", "num_classes": num_classes - 1,
        "all_classes": list(range(1, num_classes)), "base_num_features": base,
        "use_mask_for_norm": OrderedDict({0: False}), "keep_only_largest_region": None,
        "min_region_size_per_class": None, "min_size_per_class": None,
        "transpose_forward": fwd, "transpose_backward": sorted(range(3), key=fwd.__getitem__),
        "data_identifier": "nnUNetData_plans_v2.1", "plans_per_stage": per_stage,
        "preprocessor_name": "GenericPreprocessor", "conv_per_stage": 2,
    }
    info = OrderedDict()
    info["init"] = ("/x/nnUNetPlansv2.1_plans_3D.pkl", 0, "/x/out", "/x/data", True, stage, True,
                    True, True)
    info["name"] = trainer
    info["class"] = f"<class 'nnunet.training.network_training.{trainer}.{trainer}'>"
    info["plans"] = plans
    return info


def write_pickle(obj, path: Path) -> Path:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)
    return path


# ---------------------------------------------------------------------------------------------
# nnU-Net v2 results folders
# ---------------------------------------------------------------------------------------------


def v2_plans(features=(4, 8, 16), patch=(16, 32, 32), spacing=(2.0, 1.5, 1.5)) -> dict:
    """nnU-Net 2.6 plans (as its ExperimentPlanner writes them) with a tiny 3d_fullres U-Net."""
    n = len(features)
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n, "features_per_stage": list(features),
            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * n,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 2) + [[1, 2, 2]],
            "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1),
            "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    config = {
        "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2, "patch_size": list(patch), "median_image_size_in_voxels": [40, 80, 80],
        "spacing": list(spacing), "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False], "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": resampling,
        "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
        "architecture": arch, "batch_dice": False,
    }
    return {
        "dataset_name": "Dataset902_Convert", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": [40, 80, 80], "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": config}, "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 3000.0, "mean": 60.0, "median": 62.0, "min": -1024.0,
            "percentile_00_5": -300.0, "percentile_99_5": 280.0, "std": 80.0}},
    }


def v2_dataset_json(labels=None, channels=None) -> dict:
    return {
        "channel_names": channels or {"0": "CT"},
        "labels": labels or {"background": 0, "liver": 1, "spleen": 2},
        "numTraining": 4, "file_ending": ".nii.gz",
    }
