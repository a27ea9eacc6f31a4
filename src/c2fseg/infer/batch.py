"""Batch prediction of a folder of CTs: ``predict_folder(input_dir, output_dir, ...)``.

Promises (see ``../shared/reference/robustness.md``):

* Models load once per process (coarse, organ, and every tumor model in the weights folder:
  ``tumor``, ``tumor_2``, ``tumor_3``...).
* Reading the next case overlaps the current case's compute (a one-deep prefetch thread).
* One bad case never stops the batch: it is recorded as failed with the reason and no output.
* Outputs are ``<case>.nii.gz`` in the output folder (FLARE naming: input
  ``<case>_0000.nii.gz`` -> ``<case>.nii.gz``), always NIfTI whatever the input format, written
  atomically with the input's exact geometry. Never inside the input folder.
* Only files c2fseg wrote are ever skipped or replaced (:mod:`c2fseg.infer.outputs` records each
  output). A rerun keeps a recorded, unchanged output of the same, unchanged input that is still
  a valid label map for it (status "skipped", with what the earlier run reported); anything else
  of ours is redone, and ``overwrite`` redoes all of ours. A file c2fseg did not write (e.g. the
  ground truth in ``labelsTs``), or one changed since, is never touched: that case fails.
* ``device="cuda"`` without CUDA is a setup error; ``"auto"`` picks CUDA when available. On
  ``torch.cuda.OutOfMemoryError`` (only that) each stage first retries on the GPU with one tile
  per batch and CPU accumulation, then on the CPU (:class:`~c2fseg.infer.stage_model.StageModel`);
  if the case still runs out of GPU memory it is redone whole with CPU models (fp32 unless a
  precision was forced), loaded once on first need. The report records the fallback.
* A JSON run report (:mod:`c2fseg.report`) is rewritten after every case, atomically. A failed
  ROI overlay PNG is a warning, never a failed case.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from c2fseg.infer.cascade import CascadeOptions, CaseResult, segment_volume, settings_used
from c2fseg.infer.model_setup import (  # noqa: F401 (SetupError: part of this module's API)
    SetupError,
    check_weights,
    find_weights,
    load_models,
    setup_device,
)
from c2fseg.infer.outputs import ForeignOutputError, OutputRecords
from c2fseg.io import (
    CaseInput,
    FolderError,
    ImageReadError,
    check_output_dir,
    find_cases,
    read_image,
    write_labels,
)
from c2fseg.report import (
    CaseReport,
    RunReport,
    environment_info,
    peak_gpu_mem_mb,
    peak_host_ram_mb,
    utc_now,
)

REPORT_NAME = "c2fseg_report.json"
PRODUCER = "predict"  # who wrote an output, in its record (pseudolabel outputs are not predictions)
SEED = 0


# --------------------------------------------------------------------------- per case


def read_case(path: Path):
    """Read one CT (runs in the prefetch thread); returns (volume, seconds)."""
    t0 = time.perf_counter()
    volume = read_image(path)
    return volume, round(time.perf_counter() - t0, 4)


def segment_with_fallback(volume, state: dict, options: CascadeOptions) -> tuple[CaseResult, str]:
    """Run the cascade; on CUDA out-of-memory only, run it again with CPU models."""
    try:
        return segment_volume(volume, state["models"], options), ""
    except torch.cuda.OutOfMemoryError as exc:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if state.get("cpu_models") is None:
            precision = "fp32" if state["precision"] == "auto" else state["precision"]
            state["cpu_models"] = load_models(
                state["weights_dir"], "cpu", step=state["step"], precision=precision
            )
        note = f"ran on CPU after CUDA out of memory ({str(exc).splitlines()[0][:200]})"
        return segment_volume(volume, state["cpu_models"], options), note


def save_roi_overlay(ct: np.ndarray, result: CaseResult, path: Path) -> None:
    """PNG of the middle coronal slice with the ROI box and the labels, for a quick check."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    j = result.roi.start[1] + result.roi.shape[1] // 2 if result.roi else ct.shape[1] // 2
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(np.clip(ct[:, j, :], -200, 300), cmap="gray", origin="lower")
    ax.imshow(np.ma.masked_equal(result.labels[:, j, :], 0), cmap="tab20", origin="lower",
              alpha=0.4, vmin=0, vmax=14, interpolation="nearest")
    if result.roi:
        (z0, _, x0), (z1, _, x1) = result.roi.start, result.roi.stop
        ax.add_patch(Rectangle((x0 - 0.5, z0 - 0.5), x1 - x0, z1 - z0, fill=False, ec="yellow"))
    ax.set_title(f"{path.stem}: coronal slice {j}, ROI")
    ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def process_case(case: CaseInput, future: Future, out_path: Path, state: dict) -> CaseReport:
    """Segment and write one case; any failure becomes a 'failed' line, never an exception."""
    entry = CaseReport(case.case_id, str(case.path), str(out_path), "failed", device=state["device"])
    try:
        volume, read_s = future.result()
        entry.warnings = list(volume.meta.get("warnings", []))
        result, fallback = segment_with_fallback(volume, state, state["options"])
        if fallback:
            entry.device, entry.fallback = "cpu", fallback
        entry.warnings += result.warnings
        entry.roi = result.roi.to_dict(volume.spacing) if result.roi else None
        entry.labels = result.label_counts()
        t0 = time.perf_counter()
        state["records"].write(out_path, case.path,
                               lambda path: write_labels(result.labels, volume.geometry, path),
                               info={"case_report": earlier_fields(entry, result.status, result.reason)})
        result.timings["write"] = round(time.perf_counter() - t0, 4)
    except ImageReadError as exc:
        entry.reason = str(exc)
        return entry
    except Exception as exc:  # one bad case must not stop the batch; the reason is reported
        entry.reason = f"{type(exc).__name__}: {exc}"
        return entry
    entry.status, entry.reason = result.status, result.reason
    entry.timings = {"read": read_s, **result.timings}
    if state["save_roi_overlay"]:
        overlay = out_path.parent / "roi_overlays" / f"{case.case_id}.png"
        try:
            save_roi_overlay(volume.array, result, overlay)
        except Exception as exc:  # the label map is written; a missing PNG must not fail the case
            entry.warnings.append(f"could not save the ROI overlay {overlay}: {type(exc).__name__}: {exc}")
    return entry


