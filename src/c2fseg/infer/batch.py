"""Batch prediction of a folder of CTs: ``predict_folder(input_dir, output_dir, ...)``.

Promises (see ``../shared/reference/robustness.md``):

* Models load once per process (coarse, organ, and every tumor model in the weights folder:
  ``tumor``, ``tumor_2``, ``tumor_3``...).
* The case loop (:mod:`c2fseg.infer.case_loop`, shared with ``pseudolabel``): reading the next
  case overlaps the current case's compute (a one-deep prefetch thread); one bad case never
  stops the batch: it is recorded as failed with the reason and no output.
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
  ROI overlay PNG (:func:`c2fseg.viz.save_roi_overlay`) is a warning, never a failed case.
* A full disk: a case whose output or record cannot be written fails (its temporary files
  removed, no output left); a report that cannot be updated is tried again after the next case,
  and if the final report cannot be written either, :class:`~c2fseg.fileutil.WriteError` is
  raised (the command line prints it in one line and exits 2). Outputs already written stay
  recorded, so the rerun skips them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from c2fseg import viz
from c2fseg.fileutil import WriteError
from c2fseg.infer.cascade import (
    CascadeModels,
    CascadeOptions,
    CaseResult,
    segment_volume,
    settings_used,
)
from c2fseg.infer.case_loop import CaseLoop, CaseOutcome, Prediction
from c2fseg.infer.model_setup import (  # noqa: F401 (SetupError: part of this module's API)
    SetupError,
    check_weights,
    find_weights,
    load_models,
    setup_device,
)
from c2fseg.infer.outputs import OutputRecords
from c2fseg.io import CaseInput, FolderError, Volume, check_output_dir, find_cases
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


@dataclass
class BatchRun:
    """What every case of one ``predict`` run shares."""

    models: CascadeModels
    weights_dir: Path
    device: str  # the resolved device the models run on
    options: CascadeOptions
    step: float | Mapping[str, float] | None = None
    precision: str = "auto"
    save_roi_overlay: bool = False
    overrides: Mapping[str, Mapping[str, Any]] | None = None  # per-stage inference settings
    input_orientation: str | None = None  # None: the stage folders' own
    cpu_models: CascadeModels | None = None  # loaded on the first CUDA out-of-memory

    def load(self, device: str, precision: str) -> CascadeModels:
        """The stage models of this run on ``device`` (its settings overrides applied)."""
        return load_models(self.weights_dir, device, step=self.step, precision=precision,
                           overrides=self.overrides, input_orientation=self.input_orientation)


def segment_with_fallback(volume: Volume, run: BatchRun) -> tuple[CaseResult, str]:
    """Run the cascade; on CUDA out-of-memory only, run it again with CPU models.

    The retry starts after the ``except`` block has ended: inside it, the exception's traceback
    would keep the failed attempt's CUDA tensors alive (and ``empty_cache`` could not free them).
    """
    try:
        return segment_volume(volume, run.models, run.options), ""
    except torch.cuda.OutOfMemoryError as exc:
        first_line = (str(exc).splitlines() or ["no details"])[0][:200]
        note = f"ran on CPU after CUDA out of memory ({first_line})"
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if run.cpu_models is None:
        precision = "fp32" if run.precision == "auto" else run.precision
        run.cpu_models = run.load("cpu", precision)
    return segment_volume(volume, run.cpu_models, run.options), note


def predict_case(run: BatchRun, case: CaseInput, volume: Volume) -> Prediction:
    """The cascade on one CT; the record keeps what a later run reports if it keeps the output."""
    result, fallback = segment_with_fallback(volume, run)
    fields = {
        "device": "cpu" if fallback else run.device,
        "fallback": fallback,
        "roi": result.roi.to_dict(volume.spacing) if result.roi else None,
        "labels": result.label_counts(),
        "warnings": [*volume.meta.get("warnings", []), *result.warnings],
    }
    earlier = {"status": result.status, "reason": result.reason, **fields}
    return Prediction(result.labels, result.status, result.reason, dict(result.timings),
                      info={"case_report": earlier}, detail=(result, fields))


def case_entry(outcome: CaseOutcome, run: BatchRun) -> CaseReport:
    """The report line of one case; a finished one gets its ROI overlay here if asked for."""
    case, out = outcome.case, outcome.output
    if outcome.status == "skipped":
        return skipped_entry(case, out, outcome.record or {})
    entry = CaseReport(case.case_id, str(case.path), str(out), outcome.status, outcome.reason,
                       device=run.device if outcome.ran else "", timings=dict(outcome.timings))
    if outcome.volume is not None:
        entry.warnings = list(outcome.volume.meta.get("warnings", []))
    if outcome.prediction is None:
        return entry
    result, fields = outcome.prediction.detail
    entry.device, entry.fallback = fields["device"], fields["fallback"]
    entry.roi, entry.labels, entry.warnings = fields["roi"], fields["labels"], list(fields["warnings"])
    if run.save_roi_overlay and entry.status != "failed":
        overlay = out.parent / "roi_overlays" / f"{case.case_id}.png"
        try:
            viz.save_roi_overlay(outcome.volume.array, result.labels, result.roi, overlay)
        except Exception as exc:  # the label map is written; a missing PNG must not fail the case
            entry.warnings.append(f"could not save the ROI overlay {overlay}: {type(exc).__name__}: {exc}")
    return entry


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


def pipeline_name(models: CascadeModels) -> str:
    """The pipeline a run follows: its coarse stage's manifest ``extra.pipeline`` (an imported
    release, e.g. "hiasbuaa-flare23"), else "c2fseg"."""
    manifest = getattr(models.coarse, "manifest", None) or {}
    return str((manifest.get("extra") or {}).get("pipeline") or "c2fseg")


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
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    input_orientation: str | None = None,
) -> RunReport:
    """Segment every CT in ``input_dir`` into ``output_dir`` and return (and write) the run report.

    Raises :class:`c2fseg.io.FolderError` (bad input/output folder) or :class:`SetupError`
    (weights, device) before touching any case; per-case problems go into the report. Raises
    :class:`~c2fseg.fileutil.WriteError` at the end when the run report cannot be written.
    ``overrides`` (``{"coarse": {"roi_rule": "c2fseg"}, "tumor": {...}}``) replace stage-folder
    inference settings; ``input_orientation`` the voxel order fed to every stage.
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
    run = BatchRun(None, weights, resolved, options, step=step, precision=precision,  # type: ignore[arg-type]
                   save_roi_overlay=save_roi_overlay, overrides=overrides,
                   input_orientation=input_orientation)
    run.models = run.load(resolved, precision)
    report = RunReport(
        str(Path(input_dir).resolve()), str(out_dir), str(weights.resolve()),
        environment=environment_info(resolved),
        options=run_options(options, device_requested=device, step=step, precision=precision,
                            overwrite=overwrite, tumor_models=len(run.models.tumors),
                            overrides=overrides, input_orientation=run.models.input_orientation,
                            pipeline=pipeline_name(run.models),
                            stages=settings_used(run.models, options)),
    )
    loop = CaseLoop(OutputRecords(out_dir, PRODUCER), "predict", overwrite=overwrite,
                    progress=progress, announce="c2fseg predict")
    checkpoint = ReportCheckpoint(report, report_file)
    loop.run(cases, out_dir, partial(predict_case, run),
             lambda outcome: report.cases.append(case_entry(outcome, run)), after_case=checkpoint)
    finish_report(report, report_file, resolved, t_start)
    return report


