"""``c2fseg phantom``: write a synthetic FLARE23-style CT dataset (nnU-Net raw layout)."""

from __future__ import annotations

import argparse

from c2fseg.argtypes import non_negative_int, positive_int

GROUP_HELP = "G1 unlabelled, G4 tumour labelled (organs maybe partial), G5 some organs, G6 all organs"


def group_fractions(value: str) -> dict[str, float]:
    """'G1=0.45,G4=0.37,G5=0.12,G6=0.055' -> dict (groups left out get 0)."""
    out: dict[str, float] = {}
    for part in value.split(","):
        name, sep, num = part.partition("=")
        name = name.strip().upper()
        if not sep or name not in ("G1", "G4", "G5", "G6"):
            raise argparse.ArgumentTypeError(
                f"{value!r}: expected GROUP=FRACTION pairs such as G1=0.45,G4=0.37,G5=0.12,G6=0.055")
        try:
            out[name] = float(num)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: {num!r} is not a number") from None
        if not 0 <= out[name] < float("inf"):
            raise argparse.ArgumentTypeError(f"{part!r}: fraction must be a finite number >= 0")
    if sum(out.values()) <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: fractions must not all be 0")
    return out


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "phantom",
        help="generate synthetic abdominal CT phantoms with FLARE23 labels",
        description=(
            "Write synthetic contrast-enhanced abdominal CTs with the 13 FLARE23 organs (+ tumours) "
            "in the FLARE23/nnU-Net raw layout: imagesTr/, labelsTr/ (absent for unlabelled cases), "
            "imagesTs/, labelsTs/ (held-out, fully labelled), dataset.json and phantoms.json. "
            "Deterministic for a seed; re-running with the same arguments skips finished cases."
        ),
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created; must be empty or "
                   "hold phantoms made with the same arguments unless --overwrite)")
    p.add_argument("--cases", type=positive_int, default=8, help="training cases (default 8)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    p.add_argument("--size", choices=("small", "full"), default="small",
                   help="small: 64-96 voxels per side, 4-8 mm voxels, about a second per case "
                   "(thin organs drawn thicker); full: 512x512 in-plane, 0.6-0.9 mm, 1-5 mm slices")
    p.add_argument("--test-cases", type=non_negative_int, default=0,
                   help="held-out fully labelled cases in imagesTs/labelsTs (default 0)")
    p.add_argument("--group-fractions", type=group_fractions, default=None, metavar="G1=F,...",
                   help=f"label groups of training cases ({GROUP_HELP}); default the FLARE23 mix "
                   "G1=0.45,G4=0.37,G5=0.12,G6=0.055; each used group gets >= 1 case when cases >= 4")
    p.add_argument("--overwrite", action="store_true",
                   help="replace phantoms made with other settings in OUT_DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from c2fseg.data import PhantomError, generate_dataset
    from c2fseg.exitcodes import EXIT_OK, UsageError

    try:
        summary = generate_dataset(args.out_dir, args.cases, args.seed, args.size,
                                   test_cases=args.test_cases, group_fractions=args.group_fractions,
                                   overwrite=args.overwrite, progress=not args.quiet)
    except PhantomError as exc:
        raise UsageError(str(exc)) from None
    groups = ", ".join(f"{g} {n}" for g, n in summary["groups"].items() if n)
    print(f"{summary['out_dir']}: {summary['generated']} written, {summary['skipped']} already "
          f"there ({groups}; {summary['tumor_cases']} with tumours)")
    return EXIT_OK
