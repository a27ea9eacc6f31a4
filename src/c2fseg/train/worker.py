"""The nnU-Net part of training a stage, run in its own process: plan, preprocess, train.

``python -m c2fseg.train.worker JOB.json`` (``train_stage`` writes the job file and starts this).
A fresh process is used because nnU-Net reads its folder variables at import time
(``c2fseg.train.env``), and because data-augmentation and DDP workers are spawned processes that
re-import the main module: everything that starts work sits under ``if __name__ == "__main__"``.
On success the worker writes ``result.json`` beside the job file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from c2fseg.fileutil import write_json_atomic
from c2fseg.train import env as nnenv
from c2fseg.weights import CHECKPOINT_NAME

STAMP = "c2fseg_stamp.json"


class ResumeMismatchError(RuntimeError):
    """An existing checkpoint was trained with other data or settings than this run."""


class JobSettingsError(RuntimeError):
    """The job asks for something this machine cannot do (e.g. a GPU it does not have)."""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# ----------------------------------------------------------------------------- planning


def plan_and_preprocess(job: dict) -> dict:
    """Fingerprint, plan and preprocess the stage dataset unless that is already up to date.

    Planning depends only on the raw dataset (its build hash); preprocessing on the raw dataset
    and the stage's target spacing (its data identifier). Returns the plans with the stage
    configuration written in.
    """
    from c2fseg.train.plans import PLANS_IDENTIFIER, add_stage_configuration, configuration_name

    name, stage = job["dataset_name"], job["stage"]
    pre = Path(os.environ["nnUNet_preprocessed"]) / name
    plans_file = pre / f"{PLANS_IDENTIFIER}.json"
    stamp = _read_json(pre / STAMP)
    t0 = time.time()
    if stamp.get("raw_hash") != job["raw_hash"] or not plans_file.is_file():
        print(f"[c2fseg] planning {name} (dataset fingerprint + nnU-Net planner)", flush=True)
        _plan(name, job["num_processes"])
        stamp = {"raw_hash": job["raw_hash"], "preprocessed": {}}
        write_json_atomic(pre / STAMP, stamp)
    plans = _read_json(plans_file)
    plans = add_stage_configuration(plans, stage, job["settings"], job.get("variant"))
    config = configuration_name(stage, job.get("variant"))
    ident = plans["configurations"][config]["data_identifier"]
    if stamp.get("preprocessed", {}).get(ident) != job["raw_hash"] or not (pre / ident).is_dir():
        write_json_atomic(plans_file, plans)
        print(f"[c2fseg] preprocessing {name} configuration {config}", flush=True)
        _preprocess(name, config, job["num_processes"])
        _copy_ground_truth(name)
        stamp.setdefault("preprocessed", {})[ident] = job["raw_hash"]
        write_json_atomic(pre / STAMP, stamp)
    else:
        print(f"[c2fseg] plans and preprocessed data of {name} are up to date", flush=True)
    write_json_atomic(plans_file, plans)
    job.setdefault("timings", {})["plan_preprocess_s"] = round(time.time() - t0, 2)
    return plans


#: Below this many cases nnU-Net's process pools cost more (each worker re-imports torch and
#: nnU-Net, several seconds) than they save: use one process.
SMALL_DATASET = 16


def _num_cases(name: str) -> int:
    return len(list((Path(os.environ["nnUNet_raw"]) / name / "labelsTr").glob("*.nii.gz")))


def _plan(name: str, num_processes: int) -> None:
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
        DatasetFingerprintExtractor,
    )
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
        ExperimentPlanner,
    )

    if _num_cases(name) < SMALL_DATASET:
        num_processes = 1
    DatasetFingerprintExtractor(name, num_processes, verbose=False).run(overwrite_existing=True)
    # Stage datasets are canonical (z, y, x); keep that axis order in the plans.
    ExperimentPlanner(name, suppress_transpose=True).plan_experiment()


def _preprocess(name: str, config: str, num_processes: int) -> None:
    """nnU-Net's preprocessing of one configuration (in this process for small datasets)."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    from c2fseg.train.plans import PLANS_IDENTIFIER

    if _num_cases(name) >= SMALL_DATASET:
        DefaultPreprocessor(verbose=False).run(name, config, PLANS_IDENTIFIER, num_processes)
        return
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
    from tqdm import tqdm

    pre = Path(os.environ["nnUNet_preprocessed"]) / name
    plans = PlansManager(str(pre / f"{PLANS_IDENTIFIER}.json"))
    conf = plans.get_configuration(config)
    dataset_json = _read_json(pre / "dataset.json")
    out = pre / conf.data_identifier
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cases = get_filenames_of_train_images_and_targets(str(Path(os.environ["nnUNet_raw"]) / name), dataset_json)
    preprocessor = DefaultPreprocessor(verbose=False)
    for case, files in tqdm(sorted(cases.items()), desc="preprocess", unit="case"):
        preprocessor.run_case_save(str(out / case), files["images"], files["label"], plans, conf, dataset_json)


def _copy_ground_truth(name: str) -> None:
    """nnU-Net's final validation compares against preprocessed/<dataset>/gt_segmentations."""
    raw = Path(os.environ["nnUNet_raw"]) / name / "labelsTr"
    gt = Path(os.environ["nnUNet_preprocessed"]) / name / "gt_segmentations"
    gt.mkdir(parents=True, exist_ok=True)
    for f in raw.glob("*.nii.gz"):
        dst = gt / f.name
        if not dst.exists() or dst.stat().st_mtime < f.stat().st_mtime:
            shutil.copy2(f, dst)


# ----------------------------------------------------------------------------- training


def _device(name: str):
    """The job's torch device via c2fseg's one resolver (c2fseg.device); bad requests exit 2."""
    from c2fseg.device import DeviceError, resolve_device

    try:
        return resolve_device(name)
    except DeviceError as exc:
        raise JobSettingsError(str(exc)) from None


def _fold(value):
    return value if value == "all" else int(value)


def build_trainer(job: dict, plans: dict, device):
    """Our trainer for this job, constructed directly (no nnU-Net lookup by name)."""
    from c2fseg.train.plans import configuration_name
    from c2fseg.train.trainers import C2fsegTrainer

    dataset_json = _read_json(Path(os.environ["nnUNet_preprocessed"]) / job["dataset_name"] / "dataset.json")
    return C2fsegTrainer(plans, configuration_name(job["stage"], job.get("variant")), _fold(job["fold"]), dataset_json, device)


def output_folder(job: dict) -> Path:
    """Where the trainer writes checkpoints and logs for this job's fold."""
    from c2fseg.train.plans import PLANS_IDENTIFIER, configuration_name

    return (Path(os.environ["nnUNet_results"]) / job["dataset_name"]
            / f"C2fsegTrainer__{PLANS_IDENTIFIER}__{configuration_name(job['stage'], job.get('variant'))}"
            / f"fold_{job['fold']}")


def _checkpoint_to_resume(folder: Path) -> Path | None:
    for name in ("checkpoint_latest.pth", CHECKPOINT_NAME):
        if (folder / name).is_file():
            return folder / name
    return None


def check_resumable(checkpoint: Path, plans: dict, job: dict) -> dict:
    """Load a checkpoint's metadata and refuse to resume across different data or networks."""
    import torch

    from c2fseg.train.plans import architecture_signature, configuration_name

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    old_plans = ckpt.get("init_args", {}).get("plans")
    name = configuration_name(job["stage"], job.get("variant"))
    old_raw = ckpt.get("c2fseg_raw_hash") or _read_json(checkpoint.parent / "c2fseg_run.json").get("raw_hash")
    reasons = []
    if old_plans is None or architecture_signature(old_plans, name) != architecture_signature(plans, name):
        reasons.append("the network, patch size, spacing or normalisation differ")
    if old_raw is not None and old_raw != job["raw_hash"]:
        reasons.append("the training data differ")
    if reasons:
        raise ResumeMismatchError(
            f"{checkpoint} was trained with other settings: {'; '.join(reasons)}. Rerun with "
            "--no-resume to start this stage from scratch (the old training output is deleted)."
        )
    return ckpt