def earlier_fields(entry: CaseReport, status: str, reason: str) -> dict:
    """What a later run reports for this output when it keeps it (see :func:`skipped_entry`)."""
    return {"status": status, "reason": reason, "device": entry.device, "fallback": entry.fallback,
            "roi": entry.roi, "labels": entry.labels, "warnings": list(entry.warnings)}


def skipped_entry(case: CaseInput, out: Path, record: dict) -> CaseReport:
    """The report line of a kept output, with the status, ROI, labels and warnings it was made with."""
    earlier = (record.get("info") or {}).get("case_report") or {}
    reason = f"kept the output c2fseg wrote on {record.get('written_utc', 'an earlier run')}"
    if earlier.get("reason"):
        reason += f" (then: {earlier['reason']})"
    return CaseReport(
        case.case_id, str(case.path), str(out), "skipped", reason,
        device=earlier.get("device", ""), fallback=earlier.get("fallback", ""),
        roi=earlier.get("roi"), labels=dict(earlier.get("labels") or {}),
        warnings=list(earlier.get("warnings") or []), earlier_status=earlier.get("status", ""),
    )


# --------------------------------------------------------------------------- batch


def output_path(output_dir: Path, case: CaseInput) -> Path:
    """``<output_dir>/<case>.nii.gz`` (FLARE naming)."""
    return output_dir / f"{case.case_id}.nii.gz"


def run_options(options: CascadeOptions, **extra) -> dict:
    """Options recorded in the report: cascade options, seed and determinism flags."""
    flags = {
        "seed": SEED,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "torch_threads": torch.get_num_threads(),
    }
    return {**options.to_dict(), **extra, **flags}


