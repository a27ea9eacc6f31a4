"""The built-in demo: phantoms -> split -> tiny three-stage training -> predict -> evaluate -> PNGs.

Everything runs on the CPU in about 15 minutes. Trained demo weights are reused when they are
present and were made by the same demo settings (``demo_settings.json``), so a second run only
predicts and evaluates. A folder made by other demo settings is started afresh: the demo deletes
only its own sub-folders there (data, work, weights, predictions), never anything else.

What the demo reports (``demo_summary.json`` and the printed table): per-organ DSC/NSD on the
held-out phantoms; the tumor scored only over the test cases that contain a tumor, and for the
tumor-free ones the false-positive tumor volume in ml; per-stage training time; per-case
prediction time; the training curves of the three stages (PNG) beside an overlay PNG.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from c2fseg.fileutil import usable_cpus, write_json_atomic
from c2fseg.labels import LABELS, ORGANS, STAGES, TUMOR

#: Group mix of the demo's training set: more complete cases than FLARE (the coarse model trains
#: on G6 only) and more tumor cases (the tumor model trains on G4 only), still all four groups.
DEMO_GROUP_FRACTIONS = {"G6": 0.4, "G4": 0.4, "G5": 0.1, "G1": 0.1}
#: Bumped whenever the demo's recipe (phantoms, training settings) changes: a folder made by
#: another version is started afresh instead of reusing stale weights.
DEMO_VERSION = 3  # 3: coarse 1000 steps, overlapping Gaussian tiles, tumor heads from coarse
#: The demo's own sub-folders (the only things it deletes when it starts a folder afresh).
OWN_FOLDERS = ("data", "work", "weights", "predictions")
SETTINGS_FILE = "demo_settings.json"
#: Accuracy the demo is expected to reach (issue 8; tests/test_demo_slow.py holds them).
TARGETS = {"organ_dsc_mean": 0.85, "organ_dsc_min": 0.60, "tumor_dsc_tumor_cases": 0.50}


class DemoError(RuntimeError):
    """The demo cannot run in the chosen folder; the message says why and what to do."""


@dataclass
class DemoResult:
    """Where the demo put things and what it measured."""

    out_dir: Path
    metrics: dict
    timings: dict = field(default_factory=dict)
    overlay_png: Path | None = None
    curves_png: Path | None = None
    tumor: dict = field(default_factory=dict)
    summary_path: Path | None = None


def _step(timings: dict, name: str, start: float) -> None:
    timings[name] = round(time.perf_counter() - start, 2)


def demo_settings(train_cases: int, test_cases: int, seed: int, epochs: int | None,
                  iters_per_epoch: int | None = None) -> dict:
    """What makes a demo folder's data and weights reusable."""
    return {"demo_version": DEMO_VERSION, "train_cases": int(train_cases),
            "test_cases": int(test_cases), "seed": int(seed), "epochs": epochs,
            "group_fractions": DEMO_GROUP_FRACTIONS, "iters_per_epoch": iters_per_epoch}


def prepare_folder(out: Path, settings: dict, retrain: bool) -> bool:
    """Make ``out`` ready for these settings; True when earlier demo results may be reused.

    An empty or missing folder is used as is. A demo folder made with other settings (or with
    ``retrain``) has its own sub-folders removed. A non-empty folder that is not a demo folder is
    refused: the demo never deletes what it did not write.
    """
    marker = out / SETTINGS_FILE
    if out.exists() and any(out.iterdir()) and not marker.is_file():
        raise DemoError(f"{out} is not empty and is not a c2fseg demo folder (no {SETTINGS_FILE}); "
                        "choose another folder with -o/--out")
    try:
        old = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None
    except (OSError, ValueError):
        old = {}
    if old == settings and not retrain:
        return True
    if old is not None:
        why = "--retrain" if old == settings else "other demo settings"
        print(f"[demo] {out} holds a demo made with {why}: starting it afresh", flush=True)
        for name in OWN_FOLDERS:
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, settings, indent=1)
    return False


