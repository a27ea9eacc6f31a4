"""``c2fseg evaluate``: DSC and NSD of predicted label maps with the official FLARE23 rules."""

from __future__ import annotations

import argparse
from pathlib import Path

from c2fseg.argtypes import existing_dir, non_negative_float, positive_int
from c2fseg.labels import NSD_MIN_DSC


def label_id(value: str) -> int:
    """A FLARE23 foreground label given by id (1-14) or name (liver, tumor, ...)."""
    from c2fseg.labels import LABELS, NAME_TO_ID

    key = value.strip().lower()
    lab = int(key) if key.isdigit() else NAME_TO_ID.get(key)
    if lab is None or not 1 <= lab <= 14:
        names = ", ".join(f"{i}={n}" for i, n in LABELS.items() if i)
        raise argparse.ArgumentTypeError(f"{value!r} is not a FLARE23 label; use an id or name: {names}")
    return lab


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score predictions against ground truth (DSC, NSD; FLARE23 rules)",
        description=(
            "Compute DSC and NSD per case and label with the official FLARE23 rules: per-label "
            "NSD tolerances in mm, both empty -> 1, one empty -> 0, aorta/IVC/esophagus scored "
            "only on the axial slices the ground truth spans, NSD = 0 when DSC < 0.2, spacing "
            "from the header. Files are matched by name (<case>.nii.gz). A missing prediction "
            "is scored as empty and listed; a prediction without ground truth is listed and not "
            "scored. A prediction that cannot be used (unreadable, values outside 0-14, not on "
            "the ground-truth grid, two files for one case) is scored as empty and reported as "
            "failed; a case whose ground truth cannot be read is reported as failed and not "
            "scored. For aorta/IVC/esophagus the last annotated slice is left out, as in the "
            "official scorer. Exit code 3 when any case is missing or failed."
        ),
    )
    p.add_argument("--pred", required=True, type=existing_dir, metavar="PRED_DIR",
                   help="folder of predicted label maps")
    p.add_argument("--gt", required=True, type=existing_dir, metavar="GT_DIR",
                   help="folder of ground-truth label maps")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="metrics.json",
                   help="JSON report (per case per label scores, means, missing, failed)")
    p.add_argument("--csv", type=Path, default=None, metavar="metrics.csv",
                   help="also write one CSV row per case and label")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="parallel processes (default: min(4, CPUs))")
    p.add_argument("--nsd-min-dsc", type=non_negative_float, default=NSD_MIN_DSC, metavar="D",
                   help=f"NSD is set to 0 when the DSC is below D (default {NSD_MIN_DSC}, the "
                   "rule in our FLARE23 notes; the public FLARE23 scoring script uses 0.1)")
    p.add_argument("--labels", type=label_id, nargs="+", default=None, metavar="LABEL",
                   help="score only these labels (ids or names; default: all 14)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from c2fseg.evaluate import evaluate_folders, format_summary
    from c2fseg.exitcodes import EXIT_OK, EXIT_SOME_FAILED, UsageError
    from c2fseg.io.errors import FolderError

    try:
        report = evaluate_folders(args.pred, args.gt, args.out, out_csv=args.csv,
                                  workers=args.workers, labels=args.labels,
                                  nsd_min_dsc=args.nsd_min_dsc)
    except (FileNotFoundError, FolderError) as exc:
        raise UsageError(str(exc)) from None
    print(format_summary(report))
    print(f"Metrics: {args.out}" + (f", {args.csv}" if args.csv else ""))
    bad = report["failed"] or report["missing"]["predictions"] or report["missing"]["ground_truth"]
    return EXIT_SOME_FAILED if bad else EXIT_OK