def predict_folder(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    weights_dir: str | os.PathLike | None = None,
    device: str = "auto",
    options: CascadeOptions | None = None,
    overwrite: bool = False,
    report_path: str | os.PathLike | None = None,
    step: float | Mapping[str, float] | None = None,
    precision: str = "auto",
    save_roi_overlay: bool = False,
    progress: bool = True,
) -> RunReport:
    """Segment every CT in ``input_dir`` into ``output_dir`` and return (and write) the run report.

    Raises :class:`c2fseg.io.FolderError` (bad input/output folder) or :class:`SetupError`
    (weights, device) before touching any case; per-case problems go into the report.
    """
    options = options or CascadeOptions()
    t_start = time.perf_counter()
    cases = find_cases(input_dir)
    out_dir = check_output_dir(input_dir, output_dir, create=False)  # refuse before anything
    report_file = Path(report_path) if report_path else out_dir / REPORT_NAME
    if report_file.expanduser().resolve().is_relative_to(Path(input_dir).expanduser().resolve()):
        raise FolderError(f"report {report_file} is inside the input folder {input_dir}; "
                          "c2fseg never writes into its input folder, choose another path")
    weights = find_weights(weights_dir)
    check_weights(weights)
    resolved = setup_device(device)
    out_dir = check_output_dir(input_dir, output_dir)  # created and checked writable
    torch.manual_seed(SEED)
    records = OutputRecords(out_dir, PRODUCER)
    state = {
        "models": load_models(weights, resolved, step=step, precision=precision),
        "cpu_models": None, "weights_dir": weights, "step": step, "precision": precision,
        "device": resolved, "options": options, "save_roi_overlay": save_roi_overlay,
        "records": records,
    }
    report = RunReport(
        str(Path(input_dir).resolve()), str(out_dir), str(weights.resolve()),
        environment=environment_info(resolved),
        options=run_options(options, device_requested=device, step=step, precision=precision,
                            overwrite=overwrite, tumor_models=len(state["models"].tumors),
                            stages=settings_used(state["models"], options)),
    )
    todo = plan_cases(cases, out_dir, overwrite, report, records)
    run_cases(todo, state, report, report_file, progress)
    finish_report(report, report_file, resolved, t_start)
    return report


def plan_cases(cases: list[CaseInput], out_dir: Path, overwrite: bool, report: RunReport,
               records: OutputRecords) -> list:
    """Record unusable, foreign-blocked and already-done cases; return the (case, output) pairs to run."""
    todo = []
    for case in cases:
        out = output_path(out_dir, case)
        if not case.ok:
            report.cases.append(CaseReport(case.case_id, str(case.path), str(out), "failed", case.error))
            continue
        try:
            decision = records.decide(out, case.path, overwrite=overwrite)
        except (ForeignOutputError, OSError) as exc:
            report.cases.append(CaseReport(case.case_id, str(case.path), str(out), "failed", str(exc)))
            tqdm.write(f"c2fseg predict: {case.case_id} failed: {exc}")
            continue
        if decision.action == "skip":
            report.cases.append(skipped_entry(case, out, decision.record or {}))
        else:
            todo.append((case, out))
    return todo


def run_cases(todo: list, state: dict, report: RunReport, report_file: Path, progress: bool) -> None:
    """Process cases in order, reading case i+1 in a thread while case i is computed."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="c2fseg-read") as reader:
        pending = reader.submit(read_case, todo[0][0].path) if todo else None
        bar = tqdm(todo, desc="predict", unit="case", disable=not progress)
        for i, (case, out) in enumerate(bar):
            current = pending
            pending = reader.submit(read_case, todo[i + 1][0].path) if i + 1 < len(todo) else None
            entry = process_case(case, current, out, state)
            report.cases.append(entry)
            if entry.status == "failed":
                bar.write(f"c2fseg predict: {case.case_id} failed: {entry.reason}")
            report.write(report_file)


def finish_report(report: RunReport, report_file: Path, device: str, t_start: float) -> None:
    """Totals, resources and the final atomic write of the report."""
    report.finished_utc = utc_now()
    report.seconds = time.perf_counter() - t_start
    report.resources = {"peak_host_ram_mb": peak_host_ram_mb(), "peak_gpu_mem_mb": peak_gpu_mem_mb(device)}
    report.write(report_file)
