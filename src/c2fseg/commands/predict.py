"""``c2fseg predict``: segment a folder of abdominal CTs with the coarse-to-fine cascade."""

from __future__ import annotations

import argparse
from pathlib import Path

from c2fseg.argtypes import non_negative_float
from c2fseg.settings import inference_defaults

STEP_STAGES = ("coarse", "organ", "tumor")


def _defaults_text(key: str, stages=STEP_STAGES, unit: str = "") -> str:
    """'coarse 1.0, organ 0.5, tumor 0.5': c2fseg's packaged default of ``key`` per stage."""
    parts = []
    for stage in stages:
        value = inference_defaults(stage)[key]
        if isinstance(value, list) and len(set(value)) == 1:
            value = value[0]
        parts.append(f"{stage} {value}{unit}")
    return ", ".join(parts)

DESCRIPTION = """\
Segment every CT in INPUT (NIfTI, NRRD, MetaImage files or one DICOM series per subfolder) into
13 organs + tumor (FLARE23 labels). A coarse model finds the abdomen, the organ and tumor models
run on that region only. Outputs are OUTPUT/<case>.nii.gz (input <case>_0000.nii.gz or
<case>.<ext>), with exactly the input's size, spacing, origin and direction, written atomically.

Models are loaded once. A case that cannot be read or fails is marked "failed" in the report,
with the reason, and gets no output; the other cases go on. A case with status "skipped" is one
whose output from an earlier run was kept.

Rerunning resumes: c2fseg records every output it writes (OUTPUT/.c2fseg_outputs/). An output it
wrote, unchanged since, from the same unchanged input, is kept; its other outputs are redone
(--overwrite redoes all of them). A file in OUTPUT that c2fseg did not write, or that was changed
after it wrote it (for example ground-truth labels), is never overwritten, not even with
--overwrite: that case fails and the message names the file; move it or choose another OUTPUT.

A JSON run report (versions, device, options, per-case status, timings, ROI, labels, peak memory)
goes to OUTPUT/c2fseg_report.json unless --report is given. A case where no abdominal organ is
found gets an all-background output and status "empty".
"""

EPILOG = """\
exit codes:
  0  every case ok or kept (cases with status "empty" count as ok and are flagged in the report)
  1  unexpected error (a bug or a broken environment; the traceback says where)
  2  usage error: missing or empty input folder, output folder equal to or inside the input,
     missing or unusable weights, --device cuda without a GPU
  3  some cases failed (see the report for the reason of each)
  130  interrupted (Ctrl-C); finished outputs are kept, rerun to resume
"""


def margin_mm(value: str) -> tuple[float, float, float]:
    """One margin in mm for every axis, or three 'z,y,x'."""
    parts = [p for p in value.split(",") if p.strip()]
    if len(parts) not in (1, 3):
        raise argparse.ArgumentTypeError(f"{value!r}: give one margin in mm or three 'z,y,x'")
    vals = tuple(non_negative_float(p.strip()) for p in parts)
    return vals * 3 if len(vals) == 1 else vals  # type: ignore[return-value]


def step_override(value: str) -> float | dict[str, float]:
    """Sliding-window step: one value for every stage, or 'coarse=1.0,organ=0.5,tumor=0.5'."""
    def step(text: str) -> float:
        x = non_negative_float(text)
        if not 0 < x <= 1:
            raise argparse.ArgumentTypeError(f"step {text!r} must be in (0, 1]")
        return x

    if "=" not in value:
        return step(value)
    out = {}
    for item in value.split(","):
        stage, _, num = item.partition("=")
        if stage.strip() not in STEP_STAGES:
            raise argparse.ArgumentTypeError(
                f"{item!r}: unknown stage; use {', '.join(STEP_STAGES)} (e.g. coarse=1.0,organ=0.5)"
            )
        out[stage.strip()] = step(num.strip())
    return out


def setting_override(value: str) -> tuple[str, str, object]:
    """'STAGE.KEY=VALUE' (VALUE as JSON, else a plain string) -> (stage, key, value)."""
    import json

    name, sep, raw = value.partition("=")
    stage, dot, key = name.strip().partition(".")
    if not sep or not dot or not key:
        raise argparse.ArgumentTypeError(f"{value!r}: use STAGE.KEY=VALUE, e.g. coarse.roi_rule=c2fseg")
    if stage not in STEP_STAGES:
        raise argparse.ArgumentTypeError(f"{value!r}: unknown stage {stage!r}; use {', '.join(STEP_STAGES)}")
    if key not in inference_defaults(stage):
        raise argparse.ArgumentTypeError(
            f"{value!r}: {key!r} is not an inference setting of the {stage} stage "
            f"(valid: {', '.join(sorted(inference_defaults(stage)))})")
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        parsed = raw.strip()
    return stage, key, parsed


def overrides_of(items: list[tuple[str, str, object]] | None) -> dict[str, dict[str, object]] | None:
    """Per-stage override dicts from repeated --set options (None when there are none)."""
    if not items:
        return None
    out: dict[str, dict[str, object]] = {}
    for stage, key, value in items:
        out.setdefault(stage, {})[key] = value
    return out


