"""``python -m c2fseg.bench.make_phantoms``: build the benchmark phantoms before any timing.

The GPU script runs this as its own step, so no timed step pays for (or is killed during) the
phantom generation: ``--count`` phantoms in parallel processes into ``--cache`` (the first is
the one ``c2fseg bench --case full-phantom`` uses), their images linked into ``--predict-dir``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from c2fseg.bench.cases import DEFAULT_CACHE, PHANTOM_SEED, SIZES, build_phantoms, link_inputs


def main(argv: list[str] | None = None) -> int:
    """Build the phantoms (and the predict input folder); print where they are as JSON."""
    parser = argparse.ArgumentParser(description="Generate the benchmark phantoms into a cache "
                                     "(the GPU script runs this as its own step before any timing).")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--count", type=int, default=1, help="phantoms to build (default 1)")
    parser.add_argument("--size", choices=SIZES, default="full",
                        help="full: 512x512, ~300 slices (default); small: ~90x90x90 at 4-7 mm; "
                             "tiny: 24x48x48 (the GPU script's dry run)")
    parser.add_argument("--predict-dir", type=Path, default=None,
                        help="also link the images (only) into this folder, as predict input")
    parser.add_argument("--seed", type=int, default=PHANTOM_SEED)
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be >= 1")
    cases = build_phantoms(args.cache, args.count, args.size, args.seed)
    linked = link_inputs(cases, args.predict_dir) if args.predict_dir else []
    print(json.dumps({"bench_case": str(cases[0].image), "bench_labels": str(cases[0].labels),
                      "cases": [c.name for c in cases], "predict_inputs": [str(p) for p in linked]},
                     indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