class ReportCheckpoint:
    """Rewrites the run report after each case; a failed write is tried again after the next one."""

    def __init__(self, report: RunReport, path: Path) -> None:
        self.report, self.path = report, path
        self.failing = False

    def __call__(self) -> None:
        try:
            self.report.write(self.path)
        except OSError as exc:  # e.g. disk full: the cases go on, the final write decides
            if not self.failing:
                tqdm.write(f"c2fseg predict: could not update the run report ({exc}); "
                           "trying again after the next case")
            self.failing = True
        else:
            self.failing = False


def finish_report(report: RunReport, report_file: Path, device: str, t_start: float) -> None:
    """Totals, resources and the final atomic write of the report (WriteError if impossible)."""
    report.finished_utc = utc_now()
    report.seconds = time.perf_counter() - t_start
    report.resources = {"peak_host_ram_mb": peak_host_ram_mb(), "peak_gpu_mem_mb": peak_gpu_mem_mb(device)}
    try:
        report.write(report_file)
    except OSError as exc:
        totals = report.totals()
        done = totals["ok"] + totals["empty"] + totals["skipped"]
        raise WriteError(report_file, f"{WriteError.from_os_error(report_file, exc)} The run itself "
                         f"finished ({done} of {totals['cases']} cases have their output, "
                         f"{totals['failed']} failed); outputs already written are kept and the "
                         "rerun skips them.", exc.errno) from exc
