"""``c2fseg train STAGE``: train one cascade stage with nnU-Net v2 and export its weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from c2fseg.argtypes import existing_dir, existing_path, int_triple, positive_int, spacing_zyx

STAGE_CHOICES = ("coarse", "tumor", "organ")


def fold_value(value: str) -> str | int:
    """'all' or a fold number >= 0."""
    if value == "all":
        return value
    try:
        k = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected 'all' or a fold number 0-4") from None
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
            "cases with organ pseudo labels), crop each case to its labelled slices +-10, plan and "
            "preprocess with nnU-Net, train with c2fseg's trainer and export WEIGHTS/<stage>/ "
            "(plans.json, dataset.json, checkpoint_final.pth, manifest.json). Re-running the same "
            "command resumes: finished steps are skipped and training continues from the latest "
            "checkpoint. Train coarse first: tumor and organ use it for pseudo labels."
        ),
        epilog="Example: c2fseg train coarse --data DATA --splits splits.json --work work --tiny",
    )
    p.add_argument("stage", choices=STAGE_CHOICES, help="which stage to train")
    p.add_argument("--data", required=True, type=existing_dir, help="FLARE23-style data folder (imagesTr/, labelsTr/)")
    p.add_argument("--splits", required=True, type=existing_path, help="splits.json from `c2fseg split`")
    p.add_argument("--work", required=True, type=Path, help="work folder for nnU-Net data, checkpoints and logs")
    p.add_argument("--weights", type=Path, default=Path("weights"), help="weights folder to export into (default ./weights)")
    p.add_argument("--fold", type=fold_value, default="all", help="'all' (default: train on every case) or a fold 0-4")
    p.add_argument("--tiny", action="store_true",
                   help="tiny CPU configuration (4-stage 8-64 feature network, short AdamW schedule)")
    p.add_argument("--pseudo-labels", type=existing_dir, default=None, metavar="DIR",
                   help="organ pseudo labels <case>.nii.gz (tumor/organ stages); default: made with the trained coarse model")
    p.add_argument("--spacing", type=spacing_zyx, default=None, metavar="Z,Y,X", help="target spacing in mm")
    p.add_argument("--patch", type=int_triple, default=None, metavar="Z,Y,X", help="patch size in voxels")
    p.add_argument("--features", type=positive_int, default=None, metavar="N", help="features of the first network stage")
    p.add_argument("--epochs", type=positive_int, default=None, metavar="N", help="number of epochs")
    p.add_argument("--iters-per-epoch", type=positive_int, default=None, metavar="N", help="training iterations per epoch")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="training device (default auto)")
    p.add_argument("--num-gpus", type=positive_int, default=1, metavar="N", help="GPUs for DDP training (default 1)")
    p.add_argument("--no-resume", action="store_true",
                   help="start training from scratch (deletes this stage's previous training output)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from c2fseg.cli import UsageError
    from c2fseg.data.stage_dataset import StageDatasetError
    from c2fseg.train.run import TrainingError, train_stage

    overrides = {"spacing": args.spacing, "patch": args.patch, "features": args.features,
                 "epochs": args.epochs, "iters_per_epoch": args.iters_per_epoch}
    try:
        out = train_stage(
            args.stage, args.data, args.splits, args.work, args.weights, fold=args.fold,
            config="tiny" if args.tiny else "default", overrides=overrides,
            pseudo_labels=args.pseudo_labels, device=args.device, num_gpus=args.num_gpus,
            resume=not args.no_resume,
        )
    except (StageDatasetError, TrainingError, ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    print(f"weights written to {out}")
    return 0
