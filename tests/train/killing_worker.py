"""The training worker, killed (SIGKILL, no clean-up) right after its first checkpoint_latest.pth.

test_train_stage runs this instead of ``python -m c2fseg.train.worker`` (``run.WORKER_MODULE``)
to get a run killed at a known point, as the OS kills a process that ran out of memory, without
watching the clock for the moment to kill it. nnU-Net is imported only once the worker has set
its folder variables, as in the real worker.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from c2fseg.train import worker

_build_trainer = worker.build_trainer


def build_dying_trainer(job: dict, plans: dict, device):
    """The worker's trainer, whose first ``checkpoint_latest.pth`` is also its last act."""
    trainer = _build_trainer(job, plans, device)
    save = trainer.save_checkpoint

    def save_then_die(filename: str) -> None:
        save(filename)
        if Path(filename).name == "checkpoint_latest.pth":
            os.kill(os.getpid(), signal.SIGKILL)

    trainer.save_checkpoint = save_then_die
    return trainer


if __name__ == "__main__":
    worker.build_trainer = build_dying_trainer
    sys.exit(worker.main())