SET_HELP = """replace one inference setting of a stage's manifest.json for this run (repeatable); VALUE is
JSON or a plain word, 'tumor' applies to every tumor model. Examples: coarse.roi_rule=c2fseg
(c2fseg's ROI rule instead of the published one), tumor.tumor_combination=mean_probability
(c2fseg's tumor rule), organ.weighting=gaussian (Gaussian tile weights), coarse.min_prob=0.
The keys are listed in the README ("Stage settings"); the report records what was used"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="segment a folder of CTs (13 organs + tumor)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-i", "--input", required=True, type=Path, metavar="INPUT",
                   help="folder of CT images (never written to)")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUTPUT",
                   help="folder for <case>.nii.gz label maps (created; not inside INPUT)")
    p.add_argument("--weights", type=Path, default=None, metavar="DIR",
                   help="weights folder with coarse/, organ/, tumor/ (tumor_2/... optional: "
                        "their tumor probabilities are averaged); default $C2FSEG_WEIGHTS, "
                        "then ./weights")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: GPU when there is one, else CPU (default); cuda: fail if there "
                        "is no GPU. When a stage runs out of GPU memory it is retried on the GPU "
                        "with one tile at a time and its logits in host memory, then on the CPU "
                        "(fp32); if the case still runs out, the whole case is redone on the CPU. "
                        "The report notes each fallback")
    p.add_argument("--margin-mm", type=margin_mm, default=None, metavar="MM",
                   help="padding of the organ region in mm, one value or 'z,y,x' (default: the coarse "
                        "stage's manifest.json inference.roi_margin_mm, written at training: "
                        f"{_defaults_text('roi_margin_mm', ('coarse',), ' mm')} unless set otherwise)")
    p.add_argument("--step", type=step_override, default=None, metavar="STEP",
                   help="sliding-window step as a fraction of the patch, one value or per stage "
                        "'coarse=1.0,organ=0.5,tumor=0.5' (default: each stage's manifest.json "
                        f"inference.step, written at training: {_defaults_text('step')} unless set "
                        "otherwise)")
    p.add_argument("--set", dest="settings", type=setting_override, action="append", default=None,
                   metavar="STAGE.KEY=VALUE", help=SET_HELP)
    p.add_argument("--voxel-order", choices=("stage", "canonical-LPS", "as-stored"), default="stage",
                   help="the voxel order every stage is fed: stage (default) as the stage folders "
                        "say (c2fseg-trained: canonical-LPS; imported nnU-Net and HIASBUAA models: "
                        "as-stored, as nnU-Net fed them in training); canonical-LPS: reorient every "
                        "input to c2fseg's canonical axes first (the same volume stored in another "
                        "voxel order then gives the same world-space result)")
    p.add_argument("--tumor-must-touch-organ", action="store_true",
                   help="drop tumor components that touch no organ voxel")
    p.add_argument("--min-tumor-ml", type=non_negative_float, default=0.0, metavar="ML",
                   help="drop tumor components smaller than this volume in mL (default 0: keep all)")
    p.add_argument("--fill-holes", action="store_true",
                   help="fill enclosed holes of single-object organs")
    p.add_argument("--overwrite", action="store_true",
                   help="redo every case even when c2fseg's own valid output exists; files "
                        "c2fseg did not write are still never overwritten (those cases fail)")
    p.add_argument("--report", type=Path, default=None, metavar="PATH",
                   help="run report JSON path (default OUTPUT/c2fseg_report.json)")
    p.add_argument("--precision", choices=("auto", "fp32"), default="auto",
                   help="auto: fp16 on GPU, bf16/fp32 on CPU; fp32: full precision everywhere")
    p.add_argument("--save-roi-overlay", action="store_true",
                   help="also save OUTPUT/roi_overlays/<case>.png (coronal slice, ROI box, labels)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _inside(path: Path, folder: Path) -> bool:
    return path.expanduser().resolve().is_relative_to(folder.expanduser().resolve())


def run(args: argparse.Namespace) -> int:
    from c2fseg.exitcodes import EXIT_OK, EXIT_SOME_FAILED, UsageError
    from c2fseg.infer.batch import SetupError, predict_folder
    from c2fseg.infer.cascade import CascadeOptions
    from c2fseg.io import FolderError

    if args.report is not None and _inside(args.report, args.input):
        raise UsageError(f"--report {args.report} is inside the input folder {args.input}; "
                         "write it elsewhere")
    options = CascadeOptions(
        margin_mm=args.margin_mm,
        tumor_must_touch_organ=args.tumor_must_touch_organ,
        min_tumor_ml=args.min_tumor_ml,
        fill_holes=args.fill_holes,
    )
    try:
        report = predict_folder(
            args.input, args.output, weights_dir=args.weights, device=args.device,
            options=options, overwrite=args.overwrite, report_path=args.report, step=args.step,
            precision=args.precision, save_roi_overlay=args.save_roi_overlay,
            progress=not args.no_progress, overrides=overrides_of(args.settings),
            input_orientation=None if args.voxel_order == "stage" else args.voxel_order,
        )
    except (FolderError, SetupError) as exc:
        raise UsageError(str(exc)) from None
    totals = report.totals()
    print(
        f"c2fseg predict: {totals['ok']} ok, {totals['empty']} empty (no organ found), "
        f"{totals['skipped']} skipped (already done), {totals['failed']} failed; "
        f"report: {args.report or Path(report.output_dir) / 'c2fseg_report.json'}"
    )
    return EXIT_SOME_FAILED if report.failed else EXIT_OK
