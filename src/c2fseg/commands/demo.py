"""``c2fseg demo``: the whole system end to end on built-in synthetic phantoms."""

from __future__ import annotations

import argparse

from c2fseg.argtypes import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate phantoms, train tiny models, predict, evaluate (about 15 min on 2 CPU cores)",
        description=(
            "Run the whole system on synthetic abdominal CT phantoms: generate a small data set, "
            "sort it into groups, train the coarse, tumor and organ stages with the tiny "
            "configuration (reused if already trained), predict the held-out phantoms, evaluate "
            "DSC/NSD and render an overlay PNG. About 15 minutes on 2 CPU cores the first time; "
            "seconds when the trained weights are reused."
        ),
    )
    p.add_argument("-o", "--out", default="demo_out", help="work folder (default: ./demo_out)")
    p.add_argument("--train-cases", type=positive_int, default=20, help="training phantoms (20)")
    p.add_argument("--test-cases", type=positive_int, default=4, help="held-out phantoms (4)")
    p.add_argument("--seed", type=int, default=0, help="phantom and split seed (0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--retrain", action="store_true", help="train again even if weights exist")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="override the tiny configuration's number of epochs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from c2fseg.demo import run_demo
    from c2fseg.evaluate import format_summary
    from c2fseg.exitcodes import EXIT_OK

    result = run_demo(args.out, train_cases=args.train_cases, test_cases=args.test_cases,
                      seed=args.seed, device=args.device, retrain=args.retrain, epochs=args.epochs)
    print(format_summary(result.metrics))
    print("\nTimings (s):")
    for name, value in result.timings.items():
        print(f"  {name:<20} {value}")
    if result.overlay_png:
        print(f"\nOverlay of a prediction: {result.overlay_png}")
    print(f"Metrics: {result.out_dir / 'metrics.json'}")
    return EXIT_OK
