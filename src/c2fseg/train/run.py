"""Train one cascade stage end to end: dataset, plans, nnU-Net training, exported weights.

``train_stage`` is the API behind ``c2fseg train`` and ``run_training.py``. Work folder layout::

    WORK/nnUNet_raw/Dataset90X_c2fseg<Stage>/      stage dataset (canonical, z-cropped)
    WORK/nnUNet_preprocessed/Dataset90X_.../       plans (with the c2fseg_<stage> configuration)
    WORK/nnUNet_results/Dataset90X_.../            checkpoints and logs (resumed on re-run)
    WORK/pseudo_labels/coarse-<checkpoint hash>/   coarse-model pseudo labels (reused)
    WORK/jobs/<stage>/                              job and result files of the worker process
    WEIGHTS/<stage>/                                the export (plans, dataset.json, checkpoint, manifest)
    WEIGHTS/<stage>.previous/                       the export it replaced (kept, never deleted silently)

Every step is skipped when its output is up to date, so re-running a command continues where
it stopped. The nnU-Net part runs in a separate process (``c2fseg.train.worker``).

Errors: :class:`TrainingInputError` (bad data, settings or folders: the user can fix them; the
CLI exits 2) is a :class:`TrainingError`; any other TrainingError means training itself crashed
(exit 1).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from c2fseg.fileutil import sha256_file, write_json_atomic
from c2fseg.labels import STAGE_LABELS, check_stage
from c2fseg.train import plans as stage_plans
from c2fseg.weights import CHECKPOINT_NAME

#: Suffix of the folder that keeps the export a new one replaced: ``weights/<stage>.previous``.
PREVIOUS_SUFFIX = ".previous"
#: Exit code of the worker process for errors in the job's data or settings (not a crash).
WORKER_INPUT_ERROR = 2
#: The module ``_run_worker`` runs as ``python -m MODULE JOB.json`` (tests substitute a wrapper).
WORKER_MODULE = "c2fseg.train.worker"


class TrainingError(RuntimeError):
    """Training could not run or crashed; the message says why and what to do."""


class TrainingInputError(TrainingError):
    """The data, settings or folders given cannot be used (fixable by the user; CLI exit 2)."""


def stage_cases(splits: dict, stage: str) -> list[str]:
    """Training cases of ``stage`` in a splits document (``c2fseg split``)."""
    try:
        return list(splits["stages"][stage]["cases"])
    except KeyError:
        raise TrainingInputError(f"splits have no case list for stage {stage!r}; recreate them with `c2fseg split`") from None


def nnunet_folds(splits: dict, stage: str, keep: set[str] | None = None) -> list[dict]:
    """The stage's k folds in nnU-Net's splits_final.json form, restricted to ``keep`` if given.

    Cases the stage dataset skipped (empty targets) must not appear: nnU-Net would look for them.
    """
    folds = [{"train": list(f["train"]), "val": list(f["val"])} for f in splits["stages"][stage]["folds"]]
    if keep is None:
        return folds
    return [{k: [c for c in f[k] if c in keep] for k in ("train", "val")} for f in folds]


def _check_fold(fold, splits: dict, stage: str):
    if fold in ("all", None):
        return "all"
    k = int(fold)
    n = len(splits["stages"][stage]["folds"])
    if not 0 <= k < n:
        raise TrainingInputError(f"fold {k} does not exist: the splits have {n} folds for the {stage} stage, "
                                 f"0-{n - 1} (`c2fseg split --folds`), or use 'all'")
    return k


def _link_images(data_dir: Path, cases: list[str], splits: dict, out: Path) -> Path:
    """A folder of links to the images of ``cases`` (inputs for pseudo labelling).

    Images are located like the stage dataset does (:func:`c2fseg.data.stage_dataset.case_sources`:
    the splits' paths, else ``imagesTr/<case>_0000.<ext>``). Each link keeps its image's
    extension (``<case>_0000.nrrd`` links to an .nrrd file), so the image is read in its own
    format.
    """
    from c2fseg.data.stage_dataset import case_sources
    from c2fseg.io.discover import channel_file_name
    from c2fseg.io.formats import image_extension

    out.mkdir(parents=True, exist_ok=True)
    for source in case_sources(data_dir, cases, None, splits.get("cases")):
        src = source.image.resolve()
        dst = out / channel_file_name(source.case, image_extension(src) or ".nii.gz")
        if dst.is_symlink() or dst.exists():
            continue
        try:
            dst.symlink_to(src)
        except OSError:  # no symlinks (e.g. Windows without developer mode): copy
            shutil.copy2(src, dst)
    return out


def cases_needing_pseudo(splits: dict, cases: list[str], stage: str) -> list[str]:
    """The ``cases`` whose ``stage`` target needs a pseudo label, judged by the labels the splits
    recorded for each case (:func:`c2fseg.data.stage_dataset.pseudo_label_needed`; a case without
    that record is assumed to need one)."""
    from c2fseg.data.stage_dataset import pseudo_label_needed, recorded_labels

    info = splits.get("cases") or {}
    return [c for c in cases if pseudo_label_needed(stage, recorded_labels(info.get(c)))]


def coarse_pseudo_labels(stage: str, data_dir: Path, cases: list[str], splits: dict, work_dir: Path,
                         weights_dir: Path, device: str) -> Path:
    """Pseudo labels from the trained coarse model for those of ``cases`` that need one, made once
    and reused.

    Need is judged by the organ stage's rule (a fully annotated case without tumor needs none),
    which covers the tumor stage's: the tumor and organ stages share this folder, and a case's
    pseudo label must not appear or vanish depending on which stage ran first (that would change
    the other stage's training data and refuse its resume). The folder is named after the
    coarse checkpoint's hash and its inference settings (tile step and weighting change the
    labels), so a retrained or re-configured coarse model gives new pseudo labels instead of
    silently reusing stale ones.
    """
    from c2fseg.device import DeviceError
    from c2fseg.infer.pseudolabel import pseudolabel_folder
    from c2fseg.io.errors import FolderError
    from c2fseg.weights import WeightsError

    ckpt = weights_dir / "coarse" / CHECKPOINT_NAME
    if not ckpt.is_file():
        raise TrainingInputError(
            f"{ckpt} is missing: train the coarse stage first (`c2fseg train coarse ...`) or pass "
            "--pseudo-labels with organ pseudo labels for these cases"
        )
    out = work_dir / "pseudo_labels" / f"coarse-{_pseudo_key(weights_dir / 'coarse', ckpt)}"
    cases = cases_needing_pseudo(splits, cases, "organ")
    # a folder of links to exactly this stage's images; finished outputs are skipped on re-runs
    inputs = work_dir / "pseudo_inputs" / stage
    if inputs.exists():
        shutil.rmtree(inputs)
    if not cases:
        out.mkdir(parents=True, exist_ok=True)
        return out
    _link_images(data_dir, cases, splits, inputs)
    try:
        summary = pseudolabel_folder("coarse", weights_dir, inputs, out, device=device)
    except (WeightsError, FolderError, DeviceError) as exc:  # unusable weights, folders or device
        raise TrainingInputError(f"cannot pseudo-label the {stage} cases with {weights_dir / 'coarse'}: {exc}") from None
    if summary["failed"]:
        failed = "\n  ".join(f"{c}: {r}" for c, r in sorted(summary["failed"].items()))
        raise TrainingError(f"pseudo labelling failed for {len(summary['failed'])} case(s):\n  {failed}")
    return out


def _pseudo_key(stage_dir: Path, ckpt: Path) -> str:
    """12 hex digits naming a coarse model's pseudo labels: its checkpoint and inference settings."""
    import hashlib

    inference = _raw_manifest(stage_dir).get("inference")  # pseudolabel_folder reports a bad one
    text = sha256_file(ckpt) + json.dumps(inference, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _raw_manifest(stage_dir: Path) -> dict:
    """A stage folder's manifest.json as written, unchecked ({} when absent or unreadable): for
    derived names and early checks; loading the stage validates it."""
    try:
        return json.loads((Path(stage_dir) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _run_worker(job: dict, job_dir: Path, log_file: Path | None = None) -> dict:
    """Run the nnU-Net worker process on ``job``; return its result.

    ``log_file``: the worker's output goes there (appended) instead of this process's stdout.
    """
    job_file = job_dir / "job.json"
    write_json_atomic(job_file, job)
    result_file = job_dir / "result.json"
    result_file.unlink(missing_ok=True)
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    command = [sys.executable, "-m", WORKER_MODULE, str(job_file)]
    if log_file is None:
        proc = subprocess.run(command, env=env)
        where = "the message above"
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a", encoding="utf-8") as log:
            proc = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        where = str(log_file)
    if proc.returncode == WORKER_INPUT_ERROR:
        raise TrainingInputError(f"training of {job['stage']} stopped (see {where})")
    if proc.returncode != 0:
        raise TrainingError(f"the training worker failed with exit code {proc.returncode} (see {where}); "
                            "rerun the same command to resume from the last checkpoint")
    try:
        return json.loads(result_file.read_text(encoding="utf-8"))["result"]
    except (OSError, ValueError, KeyError) as exc:
        raise TrainingError(f"the training worker ended without a readable {result_file} ({exc}); "
                            "rerun the same command to resume from the last checkpoint") from None


def previous_dir(weights_dir: Path, stage: str) -> Path:
    """Where a replaced export of ``stage`` is kept: ``weights/<stage>.previous``."""
    return Path(weights_dir) / f"{stage}{PREVIOUS_SUFFIX}"


def _our_manifest(folder: Path, stage: str) -> dict | None:
    """The manifest of ``folder`` if it is an intact c2fseg export of ``stage``, else None."""
    from c2fseg.weights import load_manifest

    if not folder.is_dir():
        return None
    try:
        manifest = load_manifest(folder, verify=True)
    except (ValueError, OSError):
        return None
    return manifest if manifest.get("stage") == stage else None


def check_export_target(weights_dir: Path, stage: str, folder: str | None = None) -> None:
    """Refuse (before any long work) an export that would have to delete files c2fseg did not write.

    An existing ``weights/<folder>`` (default: the stage name) is moved to
    ``weights/<folder>.previous``; an older ``.previous`` is replaced only if it is an intact
    c2fseg export of the stage.
    """
    folder = folder or stage
    final, prev = Path(weights_dir) / folder, previous_dir(weights_dir, folder)
    if final.exists() and prev.exists() and _our_manifest(prev, stage) is None:
        raise TrainingInputError(
            f"{prev} exists and is not an intact c2fseg export of the {stage} stage (no valid "
            f"manifest.json), so c2fseg will not replace it with the current {final}. Move or delete "
            f"{prev} yourself, then rerun the same command (finished steps are skipped)."
        )


def _swap_in(tmp: Path, weights_dir: Path, stage: str, source_sha: str, folder: str | None = None) -> Path:
    """Put the finished export ``tmp`` at ``weights/<folder>`` (default: the stage name),
    keeping what was there.

    A previous export is moved to ``<folder>.previous`` (printed), unless it is a re-export of
    the very same training checkpoint, which is simply replaced.
    """
    folder = folder or stage
    final, prev = weights_dir / folder, previous_dir(weights_dir, folder)
    trash = Path(tempfile.mkdtemp(prefix=f".{folder}.old-", dir=weights_dir))
    try:
        if final.exists():
            current = _our_manifest(final, stage)
            if current is not None and current.get("extra", {}).get("source_checkpoint_sha256") == source_sha:
                os.replace(final, trash / folder)  # same model exported again: nothing is lost
            else:
                check_export_target(weights_dir, stage, folder)
                if prev.exists():
                    os.replace(prev, trash / prev.name)
                os.replace(final, prev)
                print(f"[c2fseg] {folder}: the previous {final} was moved to {prev}", flush=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(trash, ignore_errors=True)
    return final


def export_stage(result: dict, weights_dir: Path, stage: str, fold, training_cases: list[str],
                 raw_hash: str, skipped: dict[str, str] | None = None, *,
                 variant: int | None = None, inference: dict | None = None) -> Path:
    """Copy plans, dataset.json and a slim final checkpoint into ``weights/<stage>/``.

    Built in a temporary sibling folder and swapped in only once complete (manifest included,
    written by ``c2fseg.weights.write_manifest``). A previous export is not deleted: it is moved
    to ``weights/<stage>.previous`` (see :func:`check_export_target`). ``skipped`` (cases left
    out of the stage dataset, with the reason) is recorded in the manifest's ``extra``.
    ``variant`` 2 exports ``weights/tumor_2`` (a tumor model); ``inference`` (the training
    config's inference block, e.g. the published pipeline's) goes into the manifest.
    """
    import torch

    from c2fseg.weights import write_manifest

    run_dir = Path(result["output_folder"])
    base = run_dir.parent
    config = stage_plans.configuration_name(stage, variant)
    folder = stage_plans.export_name(stage, variant)
    weights_dir.mkdir(parents=True, exist_ok=True)
    source = run_dir / CHECKPOINT_NAME
    source_sha = sha256_file(source)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.new-", dir=weights_dir))
    try:
        plans = json.loads((base / "plans.json").read_text(encoding="utf-8"))
        dataset_json = json.loads((base / "dataset.json").read_text(encoding="utf-8"))
        write_json_atomic(tmp / "plans.json", plans)
        write_json_atomic(tmp / "dataset.json", dataset_json)
        ckpt = torch.load(source, map_location="cpu", weights_only=False)
        slim = {
            "network_weights": ckpt["network_weights"],
            "init_args": {"plans": plans, "configuration": config, "fold": fold,
                          "dataset_json": dataset_json, "device": "cpu"},
            "trainer_name": ckpt.get("trainer_name", "C2fsegTrainer"),
            "inference_allowed_mirroring_axes": tuple(ckpt.get("inference_allowed_mirroring_axes") or ()),
            "current_epoch": int(ckpt.get("current_epoch", 0)),
        }
        torch.save(slim, tmp / CHECKPOINT_NAME)
        write_manifest(
            tmp, stage=stage, configuration=config, fold=fold, plans=plans, dataset_json=dataset_json,
            checkpoint_path=tmp / CHECKPOINT_NAME, training_cases=training_cases,
            trainer=slim["trainer_name"],
            extra={"epochs": slim["current_epoch"], "raw_dataset_hash": raw_hash,
                   "source_checkpoint_sha256": source_sha, "skipped_cases": dict(skipped or {}),
                   "settings": plans["configurations"][config].get("c2fseg", {}).get("settings", {})},
            inference=inference or None,
        )
        return _swap_in(tmp, weights_dir, stage, source_sha, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def train_stage(stage: str, data_dir, splits_path, work_dir, weights_dir="weights", *,
                fold="all", config: str = "default", overrides: dict | None = None,
                pseudo_labels=None, device: str = "auto", num_gpus: int = 1,
                resume: bool = True, num_processes: int | None = None,
                variant: int | None = None, torch_threads: int | None = None,
                log_file=None) -> Path:
    """Train ``stage`` ("coarse", "tumor", "organ") and export it to ``weights_dir/<stage>``.

    ``variant`` 2 trains a second tumor model (the config's ``tumor_2`` settings, its own
    nnU-Net configuration and job folder) and exports it to ``weights_dir/tumor_2``.

    ``config`` picks the settings in stage_defaults.json ("default" or "tiny"); ``overrides``
    replaces single settings (spacing, patch, features, epochs, iters_per_epoch, ...).
    ``pseudo_labels`` is a folder of organ pseudo labels (``<case>.<ext>`` or
    ``<case>_0000.<ext>``; ignored for the coarse stage); without it the tumor and organ stages
    pseudo-label their cases with the trained coarse model from ``weights_dir``. Re-running
    resumes from the latest checkpoint (``resume=False`` restarts). An existing export is moved
    to ``weights_dir/<stage>.previous``. Cases with an empty target are skipped and reported.
    ``torch_threads`` caps the worker's torch threads (two stages training side by side on a
    2-core machine use 1 each); ``log_file`` takes the worker's output instead of the terminal.
    Returns the exported stage folder. Raises TrainingInputError (or StageDatasetError) for
    unusable data or settings, TrainingError when training crashed.
    """
    from c2fseg.data.stage_dataset import build_stage_dataset, skipped_reasons

    check_stage(stage)
    t0 = time.time()
    data_dir, work_dir, weights_dir = Path(data_dir), Path(work_dir).resolve(), Path(weights_dir)
    splits, fold, settings, defaults = _check_inputs(stage, data_dir, splits_path, fold, config, overrides,
                                                     device, num_gpus, variant)
    folder = stage_plans.export_name(stage, variant)
    check_export_target(weights_dir, stage, folder)
    cases = stage_cases(splits, stage)
    if not cases:
        raise TrainingInputError(f"splits list no training cases for the {stage} stage")
    name = stage_plans.dataset_name(stage, defaults)

    pseudo_dir = None
    if stage != "coarse":
        if pseudo_labels is not None:
            pseudo_dir = Path(pseudo_labels)
            if not pseudo_dir.is_dir():
                raise TrainingInputError(f"pseudo-label folder {pseudo_dir} does not exist")
        else:
            pseudo_dir = coarse_pseudo_labels(stage, data_dir, cases, splits, work_dir, weights_dir, device)
    raw_dir = work_dir / "nnUNet_raw" / name
    record = build_stage_dataset(stage, data_dir, cases, raw_dir, pseudo_dir=pseudo_dir,
                                 margin=settings["z_margin"], case_files=splits.get("cases"),
                                 ct_clip=settings.get("ct_clip"))
    skipped = skipped_reasons(record)
    built = sorted(record["cases"])
    _report_skipped(stage, skipped, len(cases))
    t_build = time.time() - t0

    job_dir = work_dir / "jobs" / folder
    if fold != "all":
        write_json_atomic(work_dir / "nnUNet_preprocessed" / name / "splits_final.json",
                          _fold_lists(splits, stage, fold, set(built)))
    init_checkpoint = _init_checkpoint(settings, weights_dir, folder, stage)
    job = {
        "init_checkpoint": init_checkpoint,
        "stage": stage, "dataset_name": name, "work_dir": str(work_dir), "job_dir": str(job_dir),
        "fold": fold, "device": device, "num_gpus": int(num_gpus), "resume": bool(resume),
        "settings": settings, "raw_hash": record["hash"], "variant": variant,
        "num_processes": int(num_processes or _default_processes()),
        "torch_threads": int(torch_threads) if torch_threads else None,
    }
    result = _run_worker(job, job_dir, Path(log_file) if log_file else None)
    t_export = time.time()
    out = export_stage(result, weights_dir, stage, fold, built, record["hash"], skipped, variant=variant,
                       inference=stage_plans.config_inference(stage, config, defaults))
    timings = {"build_s": round(t_build, 2), **result, "export_s": round(time.time() - t_export, 2),
               "total_s": round(time.time() - t0, 2), "skipped_cases": skipped}
    write_json_atomic(job_dir / "timings.json", timings)
    print(f"[c2fseg] {folder}: exported {out} ({timings['total_s']} s in total)", flush=True)
    return out


def _init_checkpoint(settings: dict, weights_dir: Path, folder: str, stage: str) -> str | None:
    """The exported checkpoint a stage starts from (``init_from``: a stage folder name), or None.

    The source's output channels must be the first labels of ``stage`` in the same order (the
    warm start copies heads channel by channel; an imported stage may order them otherwise).
    """
    source = settings.get("init_from")
    if not source:
        return None
    if source == folder:
        raise TrainingInputError(f"init_from {source!r}: a stage cannot start from its own export")
    ckpt = Path(weights_dir) / source / CHECKPOINT_NAME
    if not ckpt.is_file():
        raise TrainingInputError(f"init_from {source!r}: {ckpt} is missing; train the {source} stage "
                                 "first or set init_from to null")
    labels = _raw_manifest(ckpt.parent).get("channel_labels")
    wanted = [0, *STAGE_LABELS[stage]]
    n = min(len(labels or []), len(wanted))
    if labels is not None and [int(v) for v in labels[:n]] != wanted[:n]:
        raise TrainingInputError(f"init_from {source!r}: its output channels are labels {labels}, but "
                                 f"the {stage} stage's are {wanted}; a warm start "
                                 "needs the same label order")
    return str(ckpt.resolve())


def _check_inputs(stage: str, data_dir: Path, splits_path, fold, config: str, overrides, device: str,
                  num_gpus: int, variant: int | None = None) -> tuple[dict, object, dict, dict]:
    """Splits, fold and settings, checked before any long work; bad ones raise TrainingInputError."""
    from c2fseg.data.groups import load_splits

    if not data_dir.is_dir():
        raise TrainingInputError(f"data folder {data_dir} does not exist")
    if num_gpus > 1 and device == "cpu":
        raise TrainingInputError("--num-gpus > 1 needs CUDA GPUs (device cuda or auto)")
    try:
        splits = load_splits(splits_path)
        defaults = stage_plans.load_defaults()
        settings = stage_plans.resolve_settings(stage, config, overrides, defaults, variant)
    except (ValueError, FileNotFoundError) as exc:
        raise TrainingInputError(str(exc)) from None
    return splits, _check_fold(fold, splits, stage), settings, defaults


def _fold_lists(splits: dict, stage: str, fold: int, built: set[str]) -> list[dict]:
    """nnU-Net's splits_final.json without skipped cases; fold ``fold`` must keep train and val cases."""
    folds = nnunet_folds(splits, stage, built)
    for key in ("train", "val"):
        if not folds[fold][key]:
            raise TrainingInputError(
                f"fold {fold} of the {stage} stage has no {key} case left after skipping cases with an "
                "empty target; use --fold all or rebuild the splits without those cases"
            )
    return folds


def _report_skipped(stage: str, skipped: dict[str, str], total: int) -> None:
    """Print the cases the stage dataset left out (they are also in the manifest and timings)."""
    if not skipped:
        return
    lines = "\n  ".join(f"{case}: {why}" for case, why in skipped.items())
    print(f"[c2fseg] {stage}: skipped {len(skipped)} of {total} case(s) with an empty target:\n  {lines}",
          file=sys.stderr, flush=True)


def _default_processes() -> int:
    from c2fseg.train.env import default_num_processes

    return default_num_processes()
