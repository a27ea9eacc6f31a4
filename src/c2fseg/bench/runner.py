"""``run_bench``: time the cascade per stage, cold and warm, with memory, against nnU-Net.

Per case: models are built (timed), the first run is "cold" (on the first case it also pays the
CUDA context and cuDNN autotuning), then ``warm`` runs whose median is reported. Stage rows
partition each run's wall time: read, coarse, roi, roi_resample (organ/tumor models resampling
the crop to their spacing), organ, tumor (sliding windows), merge_resample_back (logits back to
the crop grid + merge), postprocess (components + paste into the full volume), write.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from c2fseg.bench.baseline import agreement, baseline_variants, make_predictor, run_nnunet
from c2fseg.bench.cases import DEFAULT_CACHE, BenchCase, box_labels, fixed_box, resolve_cases
from c2fseg.bench.models import BenchModels, random_models, trained_models
from c2fseg.bench.monitor import (
    MemorySampler,
    cuda_context_info,
    ensure_cuda_context,
    machine_info,
    maxrss_mb,
)
from c2fseg.bench.report import format_table, write_results
from c2fseg.device import resolve_device

STAGE_ROWS = ("read", "coarse", "roi", "roi_resample", "organ", "tumor", "merge_resample_back",
              "postprocess", "write")
SCHEMA = "c2fseg-bench/1"


@dataclass
class BenchOptions:
    """Everything a benchmark run depends on (recorded in the JSON)."""

    cases: list[str] = field(default_factory=lambda: ["full-phantom"])
    models: str = "production"  # production | thin | a weights folder
    roi: str = "auto"  # auto | fixed | labels | coarse
    device: str = "auto"
    warm: int | None = None  # None: 3 on CUDA, 1 on CPU
    baseline: str = "auto"  # auto | none | nomirror | all
    precision: str = "auto"
    out: Path | None = None
    cache_dir: Path = DEFAULT_CACHE
    seed: int = 0
    patch: tuple[int, int, int] | None = None  # tests: tiny patches
    width: int | None = None  # tests: tiny networks
    notes: list[str] = field(default_factory=list)
    progress: bool = True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def default_out(device: torch.device, models: str) -> Path:
    """benchmarks/results/bench-<device>-<models>-<date>.json."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    kind = models if models in ("production", "thin") else "weights"
    return Path("benchmarks/results") / f"bench-{slug}-{kind}-{_dt.date.today().isoformat()}.json"


def build_models(opts: BenchOptions, device: torch.device) -> BenchModels:
    if opts.models in ("production", "thin"):
        return random_models(opts.models, device, seed=opts.seed, precision=opts.precision,
                             patch=opts.patch, width=opts.width)
    return trained_models(opts.models, device, precision=opts.precision)


def roi_mode(opts: BenchOptions) -> str:
    """'coarse' for trained weights, else a fixed box (from labels when the case has them)."""
    if opts.roi != "auto":
        return opts.roi
    return "fixed" if opts.models in ("production", "thin") else "coarse"


def roi_map(case: BenchCase, shape, mode: str) -> tuple[np.ndarray | None, str]:
    """Coarse-label substitute giving the ROI for ``mode`` (None = use the coarse model)."""
    from c2fseg.io import read_labels

    if mode == "coarse":
        return None, "coarse model"
    if mode in ("fixed", "labels") and case.labels is not None:
        labels = read_labels(case.labels).array
        if tuple(labels.shape) == tuple(shape) and labels.any():
            return labels, f"ground-truth labels ({case.labels.name})"
    if mode == "labels":
        raise ValueError(f"--roi labels: case {case.name} has no usable label file")
    return box_labels(tuple(shape), fixed_box(tuple(shape))), "fixed box (central 60% in-plane, middle 50% of slices)"


def split_stages(cascade: dict, models: BenchModels, read_s: float, write_s: float) -> dict:
    """Stage rows (see module docstring) from the cascade timer and the models' own timings."""
    organ, tumors = models.organ, models.tumors
    t_in = sum(t.summed("resample_in") for t in tumors)
    t_out = sum(t.summed("resample_out") for t in tumors)
    return {
        "read": read_s,
        "coarse": cascade.get("coarse", 0.0),
        "roi": cascade.get("roi", 0.0),
        "roi_resample": organ.summed("resample_in") + t_in,
        "organ": cascade.get("organ", 0.0) - organ.summed("resample_in") - organ.summed("resample_out"),
        "tumor": cascade.get("tumor", 0.0) - t_in - t_out,
        "merge_resample_back": organ.summed("resample_out") + t_out + cascade.get("merge", 0.0),
        "postprocess": cascade.get("postprocess", 0.0),
        "write": write_s,
    }


