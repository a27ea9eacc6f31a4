"""Score a folder of predicted label maps against ground truth (official FLARE23 rules).

Cases are matched by file name (``<case>.nii.gz`` on both sides). A prediction without ground
truth cannot be scored and is listed; ground truth without a prediction is scored as an empty
prediction and listed, so a crashed inference run costs points instead of vanishing from the mean.
A prediction that cannot be used (unreadable, values outside 0-14, not on the ground-truth grid,
two files for one case) is scored as empty too and listed as failed with the reason: a broken
output must never score better than a missing one. Only cases whose ground truth cannot be read
(or whose scoring crashed) are left out of the means; they are listed as failed.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from c2fseg.fileutil import default_workers, write_json_atomic, write_text_atomic
from c2fseg.io.geometry import GEOMETRY_TOLERANCE
from c2fseg.labels import ALL_FOREGROUND, NSD_MIN_DSC, ORGANS, TUMOR, label_name
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


def list_cases(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Map case id -> label file in ``folder`` (``<case>.<ext>``, :func:`c2fseg.io.find_cases`
    in the "labels" layout), plus the ids that appear with two extensions."""
    from c2fseg.io.discover import COLLISION, find_cases

    cases = find_cases(folder, "labels")
    found = {c.case_id: c.path for c in cases}
    return found, sorted(c.case_id for c in cases if c.problem == COLLISION)


def _read_prediction(pred_path: str | os.PathLike, gt) -> np.ndarray:
    """A prediction's canonical array; ValueError (naming both files) if it is not on gt's grid."""
    from c2fseg.io import geometry_difference, read_labels

    pred = read_labels(pred_path)
    why = geometry_difference(pred.geometry, gt.geometry, GEOMETRY_TOLERANCE)
    if why:
        raise ValueError(
            f"{pred_path}: geometry differs from the ground truth {gt.path} ({why}); "
            "predictions must be written on the ground-truth image grid"
        )
    return pred.array


def _z_drop(gt) -> str:
    """Which end of the aorta/IVC/esophagus range the official scorer leaves out for this file."""
    return "first" if gt.geometry.flip[0] else "last"


def score_files(
    pred_path: str | os.PathLike | None,
    gt_path: str | os.PathLike,
    labels: Sequence[int] | None = None,
    nsd_min_dsc: float = NSD_MIN_DSC,
) -> dict[int, dict[str, float]]:
    """Read one prediction/ground-truth pair and score it; ``pred_path=None`` = empty prediction.

    Raises ValueError (with the file names) when a file is unreadable or the headers differ.
    """
    from c2fseg.io import read_labels

    gt = read_labels(gt_path)
    pred_array = np.zeros_like(gt.array) if pred_path is None else _read_prediction(pred_path, gt)
    return score_case(pred_array, gt.array, gt.spacing, labels, z_drop=_z_drop(gt),
                      nsd_min_dsc=nsd_min_dsc)


_READ_ERRORS = (ValueError, OSError, RuntimeError)


