"""nnU-Net v1 plans pickles (``.model.pkl``) and v1 model folders; no nnU-Net v1 needed."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from convert_support import random_v1_state, v1_plans_info, write_pickle

from c2fseg.convert import (
    ConversionError,
    V1Network,
    detect_format,
    read_v1_model_folder,
    read_v1_plans,
    v1_layout,
)
from c2fseg.convert.v1_keys import v2_name
from c2fseg.convert.v1_plans import _PlansUnpickler, v1_features
from c2fseg.infer.stage_loader import build_network
from c2fseg.plans import ct_statistics, resolve_configuration


def test_plans_pickle_gives_spacing_patch_statistics_order_and_network(tmp_path):
    info = v1_plans_info(patch=(64, 160, 224), spacing=(2.5, 1.25834116, 1.25834116),
                         transpose_forward=(0, 2, 1), base=32, num_classes=14)
    plans = read_v1_plans(write_pickle(info, tmp_path / "model_final_checkpoint.model.pkl"))
    assert plans.patch_size == (64, 160, 224)
    assert plans.spacing == pytest.approx((2.5, 1.25834116, 1.25834116))
    assert plans.ct_statistics == pytest.approx({
        "mean": 70.34444, "std": 82.539795, "percentile_00_5": -325.0, "percentile_99_5": 267.0,
        "median": 80.0, "min": -1024.0, "max": 3071.0})
    assert plans.transpose_forward == (0, 2, 1) and plans.transpose_backward == (0, 2, 1)
    arch = plans.architecture
    assert arch.features == (32, 64, 128, 256, 320, 320)
    assert arch.strides == ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2))
    assert arch.num_classes == 14 and arch.n_conv_per_stage == (2,) * 6
    assert plans.labels == tuple(range(14)) and plans.trainer == "nnUNetTrainerV2"
    assert isinstance(plans.spacing[0], float) and isinstance(plans.patch_size[0], int)


def test_bare_plans_pkl_and_second_stage_of_a_two_stage_plan(tmp_path):
    info = v1_plans_info(stages=2, stage=1)
    plans = read_v1_plans(write_pickle(info, tmp_path / "x.model.pkl"))
    assert plans.stage == 1 and plans.spacing == pytest.approx((2.5, 1.25, 1.25))
    bare = read_v1_plans(write_pickle(v1_plans_info()["plans"], tmp_path / "plans.pkl"))
    assert bare.stage == 0 and bare.trainer is None


def test_features_double_and_cap_like_v1():
    assert v1_features(32, 6) == (32, 64, 128, 256, 320, 320)
    assert v1_features(30, 7) == (30, 60, 120, 240, 320, 320, 320)


@pytest.mark.parametrize(("change", "message"), [
    ({"patch": (160, 224), "pools": [[2, 2]] * 5, "kernels": [[3, 3]] * 6}, "2-D"),
    ({"trainer": "nnUNetTrainerV2CascadeFullRes"}, "cascade"),
    ({"stages": 2, "stage": 0}, "3d_lowres"),
    ({"stages": 2, "stage": None}, "do not say which one"),
    ({"scheme": "nonCT"}, "normalisation 'nonCT'"),
    ({"modalities": 2}, "2 input channels"),
    ({"trainer": "nnUNetTrainerV2_ReLU"}, "LeakyReLU"),
    ({"trainer": "nnUNetTrainerV2_BN"}, "InstanceNorm"),
])
def test_what_cannot_be_converted_is_refused(tmp_path, change, message):
    path = write_pickle(v1_plans_info(**change), tmp_path / "m.model.pkl")
    with pytest.raises(ConversionError, match=message) as err:
        read_v1_plans(path)
    assert str(path) in str(err.value)


def test_missing_statistics_are_named(tmp_path):
    info = v1_plans_info()
    del info["plans"]["dataset_properties"]["intensityproperties"][0]["sd"]
    with pytest.raises(ConversionError, match="intensity statistics"):
        read_v1_plans(write_pickle(info, tmp_path / "m.model.pkl"))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch should_not_exist",))


def test_code_in_a_plans_pickle_is_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    info = v1_plans_info()
    info["plans"]["evil"] = _Exploit()
    path = write_pickle(info, tmp_path / "m.model.pkl")
    with pytest.raises(ConversionError, match="refusing to load"):
        read_v1_plans(path)
    assert not (tmp_path / "should_not_exist").exists()


def test_numpy_1_names_resolve(tmp_path):
    unpickler = _PlansUnpickler(open(write_pickle({}, tmp_path / "e.pkl"), "rb"))  # noqa: SIM115
    import numpy as np

    assert unpickler.find_class("numpy.core.multiarray", "_reconstruct") is np.ndarray.__reduce__(
        np.zeros(1))[0]
    with pytest.raises(pickle.UnpicklingError):
        unpickler.find_class("builtins", "eval")


def test_unreadable_or_missing_plans_name_the_file(tmp_path):
    bad = tmp_path / "m.model.pkl"
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(ConversionError, match="cannot read the nnU-Net v1 plans") as err:
        read_v1_plans(bad)
    assert str(bad) in str(err.value)
    with pytest.raises(ConversionError, match="copy that file too"):
        read_v1_plans(tmp_path / "absent.model.pkl")


def _v1_folder(tmp_path, info, state) -> tuple:
    fold = tmp_path / "nnUNetTrainerV2__nnUNetPlansv2.1" / "fold_2"
    fold.mkdir(parents=True)
    torch.save({"epoch": 1, "state_dict": state, "optimizer_state_dict": None}, fold / "model_final_checkpoint.model")
    write_pickle(info, fold / "model_final_checkpoint.model.pkl")
    return fold.parent, fold


def test_model_folder_becomes_v2_plans_and_weights(tmp_path):
    info = v1_plans_info(base=2, num_classes=3, transpose_forward=(2, 0, 1))
    arch = read_v1_plans(write_pickle(info, tmp_path / "p.pkl")).architecture
    state = random_v1_state(v1_layout(V1Network(arch)), seed=5)
    folder, fold = _v1_folder(tmp_path, info, state)
    assert detect_format(folder) == "nnU-Net v1"
    model = read_v1_model_folder(folder, fold=2)
    assert model.fold == "2" and model.source_format == "nnU-Net v1" and model.labels == (0, 1, 2)
    assert model.sources == (fold / "model_final_checkpoint.model", fold / "model_final_checkpoint.model.pkl")
    config = resolve_configuration(model.plans, model.configuration)
    assert config["patch_size"] == [16, 32, 64] and config["spacing"] == [2.5, 1.25, 1.25]
    assert model.plans["transpose_forward"] == [2, 0, 1] and model.plans["transpose_backward"] == [1, 2, 0]
    assert ct_statistics(model.plans, model.configuration)["std"] == pytest.approx(82.539795)
    assert model.dataset_json["labels"] == {"background": 0, "label_1": 1, "label_2": 2}
    net = build_network(model.plans, model.configuration, model.num_classes, model.state_dict)
    key = "conv_blocks_localization.2.1.blocks.0.conv.weight"
    assert torch.equal(net.state_dict()[v2_name(key, V1Network(arch))], state[key])
    # the checkpoint dict written for the stage loads weights-only and fits again
    path = tmp_path / "checkpoint_final.pth"
    torch.save(model.checkpoint(), path)
    build_network(model.plans, model.configuration, 3, torch.load(path, weights_only=True))


def test_model_folder_whose_weights_do_not_match_its_plans(tmp_path):
    info = v1_plans_info(base=2, num_classes=3)
    other = read_v1_plans(write_pickle(v1_plans_info(base=2, num_classes=4), tmp_path / "p.pkl"))
    folder, fold = _v1_folder(tmp_path, info, random_v1_state(v1_layout(V1Network(other.architecture))))
    with pytest.raises(ConversionError) as err:
        read_v1_model_folder(folder, fold=2)
    text = str(err.value)
    assert str(fold / "model_final_checkpoint.model") in text
    assert "wrong shape in 5 key(s): seg_outputs.0.weight is (4, 32, 1, 1, 1), expected (3, 32" in text
    assert "The file holds:" in text and "4 classes" in text


def test_missing_fold_lists_the_folds_there(tmp_path):
    info = v1_plans_info(base=2, num_classes=3)
    arch = read_v1_plans(write_pickle(info, tmp_path / "p.pkl")).architecture
    folder, _ = _v1_folder(tmp_path, info, random_v1_state(v1_layout(V1Network(arch))))
    with pytest.raises(ConversionError, match="it has fold_2") as err:
        read_v1_model_folder(folder, fold=0)
    assert "fold_0" in str(err.value) and "--fold" in str(err.value)
