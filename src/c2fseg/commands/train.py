"""``c2fseg train STAGE``: train one cascade stage with nnU-Net v2 and export its weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from c2fseg.argtypes import existing_dir, existing_path, int_triple, positive_int, spacing_zyx
from c2fseg.settings import load_defaults
from c2fseg.weights import CHECKPOINT_NAME

STAGE_CHOICES = ("coarse", "tumor", "organ")
OPTIMIZER_NAMES = {"sgd": "SGD", "adamw": "AdamW"}


def default_text(key: str) -> str:
    """Per-stage defaults of a training setting, e.g. 'default: coarse 2.3,1.26,1.26, ...; --tiny ...'."""
    configs = load_defaults()["configs"]

    def value(config: str, stage: str) -> str:
        v = {**configs[config]["base"], **configs[config][stage]}[key]
        if v is None:
            return "nnU-Net's planned spacing"
        return ",".join(str(x) for x in v) if isinstance(v, list) else str(v)

    def per_stage(config: str) -> str:
        values = {stage: value(config, stage) for stage in STAGE_CHOICES}
        if len(set(values.values())) == 1:
            return next(iter(values.values()))
        return ", ".join(f"{stage} {v}" for stage, v in values.items())

    return f"default: {per_stage('default')}; with --tiny: {per_stage('tiny')}"


def tiny_text() -> str:
    """What --tiny trains, from its configuration."""
    tiny = load_defaults()["configs"]["tiny"]
    base = tiny["base"]
    iters = ", ".join(
        f"{stage} {s['epochs']}x{s['iters_per_epoch']}"
        for stage, s in ((st, {**base, **tiny.get(st, {})}) for st in STAGE_CHOICES))
    return (f"tiny CPU configuration ({base['n_stages']}-stage {base['features']}-{base['max_features']} "
            f"feature network, epochs x iterations: {iters}; {OPTIMIZER_NAMES[base['optimizer']]})")


def fold_value(value: str) -> str | int:
    """'all' or a fold number >= 0 (its upper limit comes from splits.json, checked later)."""
    if value == "all":
        return value
    try:
        k = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected 'all' or a fold number 0..K-1 (K = `c2fseg split --folds`)") from None
    if k < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: fold numbers start at 0")
    return k


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one stage (coarse, tumor, organ) with nnU-Net v2 and export weights/<stage>/",
        description=(
            "Build the stage's nnU-Net dataset from DATA (coarse: fully labelled cases; tumor: "
            "tumor cases with missing organs filled by coarse-model pseudo labels; organ: all "
            f"cases with organ pseudo labels), crop each case to its labelled slices "
            f"+-{load_defaults()['z_margin_slices']}, plan and "
            "preprocess with nnU-Net, train with c2fseg's trainer and export WEIGHTS/<stage>/ "
            f"(plans.json, dataset.json, {CHECKPOINT_NAME}, manifest.json with the stage's "
            "inference settings). Re-running the same "
            "command resumes: finished steps are skipped and training continues from the latest "
            "checkpoint. Train coarse first: tumor and organ use it for pseudo labels. "
            "Cases whose target is empty (no label of the stage) are skipped and listed; training "
            "stops only when no case is left. "
            "An existing WEIGHTS/<stage>/ is never deleted: it is moved to WEIGHTS/<stage>.previous/ "
            "(the path is printed). An older <stage>.previous/ is replaced only if it is an intact "
            "c2fseg export (valid manifest.json); otherwise training refuses to start until you move it."
        ),
        epilog=(
            "Example: c2fseg train coarse --data DATA --splits splits.json --work work --tiny. "
            "Exit codes: 0 ok; 1 training crashed (rerun the same command to resume); 2 bad data, "
            "settings or folders (the message says what to fix); 130 interrupted."
        ),
    )
    p.add_argument("stage", choices=STAGE_CHOICES, help="which stage to train")
    p.add_argument("--data", required=True, type=existing_dir,
                   help="FLARE23-style data folder (imagesTr/, labelsTr/); files as listed in --splits")
    p.add_argument("--splits", required=True, type=existing_path, help="splits.json from `c2fseg split`")
    p.add_argument("--work", required=True, type=Path, help="work folder for nnU-Net data, checkpoints and logs")
    p.add_argument("--weights", type=Path, default=Path("weights"),
                   help="weights folder to export into (default ./weights); an existing <stage>/ there "
                        "is moved to <stage>.previous/")
    p.add_argument("--fold", type=fold_value, default="all",
                   help="'all' (default: train on every case) or a fold number 0..K-1, where K is the "
                        "number of folds in splits.json (`c2fseg split --folds`, default 5)")
    p.add_argument("--tiny", action="store_true", help=tiny_text() + "; the same as --config tiny")
    p.add_argument("--config", choices=tuple(load_defaults()["configs"]), default=None,
                   help="training configuration in stage_defaults.json (default 'default'); "
                        "'hiasbuaa' is the published FLARE23 recipe (docs/training.md): its "
                        "spacing and patch, mirroring on all axes, CT clipped to [-325, 325], and "
                        "the published pipeline's inference settings in the export")
    p.add_argument("--variant", type=positive_int, default=None, metavar="N",
                   help="tumor stage only: train a further tumor model N >= 2 (its own settings, "
                        "e.g. the hiasbuaa config's tumor_2 patch) and export WEIGHTS/tumor_N/; "
                        "predict uses tumor/, tumor_2/, ... together")
    p.add_argument("--pseudo-labels", type=existing_dir, default=None, metavar="DIR",
                   help="organ pseudo labels for the tumor and organ stages, one file per case that does not "
                        "annotate every organ (or, for the organ stage, holds a tumor), named "
                        "<case>.nii.gz or <case>_0000.nii.gz (other image formats c2fseg reads work too); "
                        "ignored for the coarse stage. Default: made with the trained coarse model "
                        "(WEIGHTS/coarse)")
    p.add_argument("--spacing", type=spacing_zyx, default=None, metavar="Z,Y,X",
                   help=f"target spacing in mm ({default_text('spacing')})")
    p.add_argument("--patch", type=int_triple, default=None, metavar="Z,Y,X",
                   help=f"patch size in voxels ({default_text('patch')})")
    p.add_argument("--features", type=positive_int, default=None, metavar="N",
                   help=f"features of the first network stage ({default_text('features')})")
    p.add_argument("--epochs", type=positive_int, default=None, metavar="N",
                   help=f"number of epochs ({default_text('epochs')})")
    p.add_argument("--iters-per-epoch", type=positive_int, default=None, metavar="N",
                   help=f"training iterations per epoch ({default_text('iters_per_epoch')})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="training device (default auto)")
    p.add_argument("--num-gpus", type=positive_int, default=1, metavar="N", help="GPUs for DDP training (default 1)")
    p.add_argument("--no-resume", action="store_true",
                   help="start training from scratch (deletes this stage's previous training output in "
                        "WORK; exported weights are kept as described above)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from c2fseg.data.stage_dataset import StageDatasetError
    from c2fseg.exitcodes import EXIT_ERROR, EXIT_OK, UsageError
    from c2fseg.train.run import TrainingError, TrainingInputError, train_stage

    if args.tiny and args.config not in (None, "tiny"):
        raise UsageError(f"--tiny is --config tiny; it cannot be combined with --config {args.config}")
    if args.variant is not None and (args.stage != "tumor" or args.variant < 2):
        raise UsageError("--variant N: only the tumor stage has variants, numbered 2, 3, ...")
    overrides = {"spacing": args.spacing, "patch": args.patch, "features": args.features,
                 "epochs": args.epochs, "iters_per_epoch": args.iters_per_epoch}
    try:
        out = train_stage(
            args.stage, args.data, args.splits, args.work, args.weights, fold=args.fold,
            config="tiny" if args.tiny else (args.config or "default"), overrides=overrides,
            pseudo_labels=args.pseudo_labels, device=args.device, num_gpus=args.num_gpus,
            resume=not args.no_resume, variant=args.variant,
        )
    except (StageDatasetError, TrainingInputError) as exc:  # data or settings: the user fixes them
        raise UsageError(str(exc)) from None
    except TrainingError as exc:  # training crashed: not a usage error
        print(f"c2fseg train: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"weights written to {out}")
    return EXIT_OK
