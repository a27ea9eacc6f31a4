"""Weights manifests: writing, loading, hash verification, plans helpers, folder lookup."""

from __future__ import annotations

import hashlib
import json
import shutil

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
    assert check_input_orientation({"input_orientation": "as-stored"}) == "as-stored"
    assert check_input_orientation({"input_orientation": "canonical-LPS"}) == "canonical-LPS"


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


@pytest.fixture(scope="module")
def stage_folders(tmp_path_factory):
    """One intact stage folder per stage (copy it before changing it)."""
    root = tmp_path_factory.mktemp("weights")
    return {stage: write_fake_weights(root, stage) for stage in ("coarse", "organ", "tumor")}


def _edit_manifest(folder, change):
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_manifest_holds_every_inference_setting_of_its_stage(tmp_path):
    from c2fseg.settings import inference_defaults

    for stage in ("coarse", "organ", "tumor"):
        written = json.loads((write_fake_weights(tmp_path / stage, stage) / "manifest.json").read_text())
        assert written["format"] == 2
        assert written["inference"] == inference_defaults(stage)
    assert inference_defaults("coarse")["roi_margin_mm"] == [20.0, 20.0, 20.0]
    assert inference_defaults("organ")["keep_largest"] == list(range(1, 14))
    assert inference_defaults("tumor")["tumor_combination"] == "mean_probability"


def test_a_stage_folder_can_carry_its_own_value_for_every_setting(tmp_path):
    own = {"coarse": {"step": 0.7, "weighting": "gaussian", "mirror": True, "min_prob": 0.1,
                      "roi_rule": "c2fseg", "roi_margin_mm": 12.5, "max_liver_gap_mm": 80},
           "organ": {"step": 0.25, "keep_largest": [3, 1, 1]},
           "tumor": {"tumor_threshold": 0.4, "tumor_combination": "mean_probability"}}
    for stage, values in own.items():
        inference = load_manifest(write_fake_weights(tmp_path / stage, stage, inference=values))["inference"]
        for key, value in values.items():
            expected = {"roi_margin_mm": [12.5] * 3, "max_liver_gap_mm": 80.0, "keep_largest": [1, 3]}
            assert inference[key] == expected.get(key, value), (stage, key)


def test_old_manifest_without_the_new_settings_loads_with_defaults(tmp_path):
    folder = write_fake_weights(tmp_path, "coarse", inference={"min_prob": 0.2})

    def as_format_1(manifest):  # what c2fseg wrote before the inference section held every setting
        manifest["format"] = 1
        manifest["inference"] = {k: manifest["inference"][k] for k in ("step", "weighting", "mirror", "min_prob")}

    _edit_manifest(folder, as_format_1)
    inference = load_manifest(folder)["inference"]
    assert inference["min_prob"] == 0.2 and inference["step"] == 1.0
    assert inference["roi_margin_mm"] == [20.0, 20.0, 20.0] and inference["max_liver_gap_mm"] == 100.0
    _edit_manifest(folder, lambda m: m.pop("inference"))
    assert load_manifest(folder)["inference"]["min_prob"] == 0.0


@pytest.mark.parametrize("stage, key, value, message", [
    ("organ", "tile_overlap", 0.5, "'tile_overlap' is not an inference setting of the organ stage"),
    ("organ", "roi_margin_mm", 10, "'roi_margin_mm' is not an inference setting of the organ stage"),
    ("coarse", "decoder_stages", 0, "decoder_stages must be null or a whole number >= 1"),
    ("organ", "max_inplane_voxels", 8, "max_inplane_voxels must be null or a whole number >= 16"),
    ("coarse", "delete_labels", [7, 14], r"\[14\] are not labels of the coarse stage"),
    ("tumor", "align_corners", "yes", "align_corners must be true or false"),
    ("organ", "max_centroid_distance_voxels", 50, "not an inference setting of the organ stage"),
    ("coarse", "max_centroid_distance_voxels", 0, "must be null or > 0"),
    ("coarse", "roi_rule", "nearest", "roi_rule must be one of 'c2fseg', 'published'"),
    ("tumor", "tumor_combination", "max", "tumor_combination must be one of"),
    ("organ", "average", "median", "average must be one of 'logits', 'probabilities'"),
    ("organ", "tile_rule", "even", "tile_rule must be one of 'stride', 'span'"),
    ("coarse", "weighting", "hann", "weighting must be one of 'uniform', 'gaussian'"),
    ("organ", "step", 0.0, r"step must be in \(0, 1\]"),
    ("organ", "min_prob", 1.0, r"min_prob must be in \[0, 1\)"),
    ("organ", "mirror", "yes", "mirror must be true or false"),
    ("organ", "keep_largest", [14], r"\[14\] are not labels of the organ stage"),
    ("coarse", "roi_margin_mm", [1, 2], "one number or three"),
    ("tumor", "tumor_threshold", -0.1, "tumor_threshold must be in"),
])
def test_unknown_reserved_or_bad_settings_in_a_manifest_are_refused(stage_folders, tmp_path, stage, key,
                                                                     value, message):
    folder = shutil.copytree(stage_folders[stage], tmp_path / stage)
    with pytest.raises(WeightsError, match=message):
        write_manifest(folder, stage=stage, configuration="3d_tiny", fold=0, plans=folder / "plans.json",
                       dataset_json=folder / "dataset.json", checkpoint_path=folder / "checkpoint_final.pth",
                       training_cases=[], trainer="t", inference={key: value})
    _edit_manifest(folder, lambda m: m["inference"].update({key: value}))
    with pytest.raises(WeightsError, match=f"manifest.json: inference settings: .*{message}"):
        load_manifest(folder)


def test_unknown_top_level_keys_warn_and_newer_formats_are_refused(tmp_path):
    folder = write_fake_weights(tmp_path, "organ")
    _edit_manifest(folder, lambda m: m.update({"notes": "trained on site A"}))
    with pytest.warns(UserWarning, match=r"ignoring unknown manifest keys \['notes'\].*extra"):
        manifest = load_manifest(folder)
    assert manifest["stage"] == "organ"
    _edit_manifest(folder, lambda m: m.update({"format": 3}))
    with pytest.raises(WeightsError, match="manifest format 3, newer than this c2fseg"):
        load_manifest(folder)
