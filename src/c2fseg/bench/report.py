"""Benchmark output: the printed table and the JSON + markdown files (written atomically)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from c2fseg.fileutil import write_text_atomic

ROW_NAMES = {
    "read": "read", "coarse": "coarse (whole volume)", "roi": "ROI box",
    "roi_resample": "ROI resample (to stage spacing)", "organ": "organ sliding window",
    "tumor": "tumor sliding window", "merge_resample_back": "resample back + merge",
    "postprocess": "post-process + paste", "write": "write",
}


def _f(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def machine_line(results: dict) -> str:
    m = results["machine"]
    card = m.get("gpu_name")
    where = f"{card} (driver {m.get('driver')}, CUDA {m.get('cuda')})" if card else "CPU only"
    return (f"{where}; CPU {m.get('cpu_model')} x{m.get('cpu_cores_usable')} usable cores; "
            f"torch {m.get('torch')}; load at start {m.get('load_average_at_start')}")


def case_table(case: dict) -> list[str]:
    """Markdown rows for one case: stages cold/warm, totals, memory, baseline."""
    cold, warm = case["cold"], case.get("warm")
    lines = [f"### {case['name']}: {case['shape_zyx']} voxels at {case['spacing_zyx']} mm; "
             f"ROI {case['roi']['shape_zyx'] if case['roi'] else '-'} from {case['roi_source']}", "",
             "| stage | cold s | warm s (median) |", "|---|---:|---:|"]
    for key, name in ROW_NAMES.items():
        w = warm["stages"][key] if warm else None
        lines.append(f"| {name} | {_f(cold['stages'][key])} | {_f(w)} |")
    lines.append(f"| **total per case** | **{_f(cold['total_s'])}** | **{_f(warm['total_s'] if warm else None)}** |")
    lines.append(f"| model building/loading | {_f(case['load_models_s'])} | |")
    lines.append(f"| cold end to end incl. models | {_f(case['cold_end_to_end_s'])} | |")
    lines.append(f"| process wall time so far | {_f(case['process_wall_s'])} | |")
    mem_w = warm["memory"] if warm else {}
    cm = cold["memory"]
    lines.append(f"| peak host RSS MB (sampled 0.1 s) | {_f(cm['peak_host_rss_mb'], 0)} | {_f(mem_w.get('peak_host_rss_mb'), 0)} |")
    lines.append(f"| peak GPU MB ({cm['gpu_source'] or 'no GPU'}) | {_f(cm['peak_gpu_mb'], 0)} | {_f(mem_w.get('peak_gpu_mb'), 0)} |")
    lines.append(f"| GPU memory-time area MB·s | {_f(cm['gpu_area_mb_s'], 0)} | {_f(mem_w.get('gpu_area_mb_s'), 0)} |")
    lines.append(f"| peak host maxrss MB (getrusage, whole process) | {_f(case.get('peak_host_maxrss_mb'), 0)} | |")
    base = case.get("baseline", {})
    lines.append("")
    if base.get("variants"):
        lines += [f"Baseline on the ROI crop {base['crop_shape_zyx']} (same organ weights): c2fseg organ "
                  f"stage {_f(base['c2fseg_organ_s'])} s ({base['c2fseg_precision']})", "",
                  "| predictor | s | × organ stage | × whole c2fseg case | voxels equal | mean Dice | peak GPU MB |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for v in base["variants"]:
            a = v["agreement_with_c2fseg_organ"]
            lines.append(f"| {v['name']} | {_f(v['seconds'])} | {_f(v['speedup_vs_c2fseg_organ_stage'], 1)} | "
                         f"{_f(v['speedup_vs_c2fseg_whole_case'], 1)} | {_f(a['equal_fraction'], 4)} | "
                         f"{_f(a['mean_dice'], 3)} | {_f(v['memory']['peak_gpu_mb'], 0)} |")
    else:
        lines.append(f"Baseline: {base.get('skipped', 'not run')}")
    if case.get("partial"):
        lines += ["", f"**Partial result** (the run stopped or is still going): {case['partial']}."]
    return lines


def context_line(results: dict) -> list[str]:
    """The CUDA context's own cost (made before the first sample, so outside every run's time)."""
    ctx = results.get("cuda_context")
    if not ctx:
        return []
    mb = ctx.get("context_mb")
    return [f"CUDA context: created in {_f(ctx.get('seconds'))} s before the first case's timing; "
            f"its own GPU memory {_f(mb, 0) if mb is not None else 'not measured'} MB "
            f"(NVML used after minus before, less torch's reservation).", ""]


def format_markdown(results: dict) -> str:
    """The whole result as markdown (machine, models, one table per case, notes)."""
    lines = [f"# c2fseg bench: {results['options']['models']} models on {results['device']}", "",
             f"Machine: {machine_line(results)}", "",
             f"Created {results['created_utc']}; warm runs per case: {results['warm_runs']}; "
             f"baseline: {results['baseline']}.", "", *context_line(results)]
    if results["cases"]:
        lines += ["| stage | spacing mm | patch | step | features | parameters | precision |",
                  "|---|---|---|---:|---|---:|---|"]
        for name, m in results["cases"][0]["models"].items():
            lines.append(f"| {name} | {m['spacing_zyx']} | {m['patch_zyx']} | {m['step']} | "
                         f"{m['features_per_stage']} | {m['parameters']:,} | {m['precision']} |")
        lines.append("")
    for case in results["cases"]:
        lines += case_table(case) + [""]
    if results["notes"]:
        lines += ["Notes:", *[f"- {n}" for n in results["notes"]], ""]
    return "\n".join(lines)


def format_table(results: dict) -> str:
    """What ``c2fseg bench`` prints last."""
    out = results.get("output")
    return format_markdown(results) + (f"\nResults: {out} (+ .md)\n" if out else "")


def write_results(results: dict, path: str | os.PathLike) -> Path:
    """JSON at ``path`` and the markdown summary beside it (``.md``), both atomically."""
    path = Path(path)
    write_text_atomic(path, json.dumps(results, indent=2, default=str) + "\n")
    write_text_atomic(path.with_suffix(".md"), format_markdown(results))
    return path
