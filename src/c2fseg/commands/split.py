"""``c2fseg split``: sort training cases into groups G1-G6 and make seeded k-fold splits."""

from __future__ import annotations

import argparse
from pathlib import Path

from c2fseg.argtypes import existing_dir, non_negative_int, positive_int


def folds_count(value: str) -> int:
    """An integer >= 2 (a k-fold split needs at least two folds)."""
    n = positive_int(value)
    if n < 2:
        raise argparse.ArgumentTypeError(f"{value!r}: need at least 2 folds")
    return n


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "split",
        help="sort training cases into groups G1-G6 and make per-stage k-fold splits",
        description=(
            "Scan DATA_DIR/imagesTr/<case>_0000.<ext> and DATA_DIR/labelsTr/<case>.<ext>, sort "
            "the cases into the FLARE23 groups by what their label files contain (G1 no label, or "
            "one holding only background; "
            "G2 labelled; G4 with tumor; G3 without; G6 = G3 with all 13 organs; G5 = G3 with "
            "some), record which organs each case annotates, and write per stage the training "
            "cases (coarse = G6, tumor = G4, organ = all) with seeded k-fold train/val splits. "
            "Problem cases (label values outside 0-14, image/label header mismatch, label "
            "without image, unreadable files) are listed in 'problems' and left out (exit code 3)."
        ),
    )
    p.add_argument("data_dir", type=existing_dir, metavar="DATA_DIR",
                   help="dataset folder with imagesTr/ and labelsTr/")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="splits.json",
                   help="where to write the splits (outside DATA_DIR)")
    p.add_argument("--folds", type=folds_count, default=5, help="number of folds (default 5)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="shuffle seed (default 0)")
    p.add_argument("--cases", action="append", type=Path, default=[], metavar="LIST.json",
                   help="a case list (e.g. data_split/hiasbuaa_coarse.json) that fixes its stage's "
                        "cases and fold: the stage trains on the listed cases found in DATA_DIR, "
                        "and the list's fold becomes fold 0 of that stage (--fold 0 trains on its "
                        "train part). Listed cases missing from DATA_DIR or in another group than "
                        "the list says are reported as problems. Repeat for several stages")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="parallel processes (default: min(4, CPUs))")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from c2fseg.data.groups import build_splits, write_splits
    from c2fseg.exitcodes import EXIT_OK, EXIT_SOME_FAILED, UsageError

    if args.out.resolve().is_relative_to(args.data_dir.resolve()):
        raise UsageError(f"{args.out} is inside the input folder {args.data_dir}; write it elsewhere")
    from c2fseg.data.case_list import load_case_list

    try:
        lists = [load_case_list(path) for path in args.cases]
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    stages = [doc["stage"] for doc in lists]
    if len(set(stages)) != len(stages):
        raise UsageError(f"--cases: more than one case list for the same stage ({', '.join(stages)})")
    try:
        splits = build_splits(args.data_dir, folds=args.folds, seed=args.seed, workers=args.workers,
                              case_lists=lists)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    write_splits(splits, args.out)
    counts = splits["counts"]
    print("  ".join(f"{g}: {counts[g]}" for g in ("G1", "G2", "G3", "G4", "G5", "G6")))
    for stage, entry in splits["stages"].items():
        listed = entry.get("case_list")
        if listed is None:
            print(f"stage {stage:<7} {len(entry['cases'])} cases, {splits['folds']} folds")
            continue
        fold = entry["folds"][0]
        print(f"stage {stage:<7} {len(entry['cases'])} of {listed['listed']} listed cases "
              f"({listed['file']}), 1 fold (fold 0 = the list's {listed['fold_name']}: "
              f"{len(fold['train'])} train / {len(fold['val'])} val); "
              f"{len(listed['missing'])} missing from the data, "
              f"{len(listed['wrong_group'])} not in {listed['group']}")
    for problem in splits["problems"]:
        print(f"problem: {problem['case']}: {problem['kind']}: {problem['reason']}")
    for warning in splits["warnings"]:
        print(f"warning: {warning}")
    print(f"Splits: {args.out}")
    return EXIT_SOME_FAILED if splits["problems"] else EXIT_OK
