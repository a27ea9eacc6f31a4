"""nnU-Net v2 results folders made by nnU-Net's own trainer, read back and rebuilt by c2fseg."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from convert_support import v2_dataset_json, v2_plans

from c2fseg.convert import ConversionError, detect_format, read_v2_results_folder
from c2fseg.infer.stage_loader import build_network
from nnunet_folders import nnunet_results_folder

CONFIG = "3d_fullres"


@pytest.fixture(scope="module")
def results_folder(tmp_path_factory):
    """``Dataset902_Convert/nnUNetTrainer__nnUNetPlans__3d_fullres`` written by nnUNetTrainer."""
    return nnunet_results_folder(tmp_path_factory.mktemp("nnunet"), v2_plans(), v2_dataset_json(), seed=4)


def _nnunet_network(folder, fold="0") -> torch.nn.Module:
    """The network nnU-Net's own predictor builds and loads from the folder."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device("cpu"), perform_everything_on_device=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(fold,))
    return predictor.network.eval()


def test_rebuilt_network_computes_what_nnunet_loads(results_folder):
    model = read_v2_results_folder(results_folder, fold=0)
    assert model.configuration == CONFIG and model.trainer == "nnUNetTrainer" and model.fold == "0"
    assert model.labels == (0, 1, 2) and model.source_format == "nnU-Net v2"
    assert model.sources[-1] == results_folder / "fold_0" / "checkpoint_final.pth"
    assert detect_format(results_folder) == "nnU-Net v2"
    ours = build_network(model.plans, model.configuration, model.num_classes, model.state_dict)
    theirs = _nnunet_network(results_folder)
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    diff = float((a - b).abs().max())
    print(f"max abs difference against nnUNetPredictor's network: {diff}")
    assert a.shape == (1, 3, 16, 32, 32) and diff <= 1e-6 and float(a.abs().max()) > 0.1


def test_fold_all(results_folder, tmp_path):
    folder = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.copytree(results_folder, folder)
    (folder / "fold_0").rename(folder / "fold_all")
    model = read_v2_results_folder(folder, fold="all")
    assert model.fold == "all"
    with pytest.raises(ConversionError, match="it has fold_all"):
        read_v2_results_folder(folder, fold=0)


def _folder_with(tmp_path, plans=None, dataset_json=None, configuration=CONFIG, state=None):
    """A results folder with edited plans/dataset.json and a checkpoint for ``configuration``."""
    folder = tmp_path / f"nnUNetTrainer__nnUNetPlans__{configuration}"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans or v2_plans()))
    (folder / "dataset.json").write_text(json.dumps(dataset_json or v2_dataset_json()))
    torch.save({"network_weights": state or {}, "init_args": {"configuration": configuration},
                "trainer_name": "nnUNetTrainer"}, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def _with_config(name: str, **changes) -> dict:
    plans = v2_plans()
    config = copy.deepcopy(plans["configurations"][CONFIG])
    config.update(changes)
    plans["configurations"][name] = config
    return plans


@pytest.mark.parametrize(("name", "changes", "message"), [
    ("3d_lowres", {"next_stage": ["3d_cascade_fullres"]}, "low-resolution first stage of an nnU-Net cascade"),
    ("3d_cascade_fullres", {"previous_stage": "3d_lowres"}, "full-resolution stage of an nnU-Net cascade"),
    ("2d", {"patch_size": [32, 32]}, "is 2-D"),
])
def test_cascades_and_2d_configurations_are_refused(tmp_path, name, changes, message):
    folder = _folder_with(tmp_path, _with_config(name, **changes), configuration=name)
    with pytest.raises(ConversionError, match=message) as err:
        read_v2_results_folder(folder)
    assert str(folder / "plans.json") in str(err.value)


def test_residual_encoder_and_other_networks_are_refused(tmp_path):
    plans = v2_plans()
    arch = plans["configurations"][CONFIG]["architecture"]
    arch["network_class_name"] = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    with pytest.raises(ConversionError, match="residual-encoder U-Net"):
        read_v2_results_folder(_folder_with(tmp_path / "a", plans))
    arch["network_class_name"] = "my_package.MyNet"
    with pytest.raises(ConversionError, match="network class my_package.MyNet"):
        read_v2_results_folder(_folder_with(tmp_path / "b", plans))


@pytest.mark.parametrize(("dataset_json", "message"), [
    (v2_dataset_json(labels={"background": 0, "whole": [1, 2], "core": 2}), "trained on regions"),
    (v2_dataset_json(channels={"0": "CT", "1": "PET"}), "2 input channels"),
])
def test_regions_and_several_channels_are_refused(tmp_path, dataset_json, message):
    if "whole" in dataset_json["labels"]:
        dataset_json["regions_class_order"] = [1, 2]
    folder = _folder_with(tmp_path, dataset_json=dataset_json)
    with pytest.raises(ConversionError, match=message) as err:
        read_v2_results_folder(folder)
    assert str(folder / "dataset.json") in str(err.value)


def test_other_normalisation_is_refused(tmp_path):
    plans = v2_plans()
    plans["configurations"][CONFIG]["normalization_schemes"] = ["ZScoreNormalization"]
    with pytest.raises(ConversionError, match="CTNormalization"):
        read_v2_results_folder(_folder_with(tmp_path, plans))


def test_weights_that_do_not_fit_the_plans(results_folder, tmp_path):
    state = torch.load(results_folder / "fold_0" / "checkpoint_final.pth", weights_only=False)["network_weights"]
    plans = v2_plans(features=(4, 8, 12))
    folder = _folder_with(tmp_path, plans, state=state)
    with pytest.raises(ConversionError) as err:
        read_v2_results_folder(folder)
    text = str(err.value)
    assert str(folder / "fold_0" / "checkpoint_final.pth") in text
    assert "wrong shape in" in text and "features [4, 8, 12]" in text and "Fix:" in text


def test_missing_files_and_wrong_configuration(results_folder, tmp_path):
    with pytest.raises(ConversionError, match="results folder not found"):
        read_v2_results_folder(tmp_path / "nothing")
    folder = tmp_path / "copy"
    shutil.copytree(results_folder, folder)
    with pytest.raises(ConversionError, match="trained as configuration '3d_fullres', not '3d_lowres'"):
        read_v2_results_folder(folder, configuration="3d_lowres")
    (folder / "plans.json").unlink()
    with pytest.raises(ConversionError, match="plans.json not found") as err:
        read_v2_results_folder(folder)
    assert str(folder / "plans.json") in str(err.value)


def test_v1_checkpoint_in_a_v2_folder(tmp_path):
    folder = _folder_with(tmp_path)
    torch.save({"state_dict": {}, "epoch": 1}, folder / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(ConversionError, match="nnU-Net v1 trainer checkpoint: import it as nnU-Net v1"):
        read_v2_results_folder(folder)


def test_two_names_of_one_tensor_must_agree(results_folder, tmp_path):
    state = torch.load(results_folder / "fold_0" / "checkpoint_final.pth", weights_only=False)["network_weights"]
    state["decoder.encoder.stages.1.0.convs.0.conv.weight"] = state[
        "encoder.stages.1.0.convs.0.conv.weight"] + 1.0
    with pytest.raises(ConversionError, match="differs from encoder.stages.1.0.convs.0.conv.weight"):
        read_v2_results_folder(_folder_with(tmp_path, state=state))
