"""``c2fseg pseudolabel``: label a folder of CTs with one stage model (resumable, splittable)."""

from __future__ import annotations

import argparse

from c2fseg.argtypes import existing_dir, non_negative_int, positive_int

STAGES = ("coarse", "organ", "tumor")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pseudolabel",
        help="label a folder of CTs with one stage model (e.g. coarse labels for tumor training)",
        description=(
            "Run one trained stage on every CT of a folder and write <case>.nii.gz label maps with "
            "each input's exact geometry. The stage runs with the inference settings of its "
            "folder's manifest.json (step, tile weighting, probability floor). Resumable: c2fseg records each output it writes "
            "(LABELS/.c2fseg_outputs/); an output it wrote with the same stage from the same "
            "unchanged input is kept, its other outputs are redone. A file in LABELS that c2fseg "
            "did not write, or that changed after it wrote it, is never overwritten, not even with "
            "--overwrite: that case fails, naming the file (move it or choose another --out). "
            "--part/--num-parts split the sorted case list round-robin so several machines can "
            "share the work (and the output folder) without overlap. Never writes into the input "
            "folder."
        ),
        epilog="exit codes: 0 every case labelled or kept, 1 unexpected error, 2 usage error (bad "
               "folders, missing weights, --device cuda without a GPU), 3 some cases failed, "
               "130 interrupted (rerun to resume)",
    )
    p.add_argument("--stage", required=True, choices=STAGES, help="which stage model to run")
    p.add_argument("--in", dest="in_dir", required=True, type=existing_dir, metavar="IMAGES",
                   help="folder of CTs (<case>_0000.nii.gz, other formats, or DICOM subfolders)")
    p.add_argument("--out", dest="out_dir", required=True, metavar="LABELS",
                   help="output folder for <case>.nii.gz (created; must not be inside --in)")
    p.add_argument("--weights", default=None, metavar="W",
                   help="weights root holding <stage>/ (default: $C2FSEG_WEIGHTS, else ./weights)")
    p.add_argument("--part", type=non_negative_int, default=0, help="which part to run, 0-based (0)")
    p.add_argument("--num-parts", type=positive_int, default=1, help="number of parts (1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto = CUDA when available, else CPU; cuda fails without a GPU. Out of "
                        "GPU memory: retried with less GPU memory, then on the CPU (fp32)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo cases whose valid output c2fseg already wrote; files c2fseg did not "
                        "write are still never overwritten")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from c2fseg.exitcodes import EXIT_OK, EXIT_SOME_FAILED, UsageError
    from c2fseg.infer.pseudolabel import pseudolabel_folder
    from c2fseg.io import FolderError
    from c2fseg.weights import WeightsError

    if args.part >= args.num_parts:
        raise UsageError(f"--part {args.part} must be smaller than --num-parts {args.num_parts}")
    try:
        summary = pseudolabel_folder(
            args.stage, args.weights, args.in_dir, args.out_dir, part=args.part,
            num_parts=args.num_parts, device=args.device, overwrite=args.overwrite,
        )
    except (FolderError, WeightsError) as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:  # e.g. --device cuda without a GPU
        raise UsageError(str(exc)) from None
    print(
        f"{args.stage}: {len(summary['ok'])} labelled, {len(summary['skipped'])} kept, "
        f"{len(summary['failed'])} failed (part {args.part + 1}/{args.num_parts}, {summary['device']})"
    )
    for case, reason in summary["failed"].items():
        print(f"  failed {case}: {reason}")
    return EXIT_SOME_FAILED if summary["failed"] else EXIT_OK