def run_demo(
    out_dir: str | Path = "demo_out",
    *,
    train_cases: int = 30,
    test_cases: int = 10,
    seed: int = 0,
    device: str = "auto",
    retrain: bool = False,
    epochs: int | None = None,
    iters_per_epoch: int | None = None,
) -> DemoResult:
    """Run the whole demo under ``out_dir`` and return the metrics and timings.

    ``epochs``/``iters_per_epoch`` replace the tiny configuration's schedule for every stage
    (the tests use a very short one); the defaults are the measured demo recipe.
    """
    from c2fseg.data.groups import build_splits, write_splits
    from c2fseg.data.phantom import generate_dataset
    from c2fseg.evaluate import evaluate_folders
    from c2fseg.infer.batch import predict_folder
    from c2fseg.viz import render_overlay

    out = Path(out_dir).resolve()
    settings = demo_settings(train_cases, test_cases, seed, epochs, iters_per_epoch)
    reuse = prepare_folder(out, settings, retrain)
    data, work, weights, pred = (out / name for name in OWN_FOLDERS)
    timings: dict = {}
    t_start = t = time.perf_counter()
    print(f"[demo] 1/6 phantoms -> {data}", flush=True)
    generate_dataset(data, cases=train_cases, seed=seed, size="small", test_cases=test_cases,
                     group_fractions=DEMO_GROUP_FRACTIONS)
    _step(timings, "phantoms", t)

    t = time.perf_counter()
    print("[demo] 2/6 groups and splits", flush=True)
    splits_path = out / "splits.json"
    write_splits(build_splits(data, folds=5, seed=seed), splits_path)
    _step(timings, "split", t)

    overrides = {"epochs": epochs, "iters_per_epoch": iters_per_epoch}
    _train_or_reuse("coarse", data, splits_path, work, weights, overrides, device, reuse, timings)
    fine = [s for s in ("tumor", "organ") if not (reuse and _reusable(weights, s, work, timings))]
    if len(fine) == 2 and _side_by_side(device):
        _train_side_by_side(fine, data, splits_path, work, weights, overrides, device, timings)
    else:
        for stage in fine:
            _train_or_reuse(stage, data, splits_path, work, weights, overrides, device, False, timings)

    t = time.perf_counter()
    print(f"[demo] 4/6 predicting {data / 'imagesTs'} -> {pred}", flush=True)
    report = predict_folder(data / "imagesTs", pred, weights_dir=weights, device=device,
                            overwrite=True)
    _step(timings, "predict", t)
    timings["per_case_predict"] = _per_case(report)

    t = time.perf_counter()
    print("[demo] 5/6 evaluating", flush=True)
    metrics = evaluate_folders(pred, data / "labelsTs", out / "metrics.json", out / "metrics.csv")
    tumor = tumor_split(metrics, pred, data / "labelsTs")
    _step(timings, "evaluate", t)

    print("[demo] 6/6 pictures", flush=True)
    overlay = _overlay(data, pred, out, render_overlay, tumor)
    curves = _curves(work, out / "training_curves.png")
    timings["total"] = round(time.perf_counter() - t_start, 2)
    summary = demo_summary(metrics, tumor, timings, settings)
    summary_path = out / "demo_summary.json"
    write_json_atomic(summary_path, summary, indent=1)
    return DemoResult(out, metrics, timings, overlay, curves, tumor, summary_path)


def _reusable(weights: Path, stage: str, work: Path, timings: dict) -> bool:
    """True (and the earlier training time recorded) when ``weights/stage`` is a valid export."""
    from c2fseg.weights import load_manifest

    try:
        load_manifest(weights / stage)
    except (FileNotFoundError, ValueError):
        return False
    print(f"[demo] 3/6 {stage}: reusing trained weights in {weights / stage}", flush=True)
    timings[f"train_{stage}"] = _job_timings(work, stage).get("total_s")
    return True


def _train_or_reuse(stage, data, splits_path, work, weights, overrides, device, reuse, timings):
    """Train ``stage`` with the tiny configuration unless this demo folder already has it."""
    from c2fseg.train.run import train_stage

    if reuse and _reusable(weights, stage, work, timings):
        return
    t = time.perf_counter()
    print(f"[demo] 3/6 training {stage} (tiny configuration)", flush=True)
    train_stage(stage, data, splits_path, work, weights, fold="all", config="tiny",
                overrides=overrides, device=device)
    _step(timings, f"train_{stage}", t)


def _side_by_side(device: str) -> bool:
    """Tumor and organ stages train at the same time on a CPU with at least two cores.

    On 2 cores two one-thread trainings get more done than one two-thread training (small
    convolutions scale poorly over threads), and one stage's planning and preprocessing overlaps
    the other's training.
    """
    from c2fseg.device import resolve_device

    return resolve_device(device).type == "cpu" and usable_cpus() >= 2


