"""Converted nnU-Net v1 checkpoints against the reference Generic_UNet (PyPI nnunet==1.7.1).

Skipped, with the install command, when nnU-Net v1 is not importable. Random weights are saved
exactly as a v1 trainer saves them, imported, and the forward outputs compared in fp32.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from convert_support import (
    RELEASED_FEATURES,
    SMALL_INPUT,
    build_v1_unet,
    documented_keys,
    perturb,
    released_arch,
    requires_nnunet_v1,
    save_v1_checkpoint,
    v1_plans_info,
    write_pickle,
)

from c2fseg.convert import ConversionError, read_v1_checkpoint, read_v1_model_folder
from c2fseg.convert.v1_keys import convert_v1_state_dict
from c2fseg.infer.stage_loader import build_network
from c2fseg.infer.truncated import TruncatedUNet

pytestmark = requires_nnunet_v1
TOLERANCE = 1e-4


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


@pytest.mark.parametrize(("conv_per_stage", "head_bias"), [(2, False), (3, True)])
def test_all_deep_supervision_outputs_match_the_reference(tmp_path, conv_per_stage, head_bias):
    torch.manual_seed(0)
    v1 = perturb(build_v1_unet(conv_per_stage=conv_per_stage, head_bias=head_bias))
    path = save_v1_checkpoint(v1, tmp_path / "model_final_checkpoint.model", fp16=True)
    arch, state = read_v1_checkpoint(path)
    v2 = arch.build(deep_supervision=True).eval()
    v2.load_state_dict(state, strict=True)
    x = torch.randn(*SMALL_INPUT)
    with torch.no_grad():
        ref, got = v1.eval()(x), v2(x)
    assert len(ref) == len(got) == 5
    diffs = [_max_diff(r, g) for r, g in zip(ref, got, strict=True)]
    print(f"max abs differences per head (full resolution first): {diffs}")
    assert max(diffs) <= TOLERANCE
    assert float(ref[0].abs().max()) > 0.1  # the outputs are not trivially small


def test_full_resolution_and_truncated_coarse_head_match_the_reference(tmp_path):
    torch.manual_seed(1)
    v1 = perturb(build_v1_unet(num_classes=4), seed=1)
    arch, state = read_v1_checkpoint(save_v1_checkpoint(v1, tmp_path / "coarse_model.pth"))
    plain = arch.build(deep_supervision=False).eval()
    plain.load_state_dict(state, strict=True)
    x = torch.randn(*SMALL_INPUT)
    with torch.no_grad():
        ref_heads = v1.eval()(x)
        v1.do_ds = False
        ref_full = v1(x)
        full = plain(x)
        coarse = TruncatedUNet(plain, 2, align_corners=True)(x)
    # the published coarse pass: third head (seg_outputs.2) upsampled x4, align_corners=True
    ref_coarse = F.interpolate(ref_heads[2], scale_factor=4, mode="trilinear", align_corners=True)
    print(f"max abs difference: full {_max_diff(ref_full, full)}, "
          f"truncated coarse {_max_diff(ref_coarse, coarse)}")
    assert _max_diff(ref_full, full) <= TOLERANCE
    assert _max_diff(ref_coarse, coarse) <= TOLERANCE
    assert _max_diff(ref_coarse, full) > 1e-2  # the coarse head is a different output


def test_a_wrong_mapping_would_be_caught(tmp_path):
    """Control: swapping two same-shaped v1 tensors changes the outputs far beyond tolerance."""
    torch.manual_seed(2)
    v1 = perturb(build_v1_unet(), seed=2).eval()
    state = dict(v1.state_dict())
    a, b = "conv_blocks_context.4.blocks.1.conv.weight", "conv_blocks_context.5.0.blocks.0.conv.weight"
    assert state[a].shape == state[b].shape
    state[a], state[b] = state[b], state[a]
    arch, converted = convert_v1_state_dict(state)
    v2 = arch.build().eval()
    v2.load_state_dict(converted)
    x = torch.randn(*SMALL_INPUT)
    with torch.no_grad():
        v1.do_ds = False
        assert _max_diff(v1(x), v2(x)) > 1e-2


def test_released_sizes_keys_and_shapes_on_meta():
    with torch.device("meta"):
        v1 = build_v1_unet(base=32, num_classes=15, max_features=None)
    state = v1.state_dict()
    assert set(state) == documented_keys()
    arch, converted = convert_v1_state_dict(state, released_arch(15))
    assert arch.features == RELEASED_FEATURES
    target = released_arch(15).build(deep_supervision=True, device="meta").state_dict()
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in target.items()}


def test_different_kernel_sizes_per_stage_are_refused(tmp_path):
    kernels = [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    v1 = build_v1_unet(kernels=kernels)
    # v1 really gives decoder stage 3 (skip from stage 1, kernel [1, 3, 3]) the kernel of stage 2
    assert tuple(v1.conv_blocks_localization[3][0].blocks[0].conv.weight.shape[2:]) == (3, 3, 3)
    path = save_v1_checkpoint(v1, tmp_path / "aniso.model")
    with pytest.raises(ConversionError, match="different kernel sizes") as err:
        read_v1_checkpoint(path)
    assert str(path) in str(err.value)


def test_model_folder_import_runs_like_the_reference(tmp_path):
    torch.manual_seed(3)
    v1 = perturb(build_v1_unet(base=2, num_classes=4, max_features=None), seed=3)
    fold = tmp_path / "nnUNetTrainerV2__nnUNetPlansv2.1" / "fold_0"
    fold.mkdir(parents=True)
    ckpt = save_v1_checkpoint(v1, fold / "model_final_checkpoint.model")
    write_pickle(v1_plans_info(base=2, num_classes=4), fold / "model_final_checkpoint.model.pkl")
    model = read_v1_model_folder(tmp_path / "nnUNetTrainerV2__nnUNetPlansv2.1", fold=0)
    assert model.sources[0] == ckpt and model.trainer == "nnUNetTrainerV2" and model.fold == "0"
    network = build_network(model.plans, model.configuration, model.num_classes, model.state_dict)
    x = torch.randn(*SMALL_INPUT)
    with torch.no_grad():
        v1.eval().do_ds = False
        diff = _max_diff(v1(x), network(x))
    print(f"max abs difference (model folder import): {diff}")
    assert diff <= TOLERANCE
