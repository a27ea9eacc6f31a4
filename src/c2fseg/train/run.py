"""Train one cascade stage end to end: dataset, plans, nnU-Net training, exported weights.

``train_stage`` is the API behind ``c2fseg train`` and ``run_training.py``. Work folder layout::

    WORK/nnUNet_raw/Dataset90X_c2fseg<Stage>/      stage dataset (canonical, z-cropped)
    WORK/nnUNet_preprocessed/Dataset90X_.../       plans (with the c2fseg_<stage> configuration)
    WORK/nnUNet_results/Dataset90X_.../            checkpoints and logs (resumed on re-run)
    WORK/pseudo_labels/coarse-<checkpoint hash>/   coarse-model pseudo labels (reused)
    WORK/jobs/<stage>/                              job and result files of the worker process

Every step is skipped when its output is up to date, so re-running a command continues where
it stopped. The nnU-Net part runs in a separate process (``c2fseg.train.worker``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from c2fseg.labels import check_stage
from c2fseg.train import plans as stage_plans


class TrainingError(RuntimeError):
    """Training could not run; the message says why and what to do."""


def stage_cases(splits: dict, stage: str) -> list[str]:
    """Training cases of ``stage`` in a splits document (``c2fseg split``)."""
    try:
        return list(splits["stages"][stage]["cases"])
    except KeyError:
        raise TrainingError(f"splits have no case list for stage {stage!r}; recreate them with `c2fseg split`") from None


def nnunet_folds(splits: dict, stage: str) -> list[dict]:
    """The stage's k folds in nnU-Net's splits_final.json form."""
    return [{"train": list(f["train"]), "val": list(f["val"])} for f in splits["stages"][stage]["folds"]]


def _check_fold(fold, splits: dict, stage: str):
    if fold in ("all", None):
        return "all"
    k = int(fold)
    n = len(splits["stages"][stage]["folds"])
    if not 0 <= k < n:
        raise ValueError(f"fold {k} does not exist: the splits have folds 0-{n - 1} (or use 'all')")
    return k


def _link_images(data_dir: Path, cases: list[str], splits: dict, out: Path) -> Path:
    """A folder of links to the images of ``cases`` (inputs for pseudo labelling)."""
    out.mkdir(parents=True, exist_ok=True)
    for case in cases:
        rel = splits.get("cases", {}).get(case, {}).get("image") or f"imagesTr/{case}_0000.nii.gz"
        src = (data_dir / rel).resolve()
        dst = out / f"{case}_0000.nii.gz"
        if dst.is_symlink() or dst.exists():
            continue
        try:
            dst.symlink_to(src)
        except OSError:  # no symlinks (e.g. Windows without developer mode): copy
            shutil.copy2(src, dst)
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def coarse_pseudo_labels(stage: str, data_dir: Path, cases: list[str], splits: dict, work_dir: Path,
                         weights_dir: Path, device: str) -> Path:
    """Pseudo labels of ``cases`` from the trained coarse model, made once and reused.

    They live in a folder named after the coarse checkpoint's hash, so retraining the coarse
    model gives new pseudo labels instead of silently reusing stale ones.
    """
    from c2fseg.infer.pseudolabel import pseudolabel_folder

    ckpt = weights_dir / "coarse" / "checkpoint_final.pth"
    if not ckpt.is_file():
        raise TrainingError(
            f"{ckpt} is missing: train the coarse stage first (`c2fseg train coarse ...`) or pass "
            "--pseudo-labels with organ pseudo labels for these cases"
        )
    out = work_dir / "pseudo_labels" / f"coarse-{_sha256(ckpt)[:12]}"
    # a folder of links to exactly this stage's images; finished outputs are skipped on re-runs
    inputs = work_dir / "pseudo_inputs" / stage
    if inputs.exists():
        shutil.rmtree(inputs)
    _link_images(data_dir, cases, splits, inputs)
    summary = pseudolabel_folder("coarse", weights_dir, inputs, out, device=device)
    if summary["failed"]:
        failed = "\n  ".join(f"{c}: {r}" for c, r in sorted(summary["failed"].items()))
        raise TrainingError(f"pseudo labelling failed for {len(summary['failed'])} case(s):\n  {failed}")
    return out


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def _run_worker(job: dict, job_dir: Path) -> dict:
    """Run the nnU-Net worker process on ``job``; return its result."""
    job_file = job_dir / "job.json"
    _write_json(job_file, job)
    (job_dir / "result.json").unlink(missing_ok=True)
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "c2fseg.train.worker", str(job_file)], env=env)
    if proc.returncode == 2:
        raise TrainingError(f"training of {job['stage']} stopped (see the message above)")
    if proc.returncode != 0:
        raise TrainingError(f"the training worker failed with exit code {proc.returncode} (see the log above)")
    result = json.loads((job_dir / "result.json").read_text())
    return result["result"]


def export_stage(result: dict, weights_dir: Path, stage: str, fold, training_cases: list[str],
                 raw_hash: str) -> Path:
    """Copy plans, dataset.json and a slim final checkpoint into ``weights/<stage>/``, atomically.

    Built in a temporary sibling folder; the previous export is replaced only once the new one
    (manifest included) is complete.
    """
    import torch

    from c2fseg.weights import write_manifest

    run_dir = Path(result["output_folder"])
    base = run_dir.parent
    config = stage_plans.configuration_name(stage)
    weights_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stage}.new-", dir=weights_dir))
    try:
        plans = json.loads((base / "plans.json").read_text())
        dataset_json = json.loads((base / "dataset.json").read_text())
        _write_json(tmp / "plans.json", plans)
        _write_json(tmp / "dataset.json", dataset_json)
        ckpt = torch.load(run_dir / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        slim = {
            "network_weights": ckpt["network_weights"],
            "init_args": {"plans": plans, "configuration": config, "fold": fold,
                          "dataset_json": dataset_json, "device": "cpu"},
            "trainer_name": ckpt.get("trainer_name", "C2fsegTrainer"),
            "inference_allowed_mirroring_axes": tuple(ckpt.get("inference_allowed_mirroring_axes") or ()),
            "current_epoch": int(ckpt.get("current_epoch", 0)),
        }
        torch.save(slim, tmp / "checkpoint_final.pth")
        write_manifest(
            tmp, stage=stage, configuration=config, fold=fold, plans=plans, dataset_json=dataset_json,
            checkpoint_path=tmp / "checkpoint_final.pth", training_cases=training_cases,
            trainer=slim["trainer_name"],
            extra={"epochs": slim["current_epoch"], "raw_dataset_hash": raw_hash,
                   "settings": plans["configurations"][config].get("c2fseg", {}).get("settings", {})},
        )
        final = weights_dir / stage
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{stage}.old-", dir=weights_dir))
            os.replace(final, old / stage)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def train_stage(stage: str, data_dir, splits_path, work_dir, weights_dir="weights", *,
                fold="all", config: str = "default", overrides: dict | None = None,
                pseudo_labels=None, device: str = "auto", num_gpus: int = 1,
                resume: bool = True, num_processes: int | None = None) -> Path:
    """Train ``stage`` ("coarse", "tumor", "organ") and export it to ``weights_dir/<stage>``.

    ``config`` picks the settings in stage_defaults.json ("default" or "tiny"); ``overrides``
    replaces single settings (spacing, patch, features, epochs, iters_per_epoch, ...).
    ``pseudo_labels`` is a folder of organ pseudo labels (``<case>.nii.gz``); without it the
    tumor and organ stages pseudo-label their cases with the trained coarse model from
    ``weights_dir``. Re-running resumes from the latest checkpoint (``resume=False`` restarts).
    Returns the exported stage folder.
    """
    from c2fseg.data.groups import load_splits
    from c2fseg.data.stage_dataset import build_stage_dataset

    check_stage(stage)
    t0 = time.time()
    data_dir, work_dir, weights_dir = Path(data_dir), Path(work_dir).resolve(), Path(weights_dir)
    if not data_dir.is_dir():
        raise TrainingError(f"data folder {data_dir} does not exist")
    splits = load_splits(splits_path)
    fold = _check_fold(fold, splits, stage)
    defaults = stage_plans.load_defaults()
    settings = stage_plans.resolve_settings(stage, config, overrides, defaults)
    if num_gpus > 1 and device == "cpu":
        raise ValueError("--num-gpus > 1 needs CUDA GPUs (device cuda or auto)")
    cases = stage_cases(splits, stage)
    if not cases:
        raise TrainingError(f"splits list no training cases for the {stage} stage")
    name = stage_plans.dataset_name(stage, defaults)

    pseudo_dir = None
    if stage != "coarse":
        if pseudo_labels is not None:
            pseudo_dir = Path(pseudo_labels)
            if not pseudo_dir.is_dir():
                raise TrainingError(f"pseudo-label folder {pseudo_dir} does not exist")
        else:
            pseudo_dir = coarse_pseudo_labels(stage, data_dir, cases, splits, work_dir, weights_dir, device)
    raw_dir = work_dir / "nnUNet_raw" / name
    record = build_stage_dataset(stage, data_dir, cases, raw_dir, pseudo_dir=pseudo_dir,
                                 margin=settings["z_margin"])
    t_build = time.time() - t0

    job_dir = work_dir / "jobs" / stage
    if fold != "all":
        folds = nnunet_folds(splits, stage)
        _write_json(work_dir / "nnUNet_preprocessed" / name / "splits_final.json", folds)
    job = {
        "stage": stage, "dataset_name": name, "work_dir": str(work_dir), "job_dir": str(job_dir),
        "fold": fold, "device": device, "num_gpus": int(num_gpus), "resume": bool(resume),
        "settings": settings, "raw_hash": record["hash"],
        "num_processes": int(num_processes or _default_processes()),
    }
    result = _run_worker(job, job_dir)
    t_export = time.time()
    out = export_stage(result, weights_dir, stage, fold, cases, record["hash"])
    timings = {"build_s": round(t_build, 2), **result, "export_s": round(time.time() - t_export, 2),
               "total_s": round(time.time() - t0, 2)}
    _write_json(job_dir / "timings.json", timings)
    print(f"[c2fseg] {stage}: exported {out} ({timings['total_s']} s in total)", flush=True)
    return out


def _default_processes() -> int:
    from c2fseg.train.env import default_num_processes

    return default_num_processes()
