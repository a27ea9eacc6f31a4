"""Train one c2fseg stage: ``python run_training.py STAGE ...`` is ``c2fseg train STAGE ...``.

Example::

    python run_training.py coarse --data DATA --splits splits.json --work work --tiny

The ``__main__`` guard matters: nnU-Net's data-augmentation and DDP workers are spawned
processes that re-import the main module.
"""

import sys

from c2fseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
