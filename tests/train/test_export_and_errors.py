"""Export safety (weights/<stage>.previous), exit codes and input checks of `c2fseg train` (fast)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from c2fseg.train import run as train_run
from c2fseg.train.run import TrainingError, TrainingInputError, check_export_target, export_stage


def _fake_run(root: Path, seed: int) -> dict:
    """A finished nnU-Net run folder (plans, dataset.json, checkpoint_final.pth) without training."""
    import torch
    from test_plans import _plans

    from c2fseg.data.stage_dataset import stage_dataset_json
    from c2fseg.train.plans import add_stage_configuration, resolve_settings

    plans = add_stage_configuration(_plans(), "coarse", resolve_settings("coarse", "tiny"))
    plans["foreground_intensity_properties_per_channel"]["0"].update(
        {"percentile_00_5": -900.0, "percentile_99_5": 400.0})
    run_dir = root / f"run{seed}" / "fold_all"
    if run_dir.is_dir():
        return {"output_folder": str(run_dir)}
    run_dir.mkdir(parents=True)
    (run_dir.parent / "plans.json").write_text(json.dumps(plans))
    (run_dir.parent / "dataset.json").write_text(json.dumps(stage_dataset_json("coarse", 2)))
    torch.manual_seed(seed)
    torch.save({"network_weights": {"w": torch.randn(3)}, "current_epoch": seed,
                "trainer_name": "C2fsegTrainer"}, run_dir / "checkpoint_final.pth")
    return {"output_folder": str(run_dir)}


def _export(tmp_path: Path, weights: Path, seed: int) -> Path:
    return export_stage(_fake_run(tmp_path, seed), weights, "coarse", "all", ["a", "b"], "rawhash",
                        {"c": "empty coarse target"})


def _epoch(folder: Path) -> int:
    import torch

    return int(torch.load(folder / "checkpoint_final.pth", weights_only=True)["current_epoch"])


def test_export_keeps_the_previous_export(tmp_path, capsys):
    from c2fseg.weights import load_manifest

    weights = tmp_path / "weights"
    out = _export(tmp_path, weights, 1)
    manifest = load_manifest(out)
    assert manifest["training_cases"] == ["a", "b"]
    assert manifest["input_orientation"] == "canonical-LPS"  # written by c2fseg.weights.write_manifest
    assert manifest["extra"]["skipped_cases"] == {"c": "empty coarse target"}
    assert not (weights / "coarse.previous").exists()

    _export(tmp_path, weights, 2)
    assert _epoch(weights / "coarse") == 2 and _epoch(weights / "coarse.previous") == 1
    load_manifest(weights / "coarse.previous")  # moved intact
    assert f"moved to {weights / 'coarse.previous'}" in capsys.readouterr().out

    # re-exporting the same checkpoint replaces it in place: the real previous export stays
    _export(tmp_path, weights, 2)
    assert _epoch(weights / "coarse") == 2 and _epoch(weights / "coarse.previous") == 1

    # an older .previous written by c2fseg is replaced by the current export
    _export(tmp_path, weights, 3)
    assert _epoch(weights / "coarse") == 3 and _epoch(weights / "coarse.previous") == 2
    assert sorted(p.name for p in weights.iterdir()) == ["coarse", "coarse.previous"]  # no temp folders left


def test_foreign_weights_are_moved_not_deleted(tmp_path):
    weights = tmp_path / "weights"
    (weights / "coarse").mkdir(parents=True)
    (weights / "coarse" / "published.pth").write_text("someone else's model")
    _export(tmp_path, weights, 1)
    assert (weights / "coarse.previous" / "published.pth").read_text() == "someone else's model"
    assert _epoch(weights / "coarse") == 1


def test_foreign_previous_folder_is_never_replaced(tmp_path):
    weights = tmp_path / "weights"
    _export(tmp_path, weights, 1)
    (weights / "coarse.previous").mkdir()
    (weights / "coarse.previous" / "mine.txt").write_text("keep me")
    with pytest.raises(TrainingInputError, match="coarse.previous exists and is not an intact c2fseg export"):
        check_export_target(weights, "coarse")
    with pytest.raises(TrainingInputError, match="Move or delete"):
        _export(tmp_path, weights, 2)
    assert (weights / "coarse.previous" / "mine.txt").read_text() == "keep me"
    assert _epoch(weights / "coarse") == 1
    assert sorted(p.name for p in weights.iterdir()) == ["coarse", "coarse.previous"]


def test_damaged_previous_export_counts_as_foreign(tmp_path):
    weights = tmp_path / "weights"
    _export(tmp_path, weights, 1)
    _export(tmp_path, weights, 2)
    (weights / "coarse.previous" / "plans.json").write_text("{}")  # hash no longer matches
    with pytest.raises(TrainingInputError):
        check_export_target(weights, "coarse")


def test_train_refuses_before_any_work_when_previous_is_foreign(tmp_path):
    from train_support import make_dataset, make_splits

    data = make_dataset(tmp_path / "data", full=2)
    splits = make_splits(data, tmp_path / "splits.json")
    weights = tmp_path / "weights"
    (weights / "coarse").mkdir(parents=True)
    (weights / "coarse.previous").mkdir()
    with pytest.raises(TrainingInputError, match="coarse.previous"):
        train_run.train_stage("coarse", data, splits, tmp_path / "work", weights, config="tiny")
    assert not (tmp_path / "work" / "nnUNet_raw").exists()


# ----------------------------------------------------------------------------- input errors


@pytest.fixture
def small(tmp_path):
    from train_support import make_dataset, make_splits

    data = make_dataset(tmp_path / "data", full=2)
    return data, make_splits(data, tmp_path / "splits.json")


def test_bad_fold_and_settings_are_input_errors(small, tmp_path):
    data, splits = small
    with pytest.raises(TrainingInputError, match=r"fold 7 does not exist: the splits have 2 folds"):
        train_run.train_stage("coarse", data, splits, tmp_path / "w", tmp_path / "wt", fold=7, config="tiny")
    with pytest.raises(TrainingInputError, match="spacing must be three positive"):
        train_run.train_stage("coarse", data, splits, tmp_path / "w", tmp_path / "wt", config="tiny",
                              overrides={"spacing": (1.0, 0.0, 1.0)})
    with pytest.raises(TrainingInputError, match="unknown training config"):
        train_run.train_stage("coarse", data, splits, tmp_path / "w", tmp_path / "wt", config="huge")
    with pytest.raises(TrainingInputError, match="does not exist"):
        train_run.train_stage("coarse", tmp_path / "nodata", splits, tmp_path / "w", tmp_path / "wt")


def test_folds_leave_out_skipped_cases():
    splits = {"stages": {"organ": {"folds": [{"train": ["a", "b"], "val": ["c"]},
                                              {"train": ["a", "c"], "val": ["b"]}]}}}
    assert train_run.nnunet_folds(splits, "organ", {"a", "b"}) == [{"train": ["a", "b"], "val": []},
                                                                  {"train": ["a"], "val": ["b"]}]
    assert train_run._fold_lists(splits, "organ", 1, {"a", "b"})[1] == {"train": ["a"], "val": ["b"]}
    with pytest.raises(TrainingInputError, match="fold 0 of the organ stage has no val case left"):
        train_run._fold_lists(splits, "organ", 0, {"a", "b"})


@pytest.mark.parametrize(("returncode", "write_result", "error", "message"), [
    (2, False, TrainingInputError, "stopped"),
    (1, False, TrainingError, "exit code 1"),
    (-9, False, TrainingError, "exit code -9"),
    (0, False, TrainingError, "without a readable"),
    (0, True, None, None),
])
def test_worker_outcomes(tmp_path, monkeypatch, returncode, write_result, error, message):
    job = {"stage": "coarse"}

    def fake_run(cmd, env):
        if write_result:
            (tmp_path / "result.json").write_text(json.dumps({"result": {"output_folder": "x"}}))
        return subprocess.CompletedProcess(cmd, returncode)

    monkeypatch.setattr(train_run.subprocess, "run", fake_run)
    if error is None:
        assert train_run._run_worker(job, tmp_path) == {"output_folder": "x"}
        return
    with pytest.raises(error, match=message) as exc:
        train_run._run_worker(job, tmp_path)
    assert (exc.type is TrainingInputError) == (error is TrainingInputError)


@pytest.mark.parametrize(("exc", "code"), [
    (TrainingError("the training worker failed with exit code 1"), 1),
    (TrainingInputError("fold 9 does not exist"), 2),
    ("stage_dataset", 2),
])
def test_cli_exit_codes(tmp_path, monkeypatch, capsys, exc, code):
    from c2fseg.cli import main
    from c2fseg.data.stage_dataset import StageDatasetError

    if exc == "stage_dataset":
        exc = StageDatasetError("cannot build the coarse training set")

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(train_run, "train_stage", fail)
    (tmp_path / "splits.json").write_text("{}")
    rc = main(["train", "coarse", "--data", str(tmp_path), "--splits", str(tmp_path / "splits.json"),
               "--work", str(tmp_path / "w")])
    assert rc == code
    assert str(exc) in capsys.readouterr().err


def test_cli_lets_unexpected_errors_through(tmp_path, monkeypatch):
    """A bug (e.g. a ValueError deep inside) is not reported as a usage error."""
    from c2fseg.cli import main

    def fail(*args, **kwargs):
        raise ValueError("internal")

    monkeypatch.setattr(train_run, "train_stage", fail)
    (tmp_path / "splits.json").write_text("{}")
    with pytest.raises(ValueError, match="internal"):
        main(["train", "coarse", "--data", str(tmp_path), "--splits", str(tmp_path / "splits.json"),
              "--work", str(tmp_path / "w")])


def test_help_explains_folds_pseudo_labels_and_previous(capsys):
    from c2fseg.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0-4" not in text and "c2fseg split --folds" in text
    assert "ignored for the coarse stage" in text and "<case>_0000.nii.gz" in text
    assert "<stage>.previous/" in text and "Exit codes" in text


def test_pseudo_label_inputs_keep_their_extension(tmp_path):
    data = tmp_path / "data"
    (data / "imagesTr").mkdir(parents=True)
    (data / "imagesTr" / "a_0000.mha").write_text("x")
    (data / "imagesTr" / "b_0000.nii.gz").write_text("x")
    splits = {"cases": {"a": {"image": "imagesTr/a_0000.mha"}, "b": {"image": "imagesTr/b_0000.nii.gz"}}}
    out = train_run._link_images(data, ["a", "b"], splits, tmp_path / "links")
    assert sorted(p.name for p in out.iterdir()) == ["a_0000.mha", "b_0000.nii.gz"]
    assert (out / "a_0000.mha").resolve() == (data / "imagesTr" / "a_0000.mha").resolve()


def test_worker_exits_2_for_a_device_it_does_not_have(tmp_path, monkeypatch, capsys):
    import torch

    from c2fseg.train import worker

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setattr(worker.nnenv, "configure_nnunet", lambda *args: None)
    monkeypatch.setattr(worker, "plan_and_preprocess", lambda job: pytest.fail("planned before the device check"))
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"work_dir": str(tmp_path), "num_processes": 1, "device": "cuda", "num_gpus": 1}))
    assert worker.main([str(job)]) == 2
    assert "no usable CUDA GPU" in capsys.readouterr().err
    assert worker._device("cpu") == torch.device("cpu")
