#!/usr/bin/env python
"""FLARE-style entry point: ``python predict_final.py -i INPUT -o OUTPUT [options]``.

Exactly ``c2fseg predict -i INPUT -o OUTPUT [options]`` (see ``c2fseg predict --help``);
kept as a file so a container can run it without knowing the console script.
"""

import sys
from pathlib import Path

try:
    from c2fseg.cli import main
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from c2fseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
