"""c2fseg.plans: reading nnU-Net plans/dataset.json and building plans for test and bench networks."""

from __future__ import annotations

import pytest

from c2fseg.plans import (
    PlansError,
    channel_labels_from_dataset,
    network_plans,
    plain_unet_architecture,
    resolve_configuration,
    stage_settings,
)
from infer.fake_models import CT_STATS, tiny_dataset_json, tiny_plans


def test_resolve_configuration_inherits_and_detects_cycles():
    plans = tiny_plans(patch_size=(8, 16, 16))
    config = resolve_configuration(plans, "3d_tiny")
    assert config["patch_size"] == [8, 16, 16]
    assert config["normalization_schemes"] == ["CTNormalization"]  # from 3d_fullres
    assert "inherits_from" not in config
    plans["configurations"]["3d_fullres"]["inherits_from"] = "3d_tiny"
    with pytest.raises(PlansError, match="circular"):
        resolve_configuration(plans, "3d_tiny")
    with pytest.raises(PlansError, match="not in the plans"):
        resolve_configuration(plans, "2d")


def test_channel_labels_follow_names_not_order():
    ds = {"labels": {"background": 0, "spleen": 2, "liver": 1, "tumor": 3}}
    assert channel_labels_from_dataset(ds) == (0, 1, 3, 14)
    with pytest.raises(PlansError, match="not a FLARE23 label name"):
        channel_labels_from_dataset({"labels": {"background": 0, "kidney": 1}})
    with pytest.raises(PlansError, match="channels 0..n-1"):
        channel_labels_from_dataset({"labels": {"background": 0, "liver": 2}})



def test_stage_settings_are_in_canonical_order():
    plans = tiny_plans(spacing=(3.0, 2.0, 1.0), patch_size=(16, 32, 48), transpose_forward=(2, 0, 1))
    settings = stage_settings(plans, tiny_dataset_json("organ"), "3d_tiny")
    # plans values are in model order: model axis i is canonical axis transpose_forward[i]
    assert settings["spacing"] == [2.0, 1.0, 3.0] and settings["patch_size"] == [32, 48, 16]
    assert settings["transpose_forward"] == [2, 0, 1]
    assert settings["normalization"] == {"scheme": "CTNormalization", **CT_STATS}
    assert settings["channel_labels"] == list(range(14))
    two_channels = {**tiny_dataset_json("organ"), "channel_names": {"0": "CT", "1": "PET"}}
    with pytest.raises(PlansError, match="exactly one input channel"):
        stage_settings(plans, two_channels, "3d_tiny")


def test_architecture_builder_follows_its_parameters():
    arch = plain_unet_architecture([4, 8, 16, 32], [[1, 1, 1], [2, 2, 2], [1, 2, 2], [2, 2, 2]],
                                   n_conv=3, n_conv_decoder=1)
    kw = arch["arch_kwargs"]
    assert kw["n_stages"] == 4 and kw["features_per_stage"] == [4, 8, 16, 32]
    assert kw["strides"][2] == [1, 2, 2] and kw["kernel_sizes"] == [[3, 3, 3]] * 4
    assert kw["n_conv_per_stage"] == [3] * 4 and kw["n_conv_per_stage_decoder"] == [1] * 3
    with pytest.raises(PlansError, match="4 feature counts but 3 strides"):
        plain_unet_architecture([4, 8, 16, 32], [[1, 1, 1]] * 3)


def test_built_plans_give_nnunet_the_network_they_describe():
    torch = pytest.importorskip("torch")
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from c2fseg.infer.stage_loader import build_network

    arch = plain_unet_architecture([4, 8], [[1, 1, 1], [2, 2, 2]], n_conv=1)
    plans = network_plans(spacing=(2.0, 1.0, 1.0), patch_size=(8, 16, 16), architecture=arch,
                          ct_stats=CT_STATS, transpose_forward=(1, 0, 2))
    assert plans["transpose_backward"] == [1, 0, 2]
    conf = PlansManager(plans).get_configuration("3d_fullres")
    assert conf.patch_size == [8, 16, 16] and conf.normalization_schemes == ["CTNormalization"]
    net = build_network(plans, "3d_fullres", 3)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs[0].in_channels == 1 and convs[0].out_channels == 4 and convs[-1].out_channels == 3
    assert tuple(net(torch.zeros(1, 1, 8, 16, 16)).shape) == (1, 3, 8, 16, 16)


def test_training_plans_do_not_import_the_weights_module():
    import subprocess
    import sys

    code = ("import sys, c2fseg.train.plans; "
            "print(sorted(m for m in sys.modules if m in ('c2fseg.weights', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