def _score_task(pred_path, gt_path, labels, nsd_min_dsc=NSD_MIN_DSC) -> tuple[dict | None, str | None]:
    """Worker entry point; never raises for a bad case: returns (scores, failure reason).

    A prediction that cannot be used is scored as empty and the reason is returned with the
    scores; scores are None only when the ground truth itself cannot be read.
    """
    from c2fseg.io import read_labels

    try:
        gt = read_labels(gt_path)
    except _READ_ERRORS as exc:
        return None, f"ground truth not scored: {type(exc).__name__}: {exc}"
    pred_array, why = None, None
    if pred_path is not None:
        try:
            pred_array = _read_prediction(pred_path, gt)
        except _READ_ERRORS as exc:
            why = f"{type(exc).__name__}: {exc} (scored as an empty prediction)"
    if pred_array is None:
        pred_array = np.zeros_like(gt.array)
    scores = score_case(pred_array, gt.array, gt.spacing, labels, z_drop=_z_drop(gt),
                        nsd_min_dsc=nsd_min_dsc)
    return scores, why


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
    nsd_min_dsc: float = NSD_MIN_DSC,
) -> dict:
    """Score every case of ``gt_dir`` against ``pred_dir``; write JSON (and CSV); return the report.

    The report holds per-case per-label DSC/NSD, per-label means, the organ/tumor means, the cases
    missing on either side and the failed cases with reasons (``scored_as_empty`` tells whether
    the case still counts in the means, with an empty prediction). Raises FileNotFoundError for a
    missing folder and :class:`c2fseg.io.FolderError` when an output would go inside an input
    folder.
    """
    from c2fseg.io.errors import FolderError
    from c2fseg.parallel import run_cases

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for name, folder in (("prediction", pred_dir), ("ground-truth", gt_dir)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: {name} folder does not exist")
    for out in (out_json, out_csv):
        for folder in (pred_dir, gt_dir):
            if out is not None and Path(out).resolve().is_relative_to(folder.resolve()):
                raise FolderError(f"{out} is inside the input folder {folder}; write it elsewhere")
    labels = sorted(set(ALL_FOREGROUND if labels is None else (int(x) for x in labels)))
    for lab in labels:
        label_name(lab)  # raises ValueError for ids outside 0-14
    if 0 in labels:
        raise ValueError("label 0 (background) is not scored; choose labels 1-14")
    preds, pred_dups = list_cases(pred_dir)
    gts, gt_dups = list_cases(gt_dir)
    if not gts:
        raise FileNotFoundError(f"{gt_dir}: no label files (.nii.gz, .nii, .nrrd, .mha, ...) found")
    failed = [{"case": c, "reason": f"two files with this case id in {d} (different "
               "extensions); not scored", "scored_as_empty": False}
              for d, dups in ((gt_dir, gt_dups), (pred_dir, pred_dups))
              for c in dups if d == gt_dir or c not in gts]
    bad_pred = {c: f"two files with this case id in {pred_dir} (different extensions); scored as "
                "an empty prediction" for c in pred_dups if c in gts and c not in gt_dups}
    skip = set(gt_dups) | set(pred_dups)
    missing_pred = sorted(set(gts) - set(preds) - skip)
    missing_gt = sorted(set(preds) - set(gts) - skip)
    tasks = [(c, (None if c in bad_pred else preds.get(c), gts[c], labels, nsd_min_dsc))
             for c in sorted(gts) if c not in gt_dups]
    cases: dict[str, dict[int, dict[str, float]]] = {}
    for case, outcome, error in run_cases(_score_task, tasks, workers or default_workers(),
                                          desc="evaluate"):
        scores, why = outcome if outcome is not None else (None, error)
        if scores is not None and case in bad_pred:
            why = bad_pred[case]
        if scores is not None:
            cases[case] = scores
        if why is not None:
            failed.append({"case": case, "reason": why, "scored_as_empty": scores is not None})
    report = {
        "tool": "c2fseg evaluate",
        "pred_dir": str(pred_dir.resolve()),
        "gt_dir": str(gt_dir.resolve()),
        "labels": {str(lab): label_name(lab) for lab in labels},
        "rules": {"nsd_min_dsc": nsd_min_dsc, "z_range_labels": "last ground-truth slice excluded"},
        "n_cases": len(set(gts) | set(preds)),
        "n_scored": len(cases),
        **summarize(cases, labels),
        "missing": {"predictions": missing_pred, "ground_truth": missing_gt},
        "failed": sorted(failed, key=lambda f: f["case"]),
        "cases": {
            case: {label_name(lab): s for lab, s in scores.items()} for case, scores in cases.items()
        },
    }
    write_json_atomic(out_json, report)
    if out_csv is not None:
        failed_preds = {f["case"] for f in failed if f["scored_as_empty"]}
        write_text_atomic(out_csv, cases_csv(cases, set(missing_pred), failed_preds))
    return report


def cases_csv(cases: dict[str, dict[int, dict[str, float]]], missing_pred: set[str],
              failed_pred: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    """One row per case and label: case, label_id, label, dsc, nsd, missing_prediction,
    failed_prediction (1 = the prediction could not be used and was scored as empty)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case", "label_id", "label", "dsc", "nsd", "missing_prediction",
                     "failed_prediction"])
    for case in sorted(cases):
        for lab, s in sorted(cases[case].items()):
            row = [case, lab, label_name(lab), f"{s['dsc']:.6f}", f"{s['nsd']:.6f}"]
            writer.writerow(row + [int(case in missing_pred), int(case in failed_pred)])
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
        f"failed: {len(report['failed'])} (unusable predictions scored as empty)"
    )
    for name in miss["predictions"]:
        lines.append(f"  missing prediction: {name}")
    for name in miss["ground_truth"]:
        lines.append(f"  missing ground truth: {name}")
    for f in report["failed"]:
        lines.append(f"  failed: {f['case']}: {f['reason']}")
    return "\n".join(lines)
