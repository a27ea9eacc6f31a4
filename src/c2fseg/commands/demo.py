"""``c2fseg demo``: the whole system end to end on built-in synthetic phantoms."""

from __future__ import annotations

import argparse
import sys

from c2fseg.argtypes import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate phantoms, train tiny models, predict, evaluate (about 15 min on 2 CPU cores)",
        description=(
            "Run the whole system on synthetic abdominal CT phantoms: generate a small data set, "
            "sort it into groups, train the coarse, tumor and organ stages with the tiny "
            "configuration (reused if already trained), predict the held-out phantoms, evaluate "
            "DSC/NSD and render an overlay PNG and the three stages' training curves. About 15 "
            "minutes on 2 CPU cores the first time; seconds when the trained weights are reused. "
            "Prints the per-organ DSC/NSD table, the tumor scored over the test cases that contain "
            "a tumor (tumor-free cases: false-positive tumor volume), the training time per stage "
            "and the prediction time per case; writes OUT/demo_summary.json (all of it, "
            "machine-readable), OUT/metrics.json/.csv, OUT/training_curves.png and an overlay PNG. "
            "A folder made by other demo settings is started afresh (only the demo's own "
            "sub-folders are removed); a non-empty folder that is not a demo folder is refused."
        ),
    )
    p.add_argument("-o", "--out", default="demo_out", help="work folder (default: ./demo_out)")
    p.add_argument("--train-cases", type=positive_int, default=30, help="training phantoms (30)")
    p.add_argument("--test-cases", type=positive_int, default=10, help="held-out phantoms (10)")
    p.add_argument("--seed", type=int, default=0, help="phantom and split seed (0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--retrain", action="store_true", help="train again even if weights exist")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="override the tiny configuration's number of epochs (every stage)")
    p.add_argument("--iters-per-epoch", type=positive_int, default=None,
                   help="override the tiny configuration's iterations per epoch (every stage)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from c2fseg.demo import DemoError, format_demo_table, run_demo
    from c2fseg.exitcodes import EXIT_OK, EXIT_USAGE

    try:
        result = run_demo(args.out, train_cases=args.train_cases, test_cases=args.test_cases,
                          seed=args.seed, device=args.device, retrain=args.retrain,
                          epochs=args.epochs, iters_per_epoch=args.iters_per_epoch)
    except DemoError as exc:
        print(f"c2fseg demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print()
    print(format_demo_table(result))
    print()
    if result.overlay_png:
        print(f"Overlay of a prediction: {result.overlay_png}")
    if result.curves_png:
        print(f"Training curves:         {result.curves_png}")
    print(f"Summary (JSON):          {result.summary_path}")
    return EXIT_OK
