#!/usr/bin/env python3
"""Check what a dry run of gpu_bench.sh left (``gpu_dry_check.py DRY_DIR``); exit 1 on a problem.

Standard library only. Checks: every step exited 0; the imports came from where they will on the
GPU machine (c2fseg from src/, the shipped packages from the unpacked pack, the rest from the
image stand-in, nothing shadowed); check.json passed; bench.json holds a complete case (cold,
warm, nnUNetPredictor baseline); predict_final.py wrote every case; at most 8 files in $OUT.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

STEPS = ("unpack", "imports", "machine", "phantoms", "weights", "check", "predict", "bench")
REPO = Path(__file__).resolve().parents[1]


def problems(dry: Path) -> tuple[list[str], dict]:
    """(what is wrong, a short summary of what came out)."""
    out, bad = dry / "out", []
    with open(out / "steps.tsv", encoding="utf-8") as fh:
        steps = {r["step"]: r for r in csv.DictReader(fh, delimiter="\t")}
    for name in STEPS:
        if steps.get(name, {}).get("rc") != "0":
            bad.append(f"step {name}: {steps.get(name, 'did not run')}")
    log = (out / "gpu_bench.log").read_text(encoding="utf-8")
    site = str((dry / "site").resolve())
    image = str((dry / "image").resolve())
    expect = {"c2fseg": str(REPO / "src"), "SimpleITK": site, "nnunetv2": site, "cc3d": site,
              "skimage": image, "numpy": image, "torch": image}
    loaded = dict(x.split()[2::2] for x in log.splitlines() if x.startswith("loaded from: "))
    for name, where in expect.items():
        if not loaded.get(name, "").startswith(where):
            bad.append(f"{name} loaded from {loaded.get(name, '?')}, expected under {where}")
    if "shadows the image's" in log:
        bad.append("the pack shadows a package of the image (see the unpack step)")
    summary = {"steps_s": {k: float(v["seconds"]) for k, v in steps.items() if v["seconds"]}}
    check = json.loads((out / "check.json").read_text(encoding="utf-8"))
    summary["check"] = {p: check[p]["equal_fraction"] for p in check["required"]}
    if not check["ok"]:
        bad.append(f"check.json not ok: {summary['check']}")
    bench = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    case = bench["cases"][0] if bench["cases"] else {}
    if "partial" in case or not case.get("warm") or not case.get("baseline", {}).get("variants"):
        bad.append("bench.json: no complete case (cold, warm and baseline)")
    else:
        summary["bench"] = {"cold_s": case["cold"]["total_s"], "warm_s": case["warm"]["total_s"],
                            "baseline_s": case["baseline"]["variants"][0]["seconds"]}
    pred = json.loads((out / "predict_final.json").read_text(encoding="utf-8"))
    inputs = list((dry / "work" / "predict_in").glob("*_0000.nii.gz"))
    if pred["outputs_written"] != len(inputs) or set(pred["statuses"].values()) != {"ok"}:
        bad.append(f"predict_final.json: {pred['outputs_written']} of {len(inputs)} written, "
                   f"statuses {pred['statuses']}")
    summary["predict"] = {k: pred[k] for k in ("process_start_to_last_file_written_s", "per_case_s")}
    files = [p for p in out.rglob("*") if p.is_file()]
    if len(files) > 8:
        bad.append(f"{len(files)} files in $OUT; the device tool brings back at most 8")
    summary["out_files"] = sorted(p.name for p in files)
    return bad, summary


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.splitlines()[0])
        return 2
    try:
        bad, summary = problems(Path(argv[0]))
    except (OSError, KeyError, ValueError, IndexError) as exc:  # a file missing or incomplete
        bad, summary = [f"{type(exc).__name__}: {exc} (see {argv[0]}/out/gpu_bench.log)"], {}
    print(json.dumps(summary, indent=2))
    for b in bad:
        print("DRY RUN PROBLEM:", b)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
