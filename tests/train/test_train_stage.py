"""End-to-end tiny training on synthetic volumes: export, resume, killed-run resume, CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from c2fseg.train.run import TrainingError, train_stage

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FAST = {"iters_per_epoch": 3}


def _results_dir(work: Path) -> Path:
    return work / "nnUNet_results" / "Dataset901_c2fsegCoarse" / "C2fsegTrainer__nnUNetPlans__c2fseg_coarse" / "fold_all"


def _logs(work: Path) -> str:
    return "".join(p.read_text() for p in sorted(_results_dir(work).glob("training_log_*.txt")))


def _epochs(ckpt: Path) -> int:
    """Epochs recorded in a checkpoint; exported ones must load with weights_only=True."""
    import torch

    exported = ckpt.parent.name == "coarse"
    return int(torch.load(ckpt, map_location="cpu", weights_only=exported)["current_epoch"])


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """6 tiny cases trained for 1 epoch (planning is the slow part, so it is shared)."""
    from train_support import make_dataset, make_splits

    root = tmp_path_factory.mktemp("tiny")
    data = make_dataset(root / "data", full=6)
    splits = make_splits(data, root / "splits.json")
    out = train_stage("coarse", data, splits, root / "work", root / "weights", config="tiny",
                      overrides={"epochs": 1, **FAST})
    return data, splits, root, out


def _copy_run(root: Path, dest: Path) -> tuple[Path, Path]:
    shutil.copytree(root / "work", dest / "work", symlinks=True)
    shutil.copytree(root / "weights", dest / "weights")
    return dest / "work", dest / "weights"


def test_tiny_train_exports_then_resumes(trained_once, tmp_path):
    from c2fseg.weights import load_manifest

    data, splits, root, out = trained_once
    assert out == root / "weights" / "coarse"
    work, weights = _copy_run(root, tmp_path)
    out = weights / "coarse"
    manifest = load_manifest(out)  # verifies every file hash
    assert manifest["stage"] == "coarse" and manifest["configuration"] == "c2fseg_coarse"
    assert manifest["channel_labels"] == list(range(14))
    assert sorted(manifest["training_cases"]) == sorted(p.name[:-12] for p in (data / "imagesTr").iterdir())
    assert _epochs(out / "checkpoint_final.pth") == 1
    plans = json.loads((out / "plans.json").read_text())
    arch = plans["configurations"]["c2fseg_coarse"]["architecture"]["arch_kwargs"]
    assert arch["features_per_stage"] == [8, 16, 32, 64]
    stamp = work / "nnUNet_preprocessed" / "Dataset901_c2fsegCoarse" / "c2fseg_stamp.json"
    stamp_mtime = stamp.stat().st_mtime_ns

    # re-run with 2 epochs: continues from the final checkpoint of the first run (epoch 1)
    train_stage("coarse", data, splits, work, weights, config="tiny", overrides={"epochs": 2, **FAST})
    assert _epochs(weights / "coarse" / "checkpoint_final.pth") == 2
    assert "resuming from checkpoint_final.pth at epoch 1" in _logs(work)
    assert _logs(work).count(": Epoch 0 \n") == 1 and _logs(work).count(": Epoch 1 \n") == 1
    assert stamp.stat().st_mtime_ns == stamp_mtime  # planning/preprocessing skipped
    assert load_manifest(weights / "coarse")["extra"]["epochs"] == 2
    assert load_manifest(weights / "coarse.previous")["extra"]["epochs"] == 1  # kept, not deleted

    # a different network cannot continue that checkpoint: clear error, previous export kept
    with pytest.raises(TrainingError):
        train_stage("coarse", data, splits, work, weights, config="tiny",
                    overrides={"epochs": 3, "features": 16, **FAST})
    assert _epochs(weights / "coarse" / "checkpoint_final.pth") == 2


def test_killed_run_resumes_from_latest_checkpoint(trained_once, tmp_path, monkeypatch, capsys):
    """A worker killed right after a checkpoint (killing_worker.py) fails the command with exit 1;
    the same command then resumes from that checkpoint and finishes."""
    from c2fseg.cli import main
    from c2fseg.train import run

    data, splits, root, _ = trained_once
    work, weights = _copy_run(root, tmp_path)
    shutil.rmtree(weights)
    args = ["coarse", "--data", str(data), "--splits", str(splits), "--work", str(work),
            "--weights", str(weights), "--tiny", "--epochs", "4", "--iters-per-epoch", "3", "--device", "cpu"]
    with monkeypatch.context() as m:
        m.setattr(run, "WORKER_MODULE", "killing_worker")
        m.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
        assert main(["train", *args]) == 1
    assert f"exit code {-signal.SIGKILL}" in capsys.readouterr().err
    latest = _results_dir(work) / "checkpoint_latest.pth"
    assert not (weights / "coarse").exists()
    killed_at = _epochs(latest)
    assert killed_at == 2  # the copied run had finished epoch 0; killed after saving epoch 1

    assert main(["train", *args]) == 0
    assert _epochs(weights / "coarse" / "checkpoint_final.pth") == 4
    assert "resuming from checkpoint_latest.pth at epoch 2" in _logs(work)


def test_run_training_script_is_the_train_command():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, str(REPO / "run_training.py"), "--help"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--pseudo-labels" in proc.stdout and "--iters-per-epoch" in proc.stdout


def test_tumor_stage_needs_coarse_weights_or_pseudo_labels(tmp_path):
    from train_support import make_dataset, make_splits

    data = make_dataset(tmp_path / "data", full=2, tumor=2)
    splits = make_splits(data, tmp_path / "splits.json")
    with pytest.raises(TrainingError, match="train the coarse stage first"):
        train_stage("tumor", data, splits, tmp_path / "work", tmp_path / "weights", config="tiny")


def test_cli_help_and_bad_fold(tmp_path, capsys):
    from c2fseg.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    assert "--pseudo-labels" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["train", "coarse", "--data", str(tmp_path), "--splits", str(tmp_path), "--work", "w",
              "--fold", "x"])
    assert exc.value.code == 2