def run_once(case: BenchCase, models: BenchModels, device: torch.device, out_dir: Path) -> tuple[dict, object, object]:
    """One end-to-end case: read, cascade, write. Returns (timings, volume, result)."""
    from c2fseg.infer.cascade import CascadeOptions, segment_volume
    from c2fseg.io import read_image, write_labels

    models.clear()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    volume = read_image(case.image)
    t_read = time.perf_counter()
    result = segment_volume(volume, models.cascade_models(), CascadeOptions())
    t_seg = time.perf_counter()
    write_labels(result.labels, volume.geometry, out_dir / f"{case.name}.nii.gz")
    t_end = time.perf_counter()
    stages = split_stages(result.timings, models, t_read - t0, t_end - t_seg)
    timings = {
        "stages": {k: round(v, 4) for k, v in stages.items()},
        "total_s": round(t_end - t0, 4),
        "status": result.status,
        "cascade": result.timings,
        "model_calls": {w.name: w.calls[:] for w in models.wrappers},
    }
    if device.type == "cuda":
        timings["torch_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return timings, volume, result


def median_run(runs: list[dict]) -> dict:
    """Median of each stage and of the total over warm runs."""
    return {
        "stages": {k: round(statistics.median(r["stages"][k] for r in runs), 4) for k in STAGE_ROWS},
        "total_s": round(statistics.median(r["total_s"] for r in runs), 4),
    }


def time_case(case: BenchCase, opts: BenchOptions, device: torch.device, warm: int,
              variants: list[bool], tmp: Path, t_process: float,
              save: Callable[[dict], None] = lambda entry: None) -> dict:
    """Cold + warm runs of one case, then the nnU-Net baseline on its ROI crop.

    ``save(entry)`` is called with the case entry so far after the cold run and after every warm
    run (the entry says ``"partial"`` what is still missing), so a run killed later still leaves
    the finished runs on disk.
    """
    from c2fseg.io import read_geometry

    shape = read_geometry(case.image).canonical_shape
    mode = roi_mode(opts)
    with MemorySampler(device) as cold_mem:
        t0 = time.perf_counter()
        models = build_models(opts, device)
        _sync(device)
        load_s = time.perf_counter() - t0
        substitute, roi_source = roi_map(case, shape, mode)
        models.coarse.roi_labels = substitute
        cold, volume, result = run_once(case, models, device, tmp)
    entry = {
        "name": case.name, "image": str(case.image), "shape_zyx": list(volume.shape),
        "spacing_zyx": [round(s, 4) for s in volume.spacing], "roi_source": roi_source,
        "roi": result.roi.to_dict(volume.spacing) if result.roi else None,
        "models": models.describe(), "load_models_s": round(load_s, 3),
        "cold": {**cold, "memory": cold_mem.summary()},
        "cold_end_to_end_s": round(load_s + cold["total_s"], 3),
        "process_wall_s": round(time.time() - t_process, 3),
        "peak_host_maxrss_mb": maxrss_mb(),
        "partial": f"cold run done; 0 of {warm} warm runs, baseline not run",
    }
    save(entry)
    runs, mems = [], []
    for i in range(warm):
        with MemorySampler(device) as mem:
            run, volume, result = run_once(case, models, device, tmp)
        runs.append(run)
        mems.append(mem.summary())
        entry["warm"] = {**median_run(runs), "runs": runs, "memory": max_memory(mems)}
        entry["peak_host_maxrss_mb"] = maxrss_mb()
        entry["partial"] = f"cold run done; {i + 1} of {warm} warm runs, baseline not run"
        save(entry)
    entry["baseline"] = baseline_case(volume, result, models, device, variants, entry)
    entry["peak_host_maxrss_mb"] = maxrss_mb()
    del entry["partial"]
    return entry


def max_memory(mems: list[dict]) -> dict:
    """Worst (largest) memory figures over several runs."""
    out = dict(mems[0])
    for key in ("peak_host_rss_mb", "peak_gpu_mb", "gpu_area_mb_s"):
        vals = [m[key] for m in mems if m.get(key) is not None]
        out[key] = max(vals) if vals else None
    out["runs"] = len(mems)
    return out


def baseline_case(volume, result, models: BenchModels, device: torch.device, variants: list[bool],
                  entry: dict) -> dict:
    """Our organ stage vs nnUNetPredictor (same weights, same ROI crop): time ratio and agreement."""
    if not variants:
        return {"skipped": "--baseline none"}
    if result.roi is None:
        return {"skipped": "no ROI"}
    crop_np = np.ascontiguousarray(volume.array[result.roi.slices])
    crop = torch.from_numpy(crop_np).to(device)
    organ = models.organ
    ours, ours_s = None, []
    for _ in range(2):  # second call is warm
        _sync(device)
        t0 = time.perf_counter()
        ours = organ.predict(crop, volume.spacing).labels.cpu().numpy()
        _sync(device)
        ours_s.append(time.perf_counter() - t0)
    src = models.sources["organ"]
    warm_total = entry.get("warm", entry["cold"])["total_s"]
    out = {"input": "ROI crop", "crop_shape_zyx": list(crop_np.shape), "c2fseg_organ_s": round(ours_s[-1], 4),
           "c2fseg_precision": organ.precision, "variants": []}
    for mirror in variants:
        predictor = make_predictor(organ.network, src.plans, src.dataset_json, src.configuration, device, mirror)
        with MemorySampler(device) as mem:
            theirs, secs = run_nnunet(predictor, crop_np, volume.spacing, organ.channel_labels)
        out["variants"].append({
            "name": "nnUNetPredictor " + ("mirroring on" if mirror else "mirroring off"),
            "mirror": mirror, "tile_step_size": 0.5, "use_gaussian": True,
            "perform_everything_on_device": device.type == "cuda",
            "seconds": round(secs, 3),
            "speedup_vs_c2fseg_organ_stage": round(secs / max(ours_s[-1], 1e-9), 2),
            "speedup_vs_c2fseg_whole_case": round(secs / max(warm_total, 1e-9), 2),
            "agreement_with_c2fseg_organ": agreement(ours, theirs),
            "memory": mem.summary(),
        })
        del predictor
    return out


def context_field() -> dict:
    """``{"cuda_context": ...}``: what creating this process's CUDA context cost ({} off CUDA).

    The samplers create the context before their first reading (see ``monitor.gpu_reader``), so
    the first case's cold run no longer pays it: its time and memory are reported here.
    """
    info = cuda_context_info()
    return {"cuda_context": dict(info)} if info is not None else {}


def run_bench(opts: BenchOptions) -> dict:
    """Run the benchmark, write JSON (+ a markdown table beside it) and return the results."""
    import psutil

    t_process = psutil.Process().create_time()
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):  # only silences nnU-Net's warnings
        os.environ.setdefault(var, str(Path(opts.cache_dir) / var))
    device = resolve_device(opts.device)
    if device.type == "cuda":  # before anything else touches CUDA, so its own cost is measured
        ensure_cuda_context(device)
    torch.manual_seed(opts.seed)
    warm = opts.warm if opts.warm is not None else (3 if device.type == "cuda" else 1)
    choice = opts.baseline if opts.baseline != "auto" else ("all" if device.type == "cuda" else "nomirror")
    variants = baseline_variants(choice)
    cases, notes = resolve_cases(opts.cases, opts.cache_dir)
    notes = list(opts.notes) + notes
    if device.type == "cpu" and choice != "all":
        notes.append(f"baseline '{choice}' on CPU: nnU-Net with 8x mirroring would take very long "
                     "on CPU (--baseline all to run it)")
    results = {
        "schema": SCHEMA, "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv), "machine": machine_info(device),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "device": str(device), "warm_runs": warm, "baseline": choice, "notes": notes, "cases": [],
    }
    out = Path(opts.out) if opts.out else default_out(device, opts.models)

    def save_partial(entry: dict) -> None:
        write_results({**results, "cases": [*results["cases"], entry], **context_field()}, out)

    with tempfile.TemporaryDirectory(prefix="c2fseg-bench-") as tmp:
        for case in cases:
            if opts.progress:
                print(f"c2fseg bench: {case.name} ({opts.models} models, {device}, cold + {warm} warm)",
                      flush=True)
            results["cases"].append(time_case(case, opts, device, warm, variants, Path(tmp), t_process,
                                              save_partial))
            results.update(context_field())
            write_results(results, out)  # partial results survive an interrupted run
    results["output"] = str(out)
    write_results(results, out)
    print(format_table(results))
    return results

