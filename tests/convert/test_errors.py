"""Failure messages: missing, unreadable and mismatching checkpoints name the file and the fix."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from convert_support import random_v1_state, released_arch, small_arch

from c2fseg.convert import (
    ConversionError,
    V1Network,
    convert_v1_state_dict,
    read_checkpoint,
    read_v1_checkpoint,
    v1_layout,
)
from c2fseg.weights import WeightsError


def _v1_file(path, state, **extra):
    torch.save({"epoch": 1, "state_dict": state, "optimizer_state_dict": None, **extra}, path)
    return path


def _small_state(seed: int = 0, **kw) -> dict:
    return random_v1_state(v1_layout(V1Network(small_arch(**kw))), seed=seed)


def test_missing_file(tmp_path):
    path = tmp_path / "coarse_model.pth"
    with pytest.raises(ConversionError, match="not found") as err:
        read_v1_checkpoint(path)
    assert str(path) in str(err.value) and isinstance(err.value, WeightsError)
    with pytest.raises(ConversionError, match="not a file"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_file(tmp_path, damage):
    path = tmp_path / "tumor_model_1.pth"
    if damage == "garbage":
        path.write_bytes(b"<html>404 not found</html>")
    else:
        _v1_file(path, _small_state())
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ConversionError, match="cannot read the nnU-Net v1 checkpoint") as err:
        read_v1_checkpoint(path)
    assert str(path) in str(err.value) and "download it again" in str(err.value)


def test_not_a_checkpoint_dict(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ConversionError, match="holds a Tensor, not a checkpoint dict"):
        read_v1_checkpoint(path)
    torch.save({"model": {"w": torch.zeros(1)}}, path)
    with pytest.raises(ConversionError, match=r"no 'state_dict'.*keys are model"):
        read_v1_checkpoint(path)
    torch.save({"network_weights": {}, "trainer_name": "nnUNetTrainer"}, path)
    with pytest.raises(ConversionError, match="nnU-Net v2 checkpoint: import its results folder"):
        read_v1_checkpoint(path)
    torch.save({"state_dict": {"w": "not a tensor"}}, path)
    with pytest.raises(ConversionError, match="not a state dict of tensors") as err:
        read_v1_checkpoint(path)
    assert str(path) in str(err.value)


def test_missing_keys_are_listed_with_the_expected_network(tmp_path):
    state = random_v1_state(v1_layout(V1Network(released_arch(14))), device="meta")
    del state["conv_blocks_context.5.1.blocks.0.conv.weight"]
    del state["tu.3.weight"]
    path = tmp_path / "organ_model.pth"
    with pytest.raises(ConversionError) as err:
        convert_v1_state_dict(state, released_arch(14), source=str(path))
    text = str(err.value)
    assert text.startswith(str(path))
    assert "missing 2 key(s): conv_blocks_context.5.1.blocks.0.conv.weight, tu.3.weight" in text
    assert "features [32, 64, 128, 256, 320, 320]" in text and "14 classes" in text
    assert "Fix:" in text


def test_wrong_class_count_is_a_shape_mismatch_naming_what_the_file_holds(tmp_path):
    state = random_v1_state(v1_layout(V1Network(small_arch(num_classes=15))))
    path = _v1_file(tmp_path / "coarse_model.pth", state)
    with pytest.raises(ConversionError) as err:
        read_v1_checkpoint(path, small_arch(num_classes=14))
    text = str(err.value)
    assert "wrong shape in 5 key(s): seg_outputs.0.weight is (15, 24, 1, 1, 1), expected (14, 24, 1, 1, 1)" in text
    assert "more)" not in text  # all five listed
    assert "The file holds:" in text and "15 classes" in text


def test_unexpected_and_unknown_keys(tmp_path):
    state = _small_state()
    state["conv_blocks_context.0.blocks.0.instnorm.running_mean"] = torch.zeros(4)
    path = _v1_file(tmp_path / "bn.model", state)
    with pytest.raises(ConversionError, match="batch norm") as err:
        read_v1_checkpoint(path)
    assert str(path) in str(err.value)
    state = _small_state()
    state["extra_head.weight"] = torch.zeros(2)
    with pytest.raises(ConversionError, match="not part of nnU-Net v1's Generic_UNet: extra_head.weight"):
        read_v1_checkpoint(_v1_file(tmp_path / "x.model", state))
    with pytest.raises(ConversionError, match="unexpected 1 key"):
        read_v1_checkpoint(_v1_file(tmp_path / "y.model", state), small_arch())


def test_2d_networks_are_refused(tmp_path):
    state = {k: v[..., 0] if v.dim() == 5 else v for k, v in _small_state().items()}
    with pytest.raises(ConversionError, match="2-D network"):
        read_v1_checkpoint(_v1_file(tmp_path / "2d.model", state))


def test_checkpoint_with_numpy_logs_loads_without_full_unpickling(tmp_path, monkeypatch):
    path = _v1_file(tmp_path / "m.model", _small_state(),
                    plot_stuff=([0.5], [np.float64(0.4)], [], [np.float32(0.7)]),
                    best_stuff=(1, np.float64(0.2), np.array([0.1, 0.2])))
    real_load = torch.load

    def weights_only_load(*args, **kwargs):
        assert kwargs.get("weights_only") is True, "fell back to full unpickling"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", weights_only_load)
    arch, _ = read_v1_checkpoint(path)
    assert arch == small_arch()


class Custom:  # a Python object a weights-only load refuses
    pass


def test_other_objects_fall_back_to_full_unpickling_with_a_warning(tmp_path, caplog):
    path = _v1_file(tmp_path / "m.model", _small_state(), extra=Custom())
    with caplog.at_level(logging.WARNING, logger="c2fseg.convert.checkpoint"):
        arch, _ = read_v1_checkpoint(path)
    assert arch == small_arch()
    assert "unpickling it fully" in caplog.text and str(path) in caplog.text
