"""Weights manifests: writing, loading, hash verification, plans helpers, folder lookup."""

from __future__ import annotations

import hashlib
import json

import pytest

from c2fseg.weights import (
    WeightsError,
    check_input_orientation,
    find_weights_dir,
    load_manifest,
    stage_dir_for,
    write_manifest,
)
from infer.fake_models import CT_STATS, tiny_dataset_json, tiny_plans, write_fake_weights


def test_manifest_records_settings_and_hashes(tmp_path):
    plans = tiny_plans(spacing=(3.0, 2.0, 1.0), patch_size=(16, 32, 48), transpose_forward=(2, 0, 1))
    folder = write_fake_weights(tmp_path, "tumor", plans=plans)
    manifest = load_manifest(folder)
    assert manifest["stage"] == "tumor"
    assert manifest["input_orientation"] == "canonical-LPS"
    assert manifest["channel_labels"] == list(range(15))
    # plans values are in model order (axis i = canonical axis transpose_forward[i])
    assert manifest["spacing"] == [2.0, 1.0, 3.0]
    assert manifest["patch_size"] == [32, 48, 16]
    assert manifest["normalization"]["mean"] == CT_STATS["mean"]
    assert manifest["normalization"]["percentile_99_5"] == CT_STATS["percentile_99_5"]
    assert manifest["training_cases"] == ["case_a", "case_b"]
    assert manifest["inference"]["step"] == 0.5
    assert set(manifest["files"]) == {"plans.json", "dataset.json", "checkpoint_final.pth"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest


def test_check_input_orientation():
    check_input_orientation({"input_orientation": "canonical-LPS"})
    with pytest.raises(WeightsError, match="does not record the orientation.*c2fseg train tumor"):
        check_input_orientation({"stage": "tumor", "stage_dir": "/w/tumor"})
    with pytest.raises(WeightsError, match="'RAS' is not supported"):
        check_input_orientation({"input_orientation": "RAS"})


def test_hashes_are_cached_until_the_file_changes(tmp_path, monkeypatch):
    from c2fseg import fileutil, weights

    path = tmp_path / "f.bin"
    path.write_bytes(b"one")
    calls = []
    real = fileutil.sha256_file
    monkeypatch.setattr(fileutil, "sha256_file", lambda p: calls.append(p) or real(p))
    first = weights.sha256_file(path)
    assert weights.sha256_file(path) == first and len(calls) == 1
    path.write_bytes(b"other")
    assert weights.sha256_file(path) == hashlib.sha256(b"other").hexdigest() != first
    assert len(calls) == 2


def test_coarse_defaults_to_step_one_and_overrides_apply(tmp_path):
    assert load_manifest(write_fake_weights(tmp_path, "coarse"))["inference"]["step"] == 1.0
    folder = write_fake_weights(tmp_path / "b", "coarse", inference={"step": 0.8, "min_prob": 0.1})
    inference = load_manifest(folder)["inference"]
    assert (inference["step"], inference["min_prob"]) == (0.8, 0.1)


def test_tampered_byte_is_a_hash_error(tmp_path):
    folder = write_fake_weights(tmp_path, "organ")
    ckpt = folder / "checkpoint_final.pth"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checkpoint_final.pth.*SHA-256"):
        load_manifest(folder)
    load_manifest(folder, verify=False)  # presence checks only


def test_missing_folder_manifest_and_file_errors(tmp_path):
    with pytest.raises(WeightsError, match="c2fseg train organ"):
        load_manifest(tmp_path / "organ")
    folder = write_fake_weights(tmp_path, "organ")
    (folder / "dataset.json").unlink()
    with pytest.raises(WeightsError, match="dataset.json.*missing"):
        load_manifest(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(WeightsError, match="manifest.json is missing"):
        load_manifest(folder)


def test_write_manifest_refuses_dict_that_differs_from_file(tmp_path):
    folder = write_fake_weights(tmp_path, "organ")
    other = tiny_plans(spacing=(9.0, 9.0, 9.0))
    with pytest.raises(WeightsError, match="differs"):
        write_manifest(folder, stage="organ", configuration="3d_tiny", fold=0, plans=other,
                       dataset_json=tiny_dataset_json("organ"),
                       checkpoint_path=folder / "checkpoint_final.pth", training_cases=[], trainer="t")


def test_write_manifest_needs_checkpoint_inside_folder(tmp_path):
    folder = write_fake_weights(tmp_path, "organ")
    outside = tmp_path / "elsewhere.pth"
    outside.write_bytes((folder / "checkpoint_final.pth").read_bytes())
    with pytest.raises(WeightsError, match="must be inside"):
        write_manifest(folder, stage="organ", configuration="3d_tiny", fold=0,
                       plans=folder / "plans.json", dataset_json=folder / "dataset.json",
                       checkpoint_path=outside, training_cases=[], trainer="t")


def test_find_weights_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("C2FSEG_WEIGHTS", raising=False)
    assert find_weights_dir() == find_weights_dir(None) == type(tmp_path)("weights")
    monkeypatch.setenv("C2FSEG_WEIGHTS", str(tmp_path / "env"))
    assert find_weights_dir() == tmp_path / "env"
    assert find_weights_dir(tmp_path / "flag") == tmp_path / "flag"


def test_stage_dir_for_accepts_root_or_stage_folder(tmp_path):
    folder = write_fake_weights(tmp_path, "coarse")
    assert stage_dir_for(tmp_path, "coarse") == folder
    assert stage_dir_for(folder, "coarse") == folder
    assert json.loads((folder / "manifest.json").read_text())["stage"] == "coarse"
