"""``c2fseg bench``: per-stage speed and memory of the cascade, with nnU-Net's predictor as baseline."""

from __future__ import annotations

import argparse
from pathlib import Path

from c2fseg.argtypes import int_triple, non_negative_int, positive_int
from c2fseg.settings import load_defaults


def models_help() -> str:
    """--models help, with the network sizes of stage_defaults.json."""
    defaults = load_defaults()
    base = defaults["configs"]["default"]["base"]
    thin = defaults["bench"]["thin"]
    spacing = {stage: "x".join(str(s) for s in thin[stage]["spacing"]) for stage in ("organ", "tumor")}
    fine = spacing["organ"] if len(set(spacing.values())) == 1 else (
        f"{spacing['organ']} (organ), {spacing['tumor']} (tumor)")
    return (f"production: nnU-Net-default {base['n_stages']}-stage networks ({base['features']}-"
            f"{base['max_features']} features) with the stages' default spacings, random weights; "
            f"thin: {thin['width']} base features, fine stages at {fine} mm; or a trained weights "
            "folder, run with its stages' own settings (default: production)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure speed and memory per stage (cold/warm) against nnU-Net's own predictor",
        description=(
            "Time the coarse-to-fine cascade on a full-size phantom and/or the real example CT: "
            "per stage (read, coarse, ROI, ROI resample, organ, tumor, resample back + merge, "
            "post-process, write), cold and warm wall time per case, model loading, peak host RAM, "
            "peak GPU memory and the FLARE GPU memory-time area (sampled every 0.1 s). The same "
            "ROI crop also goes through nnU-Net v2's nnUNetPredictor (step 0.5, Gaussian, mirroring "
            "off and on) with the same organ weights: time ratios and voxel agreement are printed. "
            "Random-weight networks of production size cost the same as trained ones, so no "
            "weights are needed; their ROI is a fixed box (or the case's label box)."
        ),
        epilog="Writes JSON plus a markdown table beside it. Ratios compare runs of one process only.",
    )
    p.add_argument("--case", dest="cases", action="append", metavar="CASE",
                   help="'full-phantom' (generated once into --cache, 512x512, ~300 slices), 'real' "
                        "(../shared/data/real/ts_example_ct.nii.gz, skipped if missing) or a CT path; "
                        "repeatable (default: full-phantom)")
    p.add_argument("--models", default="production", metavar="production|thin|WEIGHTS_DIR",
                   help=models_help())
    p.add_argument("--roi", choices=("auto", "fixed", "labels", "coarse"), default="auto",
                   help="ROI for the fine stages: fixed box (or the label box when the case has labels), "
                        "labels (require them), coarse (the coarse model's output; needs trained "
                        "weights). auto: coarse for a weights folder, else fixed")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    p.add_argument("--warm", type=non_negative_int, default=None,
                   help="warm runs per case after the cold one (default 3 on CUDA, 1 on CPU)")
    p.add_argument("--baseline", choices=("auto", "none", "nomirror", "all"), default="auto",
                   help="nnUNetPredictor variants: nomirror, all (also mirroring on), none. "
                        "auto: all on CUDA, nomirror on CPU (8x mirroring is very slow there)")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                   help="c2fseg inference precision (auto: fp16 on CUDA, bf16/fp32 on CPU)")
    p.add_argument("-o", "--out", type=Path, default=None, metavar="RESULT.json",
                   help="JSON output (default benchmarks/results/bench-<device>-<models>-<date>.json); "
                        "a .md table is written beside it")
    p.add_argument("--cache", type=Path, default=Path("c2fseg_work/bench"), metavar="DIR",
                   help="where the generated phantom is kept and reused (default c2fseg_work/bench)")
    p.add_argument("--patch", type=int_triple, default=None, metavar="Z,Y,X",
                   help="override every stage's patch size (smoke tests on small machines)")
    p.add_argument("--width", type=positive_int, default=None,
                   help="override the base feature count of random networks (smoke tests)")
    p.add_argument("--note", dest="notes", action="append", default=[], metavar="TEXT",
                   help="a note stored in the result (e.g. 'other jobs shared the CPUs')")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from c2fseg.bench import BenchOptions, run_bench
    from c2fseg.exitcodes import EXIT_OK, UsageError

    models = args.models
    if models not in ("production", "thin") and not Path(models).is_dir():
        raise UsageError(f"--models {models!r}: use production, thin or an existing weights folder")
    if args.roi == "coarse" and models in ("production", "thin"):
        raise UsageError("--roi coarse needs trained weights (--models WEIGHTS_DIR); random networks "
                         "give meaningless labels, use --roi fixed")
    opts = BenchOptions(cases=args.cases or ["full-phantom"], models=models, roi=args.roi,
                        device=args.device, warm=args.warm, baseline=args.baseline,
                        precision=args.precision, out=args.out, cache_dir=args.cache,
                        patch=args.patch, width=args.width, notes=list(args.notes))
    try:
        run_bench(opts)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK
