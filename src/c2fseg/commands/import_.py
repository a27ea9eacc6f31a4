"""``c2fseg import``: trained models from elsewhere as c2fseg stage folders.

``c2fseg import hiasbuaa DIR -o WEIGHTS`` converts the released FLARE23 HIASBUAA checkpoints;
``c2fseg import nnunet DIR --stage STAGE -o WEIGHTS/STAGE`` any nnU-Net v1/v2 model folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from c2fseg.argtypes import existing_dir, existing_path

STAGES = ("coarse", "organ", "tumor")


def fold_value(value: str) -> str | int:
    """'all' or a fold number >= 0."""
    if value == "all":
        return value
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: expected a fold number (0, 1, ...) or 'all'")
    return int(value)


def _add_hiasbuaa(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hiasbuaa",
        help="the four released FLARE23 HIASBUAA checkpoints -> coarse/, tumor/, tumor_2/, organ/",
        description=(
            "Convert the released FLARE23 HIASBUAA checkpoints (zenodo record 8372563: "
            "coarse_model.pth, tumor_model_1.pth, tumor_model_2.pth, organ_model.pth; nnU-Net v1 "
            "Generic_UNet) into the c2fseg stage folders WEIGHTS/coarse, WEIGHTS/tumor, "
            "WEIGHTS/tumor_2 and WEIGHTS/organ. Their plans and manifests carry the published "
            "spacing, patch, CT statistics and pipeline settings (as-stored voxel order, "
            "360-voxel in-plane cap, uniform tile averaging of probabilities, 0.10 probability "
            "floor, truncated coarse head, the published coarse clean-up, ROI rule and tumor "
            "reconciliation), so `python predict_final.py -i IN -o OUT --weights WEIGHTS` runs "
            "the published pipeline with no further flags. Every file is checked against the "
            "released network; the four folders are written together or not at all, and "
            "nothing in DIR is changed."
        ),
    )
    p.add_argument("src_dir", type=existing_dir, metavar="DIR",
                   help="folder holding the four released .pth files")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="WEIGHTS",
                   help="weights folder to write the four stage folders into")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing stage folders (each old one is kept as NAME.previous)")
    p.set_defaults(func=run_hiasbuaa)


def _add_nnunet(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "nnunet",
        help="an nnU-Net v1 model folder or v2 results folder -> one stage folder",
        description=(
            "Convert a trained nnU-Net model into one c2fseg stage folder: an nnU-Net v2 results "
            "folder (plans.json, dataset.json, fold_F/checkpoint_final.pth or fold_all/) or an "
            "nnU-Net v1 model folder (fold_F/model_final_checkpoint.model and its .model.pkl "
            "plans). Only 3-D PlainConvUNet models with one CT channel are imported (residual "
            "encoders, 2-D models, cascades and region training are refused, saying which). "
            "The stage runs with nnU-Net's own sliding-window settings (Gaussian tile weights, "
            "step 0.5, logits averaged) on the voxels as stored, as nnU-Net does; nnU-Net "
            "mirrors by default, the imported stage does not (predict --set STAGE.mirror=true turns "
            "it on)."
        ),
    )
    p.add_argument("model_dir", type=existing_dir, metavar="DIR", help="the nnU-Net model folder")
    p.add_argument("--stage", required=True, choices=STAGES,
                   help="the cascade stage the model serves (its FLARE labels must fit it)")
    p.add_argument("--fold", type=fold_value, default=0,
                   help="fold to import: a number or 'all' (default 0)")
    p.add_argument("--labels", type=existing_path, default=None, metavar="MAP.json",
                   help="JSON object: model label id (or name) -> FLARE23 label id, e.g. "
                        '{"5": 1, "1": 3}. Model labels left out are dropped: a voxel whose most '
                        "likely class is dropped becomes background. Without it the model's "
                        "label names must be FLARE23 names (liver, spleen, ..., tumor)")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="WEIGHTS/STAGE",
                   help="stage folder to write (e.g. weights/organ)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing folder (the old one is kept as NAME.previous)")
    p.set_defaults(func=run_nnunet)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="convert trained models (released HIASBUAA checkpoints, nnU-Net folders) to stages",
        description=(
            "Convert trained models into c2fseg stage folders (plans.json, dataset.json, "
            "checkpoint_final.pth, manifest.json with the SHA-256 of every source and written "
            "file) that predict, pseudolabel and bench load like c2fseg's own stages."
        ),
    )
    kinds = p.add_subparsers(dest="import_kind", metavar="KIND", required=True)
    _add_hiasbuaa(kinds)
    _add_nnunet(kinds)


def _usage_errors():
    from c2fseg.weights import WeightsError

    return WeightsError


def run_hiasbuaa(args: argparse.Namespace) -> int:
    from c2fseg.exitcodes import EXIT_OK, UsageError
    from c2fseg.importers import import_hiasbuaa

    try:
        written = import_hiasbuaa(args.src_dir, args.out, overwrite=args.overwrite)
    except _usage_errors() as exc:
        raise UsageError(" ".join(str(exc).split())) from None
    for name, folder in written.items():
        print(f"{name:<8} {folder}")
    print(f"Weights: {args.out}  (run: python predict_final.py -i IN -o OUT --weights {args.out})")
    return EXIT_OK


def run_nnunet(args: argparse.Namespace) -> int:
    from c2fseg.exitcodes import EXIT_OK, UsageError
    from c2fseg.importers import import_nnunet

    try:
        folder = import_nnunet(args.model_dir, args.stage, args.out, fold=args.fold,
                               labels_map=args.labels, overwrite=args.overwrite)
    except _usage_errors() as exc:
        raise UsageError(" ".join(str(exc).split())) from None
    print(f"{args.stage} stage: {folder}")
    return EXIT_OK