def _train_side_by_side(stages, data, splits_path, work, weights, overrides, device, timings):
    """Train the tumor and organ stages at once, each with half the cores; logs go to files.

    Their coarse pseudo labels are made first, once, for the cases of both stages that need one
    (the organ stage's need covers the tumor stage's).
    """
    from concurrent.futures import ThreadPoolExecutor

    from c2fseg.data.groups import load_splits
    from c2fseg.train.run import (
        cases_needing_pseudo,
        coarse_pseudo_labels,
        stage_cases,
        train_stage,
    )

    splits = load_splits(splits_path)
    cases = sorted({c for s in stages for c in stage_cases(splits, s)})
    t = time.perf_counter()
    print(f"[demo] 3/6 coarse pseudo labels for {len(cases_needing_pseudo(splits, cases, 'organ'))} "
          "cases (fully annotated tumor-free cases need none)", flush=True)
    pseudo = coarse_pseudo_labels("organ", data, cases, splits, work, weights, device)
    _step(timings, "pseudo_labels", t)
    threads = max(1, usable_cpus() // len(stages))
    logs = {s: work / "jobs" / s / "train.log" for s in stages}
    print(f"[demo] 3/6 training {' and '.join(stages)} side by side ({threads} thread(s) each); "
          f"logs: {', '.join(str(p) for p in logs.values())}", flush=True)

    def run(stage: str) -> float:
        t0 = time.perf_counter()
        train_stage(stage, data, splits_path, work, weights, fold="all", config="tiny",
                    overrides=overrides, device=device, pseudo_labels=pseudo, num_processes=1,
                    torch_threads=threads, log_file=logs[stage])
        return round(time.perf_counter() - t0, 2)

    t = time.perf_counter()
    with ThreadPoolExecutor(len(stages)) as pool:
        futures = {s: pool.submit(run, s) for s in stages}
        _watch(futures, logs, _epochs(stages, overrides))
        for stage, future in futures.items():
            timings[f"train_{stage}"] = future.result()  # re-raises a stage's error
    _step(timings, "train_side_by_side", t)


def _epochs(stages, overrides) -> dict[str, int]:
    from c2fseg.train.plans import resolve_settings

    return {s: int(resolve_settings(s, "tiny", overrides)["epochs"]) for s in stages}


def _watch(futures: dict, logs: dict[str, Path], epochs: dict[str, int], every_s: float = 5.0) -> None:
    """A progress bar over the epochs of trainings running in other threads (from their logs)."""
    from tqdm import tqdm

    with tqdm(total=sum(epochs.values()), desc="training", unit="epoch") as bar:
        while True:
            done = all(f.done() for f in futures.values())
            finished = {s: min(epochs[s], _finished_epochs(logs[s])) for s in futures}
            bar.n = sum(finished.values())
            bar.set_postfix_str(", ".join(f"{s} {n}/{epochs[s]}" for s, n in finished.items()))
            bar.refresh()
            if done:
                return
            _wait_any(futures, every_s)


def _wait_any(futures: dict, timeout: float) -> None:
    from concurrent.futures import FIRST_COMPLETED, wait

    wait([f for f in futures.values() if not f.done()], timeout=timeout, return_when=FIRST_COMPLETED)


def _finished_epochs(log: Path) -> int:
    """Epochs nnU-Net has finished according to a worker log (its "Epoch time" lines)."""
    try:
        return log.read_text(encoding="utf-8", errors="replace").count("Epoch time:")
    except OSError:
        return 0


def _job_timings(work: Path, stage: str) -> dict:
    """The timings.json ``train_stage`` wrote for ``stage`` in ``work`` ({} when absent)."""
    try:
        return json.loads((work / "jobs" / stage / "timings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _overlay(data: Path, pred: Path, out: Path, render, tumor: dict) -> Path | None:
    """Overlay PNG of one predicted test case: the first with a tumor, else the first."""
    preds = sorted(pred.glob("*.nii.gz"))
    if not preds:
        return None
    with_tumor = [p for p in preds if p.name[: -len(".nii.gz")] in tumor.get("per_case", {})]
    chosen = (with_tumor or preds)[0]
    case = chosen.name[: -len(".nii.gz")]
    png = out / f"{case}_prediction.png"
    render(data / "imagesTs" / f"{case}_0000.nii.gz", chosen, png)
    return png


def _curves(work: Path, png: Path) -> Path | None:
    """Training-curves PNG of the stages trained in ``work`` (None when no log is found)."""
    from c2fseg.train.curves import plot_training_curves, training_log

    logs = {}
    for stage in STAGES:
        folder = _job_timings(work, stage).get("output_folder")
        log = training_log(folder) if folder else None
        if log and log["train_losses"]:
            logs[stage] = log
    if not logs:
        return None
    return plot_training_curves(logs, png, title="c2fseg demo: training curves (nnU-Net logs)")


def _per_case(report) -> dict:
    """Mean per-step seconds over the predicted cases, from the run report."""
    cases = report.to_dict()["cases"] if hasattr(report, "to_dict") else report.get("cases", [])
    sums: dict[str, float] = {}
    n = 0
    for case in cases:
        tim = case.get("timings", {}) if isinstance(case, dict) else {}
        if not tim:
            continue
        n += 1
        for k, v in tim.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    return {k: round(v / n, 3) for k, v in sums.items()} if n else {}


def tumor_split(metrics: dict, pred_dir: Path, gt_dir: Path) -> dict:
    """Tumor scores over the test cases that contain a tumor; false-positive volume on the others.

    The FLARE rule scores an empty prediction of an empty ground truth as 1, so a mean over all
    cases is carried by the tumor-free ones; this keeps the two apart.
    """
    from c2fseg.io import read_labels

    name = LABELS[TUMOR]
    with_tumor, without = {}, {}
    for case, scores in metrics.get("cases", {}).items():
        gt = read_labels(Path(gt_dir) / f"{case}.nii.gz")
        if np.any(gt.array == TUMOR):
            with_tumor[case] = scores[name]
            continue
        pred_file = Path(pred_dir) / f"{case}.nii.gz"
        voxels = int(np.count_nonzero(read_labels(pred_file).array == TUMOR)) if pred_file.is_file() else 0
        without[case] = round(voxels * float(np.prod(gt.spacing)) / 1000.0, 3)
    dsc = [s["dsc"] for s in with_tumor.values()]
    nsd = [s["nsd"] for s in with_tumor.values()]
    return {
        "tumor_cases": len(with_tumor),
        "tumor_dsc": float(np.mean(dsc)) if dsc else None,
        "tumor_nsd": float(np.mean(nsd)) if nsd else None,
        "per_case": with_tumor,
        "tumor_free_cases": len(without),
        "false_positive_ml": without,
        "tumor_free_with_false_positive": sum(1 for v in without.values() if v > 0),
    }


def target_check(metrics: dict, tumor: dict) -> dict[str, bool]:
    """Which of the demo's accuracy targets (:data:`TARGETS`) a run met."""
    organ = [metrics["per_label"][LABELS[o]]["dsc"] for o in ORGANS]
    return {
        "organ_dsc_mean": metrics["means"]["organ_dsc"] >= TARGETS["organ_dsc_mean"],
        "organ_dsc_min": min(organ) >= TARGETS["organ_dsc_min"],
        "tumor_dsc_tumor_cases": (tumor["tumor_dsc"] or 0.0) >= TARGETS["tumor_dsc_tumor_cases"],
    }


def demo_summary(metrics: dict, tumor: dict, timings: dict, settings: dict) -> dict:
    """The machine-readable demo record (demo_summary.json)."""
    return {
        "settings": settings,
        "organs": {LABELS[o]: metrics["per_label"][LABELS[o]] for o in ORGANS},
        "organ_mean": {"dsc": metrics["means"]["organ_dsc"], "nsd": metrics["means"]["organ_nsd"]},
        "tumor": tumor,
        "targets": TARGETS,
        "targets_met": target_check(metrics, tumor),
        "timings_s": timings,
        "n_test_cases": metrics["n_scored"],
    }


def format_demo_table(result: DemoResult) -> str:
    """The printed demo report: organ table, tumor rows, timings, targets."""
    m, tum, tim = result.metrics, result.tumor, result.timings

    def pct(x) -> str:
        return "     -" if x is None else f"{100 * x:6.1f}"

    lines = [f"Held-out phantoms: {m['n_scored']}", f"{'':<24} {'DSC %':>6} {'NSD %':>6}"]
    for o in ORGANS:
        s = m["per_label"][LABELS[o]]
        lines.append(f"{LABELS[o]:<24} {pct(s['dsc'])} {pct(s['nsd'])}")
    lines.append(f"{'13 organs (mean)':<24} {pct(m['means']['organ_dsc'])} {pct(m['means']['organ_nsd'])}")
    lines.append(f"{'tumor, ' + str(tum['tumor_cases']) + ' tumor cases':<24} "
                 f"{pct(tum['tumor_dsc'])} {pct(tum['tumor_nsd'])}")
    fp = tum["false_positive_ml"]
    if fp:
        lines.append(f"tumor-free cases: {tum['tumor_free_cases']}, with a false-positive tumor: "
                     f"{tum['tumor_free_with_false_positive']} (largest {max(fp.values()):.1f} ml)")
    lines.append("")
    keys = ("phantoms", "train_coarse", "pseudo_labels", "train_tumor", "train_organ",
            "train_side_by_side", "predict", "evaluate", "total")
    lines.append("Time (s): " + ", ".join(f"{k} {tim[k]}" for k in keys if tim.get(k) is not None))
    if tim.get("train_side_by_side") is not None:
        lines.append("  (tumor and organ trained side by side: train_side_by_side is their wall time)")
    per_case = tim.get("per_case_predict", {})
    if per_case:
        lines.append("Per case (s): " + ", ".join(f"{k} {v}" for k, v in per_case.items()))
    met = target_check(m, tum)
    lines.append("Targets (mean organ DSC >= 85 %, every organ >= 60 %, tumor DSC >= 50 % on tumor "
                 f"cases): {'met' if all(met.values()) else 'NOT met: ' + ', '.join(k for k, v in met.items() if not v)}")
    return "\n".join(lines)
