"""Training the three cascade stages on nnU-Net v2 (used as a library).

``train_stage`` (in ``c2fseg.train.run``) builds a stage dataset, plans it with nnU-Net, trains
with our trainer subclass (``c2fseg.train.trainers``) and exports ``weights/<stage>/``.
Nothing here imports torch or nnU-Net at package import time.
"""

from __future__ import annotations


def train_stage(*args, **kwargs):
    """See :func:`c2fseg.train.run.train_stage`."""
    from c2fseg.train.run import train_stage as _train_stage

    return _train_stage(*args, **kwargs)


__all__ = ["train_stage"]
