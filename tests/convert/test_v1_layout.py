"""The nnU-Net v1 key layout and its renaming to PlainConvUNet; runs without nnU-Net v1 installed.

The documented layout (``convert_support.documented_keys``) is spelled out by hand,
independently of ``c2fseg.convert.v1_keys``.
"""

from __future__ import annotations

import pytest
import torch
from convert_support import (
    RELEASED_FEATURES,
    documented_keys,
    random_v1_state,
    released_arch,
    small_arch,
)

from c2fseg.convert import (
    UNetArchitecture,
    V1Network,
    convert_v1_state_dict,
    infer_v1_network,
    make_plans,
    v1_layout,
)
from c2fseg.convert.v1_keys import v2_name
from c2fseg.infer.stage_loader import build_network


@pytest.mark.parametrize("classes", [14, 15])
def test_documented_keys_are_the_generated_layout(classes):
    assert set(v1_layout(V1Network(released_arch(classes)))) == documented_keys()


def test_layout_shapes_follow_the_documented_network():
    layout = v1_layout(V1Network(released_arch(14)))
    assert layout["conv_blocks_context.0.blocks.0.conv.weight"] == (32, 1, 3, 3, 3)
    assert layout["conv_blocks_context.4.blocks.1.conv.weight"] == (320, 320, 3, 3, 3)
    assert layout["conv_blocks_context.5.0.blocks.0.conv.weight"] == (320, 320, 3, 3, 3)
    assert layout["tu.0.weight"] == (320, 320, 1, 2, 2)  # undoes the last [1, 2, 2] pooling
    assert layout["tu.4.weight"] == (64, 32, 2, 2, 2)
    assert layout["conv_blocks_localization.0.0.blocks.0.conv.weight"] == (320, 640, 3, 3, 3)
    assert layout["conv_blocks_localization.4.1.blocks.0.conv.weight"] == (32, 32, 3, 3, 3)
    assert layout["seg_outputs.2.weight"] == (14, 128, 1, 1, 1)  # the truncated coarse head
    assert layout["seg_outputs.4.weight"] == (14, 32, 1, 1, 1)  # full resolution


@pytest.mark.parametrize("classes", [14, 15])
def test_released_layout_maps_onto_plain_conv_unet(classes):
    arch = released_arch(classes)
    state = random_v1_state(v1_layout(V1Network(arch)), device="meta")
    found = infer_v1_network(state)
    assert found.arch == arch and not found.upsample_bias and not found.head_bias
    _, converted = convert_v1_state_dict(state, arch)
    target = arch.build(deep_supervision=True, device="meta").state_dict()
    assert list(converted) == list(target)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in target.items()}
    assert arch.features == RELEASED_FEATURES


@pytest.mark.parametrize(("v1", "v2"), [
    ("conv_blocks_context.0.blocks.1.conv.bias", "encoder.stages.0.0.convs.1.conv.bias"),
    ("conv_blocks_context.3.blocks.0.instnorm.weight", "encoder.stages.3.0.convs.0.norm.weight"),
    ("conv_blocks_context.5.0.blocks.0.conv.weight", "encoder.stages.5.0.convs.0.conv.weight"),
    ("conv_blocks_context.5.1.blocks.0.conv.weight", "encoder.stages.5.0.convs.1.conv.weight"),
    ("conv_blocks_localization.3.0.blocks.0.instnorm.bias", "decoder.stages.3.convs.0.norm.bias"),
    ("conv_blocks_localization.0.1.blocks.0.conv.weight", "decoder.stages.0.convs.1.conv.weight"),
    ("tu.4.weight", "decoder.transpconvs.4.weight"),
    ("seg_outputs.2.weight", "decoder.seg_layers.2.weight"),
])
def test_key_names(v1, v2):
    assert v2_name(v1, V1Network(released_arch())) == v2


def test_three_convs_per_stage_split_into_two_stacks():
    arch = small_arch(n_conv=3)
    layout = v1_layout(V1Network(arch))
    assert "conv_blocks_context.5.0.blocks.1.conv.weight" in layout
    assert "conv_blocks_context.5.1.blocks.1.conv.weight" not in layout
    net = V1Network(arch)
    assert v2_name("conv_blocks_context.5.1.blocks.0.conv.weight", net) == "encoder.stages.5.0.convs.2.conv.weight"
    assert v2_name("conv_blocks_localization.1.1.blocks.0.instnorm.weight", net) == "decoder.stages.1.convs.2.norm.weight"
    assert infer_v1_network(random_v1_state(layout)).arch == arch


def test_values_land_under_every_alias_and_missing_biases_are_zero():
    arch = small_arch()
    state = random_v1_state(v1_layout(V1Network(arch)), seed=3)
    _, converted = convert_v1_state_dict(state)
    net = V1Network(arch)
    for key, value in state.items():
        assert torch.equal(converted[v2_name(key, net)], value), key
    assert torch.equal(converted["decoder.encoder.stages.2.0.convs.1.all_modules.0.weight"],
                       state["conv_blocks_context.2.blocks.1.conv.weight"])
    for u in range(5):
        assert not converted[f"decoder.transpconvs.{u}.bias"].any()
        assert not converted[f"decoder.seg_layers.{u}.bias"].any()
    distinct = {id(v) for v in converted.values()}
    assert len(distinct) == len(state) + 10  # one tensor per v1 entry + 5 + 5 zero biases


def test_head_bias_is_kept_when_the_v1_network_has_one():
    arch = small_arch()
    state = random_v1_state(v1_layout(V1Network(arch, head_bias=True)), seed=1)
    _, converted = convert_v1_state_dict(state)
    assert torch.equal(converted["decoder.seg_layers.3.bias"], state["seg_outputs.3.bias"])


def test_converted_weights_load_into_the_stage_network_built_from_plans():
    arch = small_arch(num_classes=4)
    _, converted = convert_v1_state_dict(random_v1_state(v1_layout(V1Network(arch))), arch)
    plans = make_plans(arch, spacing=(2.5, 1.25, 1.25), patch_size=(16, 32, 64),
                       ct_statistics={"mean": 70.0, "std": 80.0, "percentile_00_5": -325.0,
                                      "percentile_99_5": 267.0})
    network = build_network(plans, "3d_fullres", 4, state_dict=converted)  # strict load
    assert network.decoder.seg_layers[0].out_channels == 4
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    config = PlansManager(plans).get_configuration("3d_fullres")
    assert config.patch_size == [16, 32, 64] and config.spacing == [2.5, 1.25, 1.25]
    assert config.network_arch_class_name.endswith("PlainConvUNet")


def test_uniform_architecture_description_and_validation():
    arch = released_arch(15)
    text = arch.describe()
    assert "6 stages" in text and "[32, 64, 128, 256, 320, 320]" in text and "15 classes" in text
    with pytest.raises(ValueError, match="inconsistent"):
        UNetArchitecture((4, 8), ((3, 3, 3),) * 2, ((1, 1, 1),), (2, 2), (2,), 3)