def train(job: dict, plans: dict, device, rank: int = 0) -> dict:
    """Construct the trainer, resume from the latest checkpoint when allowed, train."""
    folder = output_folder(job)
    checkpoint = _checkpoint_to_resume(folder) if job["resume"] else None
    ckpt_meta = check_resumable(checkpoint, plans, job) if checkpoint is not None else None
    nnenv.set_augmentation_workers(job["settings"].get("da_workers"))
    nnenv.set_compile(job["settings"].get("compile"))
    trainer = build_trainer(job, plans, device)
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / "c2fseg_run.json", {"raw_hash": job["raw_hash"], "stage": job["stage"]})
    start = 0
    if checkpoint is not None:
        done = int(ckpt_meta.get("current_epoch", 0))
        if checkpoint.name == CHECKPOINT_NAME and done >= trainer.num_epochs:
            print(f"[c2fseg] {checkpoint} already has {done} epochs (>= {trainer.num_epochs}); "
                  "nothing to train", flush=True)
            return {"output_folder": str(folder), "start_epoch": done, "epochs": done, "trained": False}
        trainer.load_checkpoint(str(checkpoint))
        start = trainer.current_epoch
        trainer.print_to_log_file(f"c2fseg: resuming from {checkpoint.name} at epoch {start}")
    elif job.get("init_checkpoint"):
        from c2fseg.train.trainers import init_from_checkpoint

        trainer.initialize()
        try:
            info = init_from_checkpoint(trainer.network, job["init_checkpoint"])
        except (ValueError, OSError, KeyError) as exc:
            raise JobSettingsError(f"init_from {job['settings'].get('init_from')!r}: {exc}") from None
        trainer.print_to_log_file(f"c2fseg: initialised {info['copied']} weights from "
                                  f"{info['checkpoint']} (head tensors extended with new labels: {len(info['extended'])}, "
                                  f"fresh: {len(info['fresh'])})")
    t0 = time.time()
    trainer.run_training()
    train_s = time.time() - t0
    if job["settings"].get("final_validation") and job["fold"] != "all":
        trainer.perform_actual_validation(False)
    iters = max(1, (trainer.num_epochs - start) * trainer.num_iterations_per_epoch)
    return {"output_folder": str(folder), "start_epoch": start, "epochs": trainer.num_epochs,
            "trained": True, "train_s": round(train_s, 2), "s_per_iter": round(train_s / iters, 4)}


def _ddp_worker(rank: int, job: dict, plans: dict, world_size: int) -> None:
    """One DDP process per GPU: join the process group, then train with our trainer."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("nccl", rank=rank, world_size=world_size)
    try:
        torch.cuda.set_device(rank)
        result = train(job, plans, torch.device("cuda", rank), rank)
        if rank == 0:
            write_json_atomic(Path(job["job_dir"]) / "result.json", {**job, "result": result})
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def run_job(job: dict) -> dict:
    """Plan/preprocess, then train on one device or with DDP over ``num_gpus`` GPUs."""
    nnenv.configure_nnunet(job["work_dir"], job["num_processes"])
    if job.get("torch_threads"):  # e.g. 1 each when two stages train side by side
        import torch

        torch.set_num_threads(int(job["torch_threads"]))
    device = _device(job["device"])  # before planning: a device that is not there fails at once
    if job["num_gpus"] > 1:
        import torch

        if torch.cuda.device_count() < job["num_gpus"]:
            raise JobSettingsError(f"--num-gpus {job['num_gpus']} but torch sees "
                                   f"{torch.cuda.device_count()} GPU(s)")
    plans = plan_and_preprocess(job)
    folder = output_folder(job)
    if not job["resume"] and folder.exists():
        print(f"[c2fseg] --no-resume: removing {folder}", flush=True)
        shutil.rmtree(folder)
    if job["num_gpus"] > 1:
        import torch.multiprocessing as mp

        os.environ.setdefault("MASTER_ADDR", "localhost")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        mp.spawn(_ddp_worker, args=(job, plans, job["num_gpus"]), nprocs=job["num_gpus"], join=True)
        return _read_json(Path(job["job_dir"]) / "result.json")
    result = train(job, plans, device)
    out = {**job, "result": result}
    write_json_atomic(Path(job["job_dir"]) / "result.json", out)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m c2fseg.train.worker JOB.json", file=sys.stderr)
        return 2
    job = _read_json(Path(argv[0]))
    if not job:
        print(f"{argv[0]}: not a readable job file", file=sys.stderr)
        return 1  # the job file is written by train_stage: this is not the user's input
    try:
        run_job(job)
    except (ResumeMismatchError, JobSettingsError) as exc:  # the user can fix these: exit 2
        print(f"c2fseg train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
