"""Stage settings and the c2fseg_<stage> plans configuration."""

from __future__ import annotations

import copy

import pytest

from c2fseg.train.plans import (
    add_stage_configuration,
    architecture_signature,
    configuration_name,
    dataset_name,
    resolve_settings,
)


def _arch(n=5):
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n, "features_per_stage": [32 * 2 ** i for i in range(n)],
            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * n,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1), "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _plans():
    """A plans dict shaped like nnU-Net's planner output (3d_fullres only)."""
    return {
        "dataset_name": "Dataset901_c2fsegCoarse", "plans_name": "nnUNetPlans",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [80, 160, 160], "median_image_size_in_voxels": [100, 200, 200],
            "spacing": [2.5, 1.0, 1.0], "normalization_schemes": ["CTNormalization"],
            "use_mask_for_norm": [False], "architecture": _arch(), "batch_dice": False,
        }},
        "foreground_intensity_properties_per_channel": {"0": {"mean": 50.0, "std": 80.0}},
    }


def test_names():
    assert configuration_name("tumor") == "c2fseg_tumor"
    assert dataset_name("organ") == "Dataset903_c2fsegOrgan"
    with pytest.raises(ValueError):
        configuration_name("fine")


def test_resolve_settings_default_tiny_and_overrides():
    d = resolve_settings("coarse")
    assert d["spacing"] == [2.3, 1.26, 1.26] and d["n_stages"] == 6 and d["optimizer"] == "sgd"
    t = resolve_settings("tumor", "tiny", {"epochs": 3, "patch": (32, 48, 48), "features": None})
    assert t["epochs"] == 3 and t["patch"] == [32, 48, 48] and t["features"] == 8
    assert t["optimizer"] == "adamw" and t["da_workers"] == 0 and t["z_margin"] == 10
    with pytest.raises(ValueError, match="unknown training setting"):
        resolve_settings("coarse", "tiny", {"layers": 3})
    with pytest.raises(ValueError, match="unknown training config"):
        resolve_settings("coarse", "huge")
    with pytest.raises(ValueError, match="spacing"):
        resolve_settings("coarse", "tiny", {"spacing": (1.0, 0.0, 1.0)})


def test_stage_configuration_tiny_and_overrides_build_a_network():
    torch = pytest.importorskip("torch")
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = _plans()
    original = copy.deepcopy(plans)
    settings = resolve_settings("coarse", "tiny", {"spacing": (5.0, 2.0, 2.0), "patch": (20, 60, 64)})
    out = add_stage_configuration(plans, "coarse", settings)
    assert plans == original  # input untouched
    conf = PlansManager(out).get_configuration("c2fseg_coarse")
    assert conf.spacing == [5.0, 2.0, 2.0]
    kw = conf.network_arch_init_kwargs
    assert kw["n_stages"] == 4 and kw["features_per_stage"] == [8, 16, 32, 64]
    # patch rounded up to multiples of the total stride of each axis
    total = [1, 1, 1]
    for s in kw["strides"]:
        total = [a * b for a, b in zip(total, s, strict=True)]
    assert all(p % t == 0 for p, t in zip(conf.patch_size, total, strict=True))
    assert conf.patch_size[1] >= 60 and conf.batch_size == 2
    assert conf.normalization_schemes == ["CTNormalization"]  # inherited from 3d_fullres
    assert out["configurations"]["c2fseg_coarse"]["c2fseg"]["training"]["optimizer"] == "adamw"
    net = get_network_from_plans(conf.network_arch_class_name, kw, conf.network_arch_init_kwargs_req_import,
                                 1, 14, deep_supervision=False)
    y = net(torch.zeros(1, 1, *conf.patch_size))
    assert tuple(y.shape) == (1, 14, *conf.patch_size)


def test_default_spacing_follows_planned_spacing_and_patch_fits_images():
    plans = _plans()
    plans["configurations"]["3d_fullres"]["median_image_size_in_voxels"] = [30, 40, 40]
    settings = resolve_settings("organ", "tiny")  # spacing null, factor 1
    conf = add_stage_configuration(plans, "organ", settings)["configurations"]["c2fseg_organ"]
    assert conf["spacing"] == [2.5, 1.0, 1.0]
    assert conf["patch_size"][0] <= 32 and conf["patch_size"][1] <= 40  # clipped to the images
    coarse = add_stage_configuration(plans, "coarse", resolve_settings("coarse", "tiny", {"spacing_factor": 1.5}))
    assert coarse["configurations"]["c2fseg_coarse"]["spacing"] == [3.75, 1.5, 1.5]


def test_architecture_signature_changes_with_network_not_schedule():
    plans = _plans()
    a = add_stage_configuration(plans, "coarse", resolve_settings("coarse", "tiny", {"epochs": 1}))
    b = add_stage_configuration(plans, "coarse", resolve_settings("coarse", "tiny", {"epochs": 9}))
    c = add_stage_configuration(plans, "coarse", resolve_settings("coarse", "tiny", {"features": 16}))
    name = "c2fseg_coarse"
    assert architecture_signature(a, name) == architecture_signature(b, name)
    assert architecture_signature(a, name) != architecture_signature(c, name)


def test_stage_resamples_ct_linearly_on_every_axis_like_inference():
    np = pytest.importorskip("numpy")
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = _plans()
    out = add_stage_configuration(plans, "coarse", resolve_settings("coarse", "tiny", {"spacing": (1.0, 1.0, 1.0)}))
    conf = out["configurations"]["c2fseg_coarse"]
    assert conf["resampling_fn_data_kwargs"] == {"is_seg": False, "order": 1, "order_z": 1, "force_separate_z": False}
    assert conf["resampling_fn_probabilities_kwargs"]["order"] == 1
    assert "resampling_fn_seg_kwargs" not in conf  # labels: nnU-Net's default, inherited from 3d_fullres
    manager = PlansManager(out).get_configuration("c2fseg_coarse")
    # anisotropic input (z 4 mm, xy 1 mm): nnU-Net's default would use nearest along z and cubic
    # in-plane; ours must interpolate a ramp along z linearly
    ramp = np.broadcast_to(np.arange(5, dtype=np.float32)[:, None, None] * 10.0, (5, 8, 8))[None].copy()
    res = manager.resampling_fn_data(ramp, (17, 8, 8), [4.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    profile = res[0, :, 4, 4]
    steps = np.diff(profile)
    assert len(np.unique(np.round(profile, 3))) > 5  # not a staircase (nearest along z)
    assert steps.min() >= -1e-4 and np.allclose(steps[3:-3], steps[3:-3].mean(), atol=1e-3)  # linear inside


def test_resampling_setting_changes_the_preprocessed_data_identifier():
    plans = _plans()
    settings = resolve_settings("coarse", "tiny")
    other = {**settings, "resampling": {**settings["resampling"],
                                        "data": {**settings["resampling"]["data"], "order": 3}}}
    a = add_stage_configuration(plans, "coarse", settings)["configurations"]["c2fseg_coarse"]
    b = add_stage_configuration(plans, "coarse", other)["configurations"]["c2fseg_coarse"]
    assert a["data_identifier"] != b["data_identifier"]


def test_plans_use_the_shared_configuration_resolver():
    from c2fseg.plans import resolve_configuration
    from c2fseg.train import plans as plans_module

    assert plans_module.resolve_configuration is resolve_configuration
    assert not hasattr(plans_module, "resolved_configuration")
