"""Score a folder of predicted label maps against ground truth (official FLARE23 rules).

Cases are matched by file name (``<case>.nii.gz`` on both sides). A prediction without ground
truth cannot be scored and is listed; ground truth without a prediction is scored as an empty
prediction and listed, so a crashed inference run costs points instead of vanishing from the mean.
Cases whose files cannot be read or whose geometry differs are reported as failed with a reason.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from c2fseg.labels import ALL_FOREGROUND, ORGANS, TUMOR, label_name
from c2fseg.metrics import dice, normalized_surface_distance, score_case

__all__ = [
    "GEOMETRY_TOLERANCE",
    "dice",
    "evaluate_folders",
    "format_summary",
    "normalized_surface_distance",
    "score_case",
    "score_files",
]

#: Largest difference allowed between prediction and ground-truth headers (spacing/origin in mm,
#: direction cosines), relative for values above 1.
GEOMETRY_TOLERANCE = 1e-4


def default_workers() -> int:
    """min(4, usable CPUs): scoring is memory-bound, more processes rarely help."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def list_cases(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Map case id -> label file in ``folder``, plus the ids that appear with two extensions."""
    from c2fseg.io.formats import image_extension, strip_image_extension

    found: dict[str, Path] = {}
    duplicates: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or image_extension(path) is None or not path.is_file():
            continue
        case = strip_image_extension(path)
        if case in found:
            duplicates.append(case)
        found[case] = path
    return found, sorted(set(duplicates))


def geometry_difference(a, b, tol: float = GEOMETRY_TOLERANCE) -> str | None:
    """Why two headers (c2fseg Geometry objects) differ, or None when they match within ``tol``."""
    if tuple(a.size) != tuple(b.size):
        return f"size {tuple(a.size)} vs {tuple(b.size)}"
    for field in ("spacing", "origin", "direction"):
        va, vb = np.asarray(getattr(a, field), float), np.asarray(getattr(b, field), float)
        limit = tol * np.maximum(1.0, np.maximum(np.abs(va), np.abs(vb)))
        if np.any(np.abs(va - vb) > limit):
            return f"{field} {_fmt(va)} vs {_fmt(vb)}"
    return None


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def score_files(
    pred_path: str | os.PathLike | None,
    gt_path: str | os.PathLike,
    labels: Sequence[int] | None = None,
) -> dict[int, dict[str, float]]:
    """Read one prediction/ground-truth pair and score it; ``pred_path=None`` = empty prediction.

    Raises ValueError (with the file names) when a file is unreadable or the headers differ.
    """
    from c2fseg.io import read_labels

    gt = read_labels(gt_path)
    if pred_path is None:
        pred_array = np.zeros_like(gt.array)
    else:
        pred = read_labels(pred_path)
        why = geometry_difference(pred.geometry, gt.geometry)
        if why:
            raise ValueError(
                f"{pred_path}: geometry differs from the ground truth {gt_path} ({why}); "
                "predictions must be written on the ground-truth image grid"
            )
        pred_array = pred.array
    return score_case(pred_array, gt.array, gt.spacing, labels)


def _score_task(case: str, pred_path, gt_path, labels) -> tuple[str, dict | None, str | None]:
    """Worker entry point: never raises for a bad case, returns (case, scores, failure reason)."""
    try:
        return case, score_files(pred_path, gt_path, labels), None
    except (ValueError, OSError, RuntimeError) as exc:
        return case, None, f"{type(exc).__name__}: {exc}"


def _run_tasks(tasks: list[tuple], workers: int) -> list[tuple[str, dict | None, str | None]]:
    """Run the scoring tasks in a process pool (inline for one worker) with a progress bar."""
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="evaluate", unit="case", disable=None)
    results = []
    try:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                results.append(_score_task(*task))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
                futures = [pool.submit(_score_task, *task) for task in tasks]
                for future in as_completed(futures):
                    results.append(future.result())
                    bar.update()
    finally:
        bar.close()
    return sorted(results, key=lambda r: r[0])


