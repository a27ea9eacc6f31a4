"""The built-in demo: phantoms -> split -> tiny three-stage training -> predict -> evaluate -> PNG.

Everything runs on the CPU in minutes. Trained demo weights are reused when they are already
present (a valid manifest), so a second run only predicts and evaluates.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from c2fseg.labels import STAGES

#: Group mix for the demo's training set: more complete cases than FLARE so that the coarse
#: model (trained on G6 only) has enough data at this tiny scale.
DEMO_GROUP_FRACTIONS = {"G6": 0.45, "G4": 0.30, "G5": 0.10, "G1": 0.15}


@dataclass
class DemoResult:
    """Where the demo put things and what it measured."""

    out_dir: Path
    metrics: dict
    timings: dict = field(default_factory=dict)
    overlay_png: Path | None = None


def _step(timings: dict, name: str, start: float) -> None:
    timings[name] = round(time.perf_counter() - start, 2)


def run_demo(
    out_dir: str | Path = "demo_out",
    *,
    train_cases: int = 20,
    test_cases: int = 4,
    seed: int = 0,
    device: str = "auto",
    retrain: bool = False,
    epochs: int | None = None,
) -> DemoResult:
    """Run the whole demo under ``out_dir`` and return the metrics and timings."""
    from c2fseg.data.groups import build_splits, write_splits
    from c2fseg.data.phantom import generate_dataset
    from c2fseg.evaluate import evaluate_folders
    from c2fseg.infer.batch import predict_folder
    from c2fseg.train.run import train_stage
    from c2fseg.viz import render_overlay
    from c2fseg.weights import load_manifest

    out = Path(out_dir).resolve()
    data, work, weights = out / "data", out / "work", out / "weights"
    pred, timings = out / "predictions", {}

    t = time.perf_counter()
    print(f"[demo] 1/5 phantoms -> {data}")
    generate_dataset(data, cases=train_cases, seed=seed, size="small", test_cases=test_cases,
                     group_fractions=DEMO_GROUP_FRACTIONS)
    _step(timings, "phantoms", t)

    t = time.perf_counter()
    print("[demo] 2/5 groups and splits")
    splits_path = out / "splits.json"
    write_splits(build_splits(data, folds=5, seed=seed), splits_path)
    _step(timings, "split", t)

    overrides = {"epochs": epochs} if epochs else None
    for stage in STAGES:
        t = time.perf_counter()
        try:
            if retrain:
                raise FileNotFoundError
            load_manifest(weights / stage)
            print(f"[demo] 3/5 {stage}: reusing trained weights in {weights / stage}")
        except (FileNotFoundError, ValueError):
            print(f"[demo] 3/5 training {stage} (tiny configuration)")
            train_stage(stage, data, splits_path, work, weights, fold="all", config="tiny",
                        overrides=overrides, device=device)
        _step(timings, f"train_{stage}", t)

    t = time.perf_counter()
    print(f"[demo] 4/5 predicting {data / 'imagesTs'} -> {pred}")
    report = predict_folder(data / "imagesTs", pred, weights_dir=weights, device=device)
    _step(timings, "predict", t)

    t = time.perf_counter()
    print("[demo] 5/5 evaluating")
    metrics = evaluate_folders(pred, data / "labelsTs", out / "metrics.json", out / "metrics.csv")
    _step(timings, "evaluate", t)

    first = sorted(pred.glob("*.nii.gz"))
    png = None
    if first:
        case = first[0].name[: -len(".nii.gz")]
        image = data / "imagesTs" / f"{case}_0000.nii.gz"
        png = out / f"{case}_prediction.png"
        render_overlay(image, first[0], png)
    timings["per_case_predict"] = _per_case(report)
    (out / "demo_timings.json").write_text(json.dumps(timings, indent=2), encoding="utf-8")
    return DemoResult(out, metrics, timings, png)


def _per_case(report) -> dict:
    """Mean per-stage seconds over the predicted cases, from the run report."""
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