def _mean(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else None


def summarize(cases: dict[str, dict[int, dict[str, float]]], labels: Sequence[int]) -> dict:
    """Per-label means over cases and the FLARE headline means (13 organs, tumor)."""
    per_label = {}
    for lab in labels:
        scores = [c[lab] for c in cases.values() if lab in c]
        per_label[label_name(lab)] = {
            "id": lab,
            "dsc": _mean(s["dsc"] for s in scores),
            "nsd": _mean(s["nsd"] for s in scores),
            "n": len(scores),
        }
    organs = [label_name(lab) for lab in labels if lab in ORGANS]

    def organ_mean(key: str) -> float | None:
        return _mean(per_label[n][key] for n in organs) if organs else None

    tumor = per_label.get(label_name(TUMOR), {})
    means = {
        "organ_dsc": organ_mean("dsc"),
        "organ_nsd": organ_mean("nsd"),
        "organs_scored": len(organs),
        "tumor_dsc": tumor.get("dsc"),
        "tumor_nsd": tumor.get("nsd"),
    }
    return {"per_label": per_label, "means": means}


def evaluate_folders(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    out_json: str | os.PathLike,
    out_csv: str | os.PathLike | None = None,
    workers: int | None = None,
    labels: Sequence[int] | None = None,
) -> dict:
    """Score every case of ``gt_dir`` against ``pred_dir``; write JSON (and CSV); return the report.

    The report holds per-case per-label DSC/NSD, per-label means, the organ/tumor means, the cases
    missing on either side and the failed cases with reasons.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for name, folder in (("prediction", pred_dir), ("ground-truth", gt_dir)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: {name} folder does not exist")
    labels = sorted(set(ALL_FOREGROUND if labels is None else (int(x) for x in labels)))
    for lab in labels:
        label_name(lab)  # raises ValueError for ids outside 0-14
    if 0 in labels:
        raise ValueError("label 0 (background) is not scored; choose labels 1-14")
    preds, pred_dups = list_cases(pred_dir)
    gts, gt_dups = list_cases(gt_dir)
    if not gts:
        raise FileNotFoundError(f"{gt_dir}: no label files (.nii.gz, .nii, .nrrd, .mha, ...) found")
    failed = [
        {"case": c, "reason": f"two files with this case id in {d} (different extensions)"}
        for d, dups in ((pred_dir, pred_dups), (gt_dir, gt_dups))
        for c in dups
    ]
    skip = {f["case"] for f in failed}
    missing_pred = sorted(set(gts) - set(preds) - skip)
    missing_gt = sorted(set(preds) - set(gts) - skip)
    tasks = [(c, preds.get(c), gts[c], labels) for c in sorted(gts) if c not in skip]
    results = _run_tasks(tasks, workers or default_workers())
    cases = {case: scores for case, scores, _ in results if scores is not None}
    failed += [{"case": case, "reason": why} for case, _, why in results if why is not None]
    report = {
        "tool": "c2fseg evaluate",
        "pred_dir": str(pred_dir.resolve()),
        "gt_dir": str(gt_dir.resolve()),
        "labels": {str(lab): label_name(lab) for lab in labels},
        "n_cases": len(set(gts) | set(preds)),
        "n_scored": len(cases),
        **summarize(cases, labels),
        "missing": {"predictions": missing_pred, "ground_truth": missing_gt},
        "failed": sorted(failed, key=lambda f: f["case"]),
        "cases": {
            case: {label_name(lab): s for lab, s in scores.items()} for case, scores in cases.items()
        },
    }
    _write_text_atomic(Path(out_json), json.dumps(report, indent=2) + "\n")
    if out_csv is not None:
        _write_text_atomic(Path(out_csv), cases_csv(cases, set(missing_pred)))
    return report


def cases_csv(cases: dict[str, dict[int, dict[str, float]]], missing_pred: set[str]) -> str:
    """One row per case and label: case, label_id, label, dsc, nsd, missing_prediction."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case", "label_id", "label", "dsc", "nsd", "missing_prediction"])
    for case in sorted(cases):
        for lab, s in sorted(cases[case].items()):
            row = [case, lab, label_name(lab), f"{s['dsc']:.6f}", f"{s['nsd']:.6f}"]
            writer.writerow(row + [int(case in missing_pred)])
    return buf.getvalue()


def format_summary(report: dict) -> str:
    """Human-readable per-label table plus headline means and missing/failed counts."""

    def pct(x: float | None) -> str:
        return "   -  " if x is None else f"{100 * x:6.2f}"

    lines = [f"{'label':<22} {'DSC %':>6} {'NSD %':>6} {'n':>5}"]
    for name, s in report["per_label"].items():
        lines.append(f"{name:<22} {pct(s['dsc'])} {pct(s['nsd'])} {s['n']:>5}")
    m = report["means"]
    lines.append(f"{'organs (mean of ' + str(m['organs_scored']) + ')':<22} "
                 f"{pct(m['organ_dsc'])} {pct(m['organ_nsd'])}")
    lines.append(f"{'tumor':<22} {pct(m['tumor_dsc'])} {pct(m['tumor_nsd'])}")
    miss = report["missing"]
    lines.append(
        f"scored {report['n_scored']} case(s); missing predictions: {len(miss['predictions'])} "
        f"(scored as empty); missing ground truth: {len(miss['ground_truth'])} (not scored); "
        f"failed: {len(report['failed'])}"
    )
    for name in miss["predictions"]:
        lines.append(f"  missing prediction: {name}")
    for name in miss["ground_truth"]:
        lines.append(f"  missing ground truth: {name}")
    for f in report["failed"]:
        lines.append(f"  failed: {f['case']}: {f['reason']}")
    return "\n".join(lines)


def _write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
