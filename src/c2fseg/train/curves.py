"""Training curves of the stages: per-epoch loss and pseudo-Dice from nnU-Net's own logs.

nnU-Net keeps its per-epoch log (train and validation loss, mean foreground pseudo-Dice on the
validation patches, its moving average, the learning rate, epoch time stamps) in every checkpoint
under ``logging``. :func:`training_log` reads it from a stage's nnU-Net output folder (the final
checkpoint, else the latest), :func:`plot_training_curves` draws one row per stage.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from c2fseg.fileutil import atomic_target
from c2fseg.labels import TUMOR

#: Checkpoints that hold the log, best first.
LOG_CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth")
#: Keys of nnU-Net's log that the curves use (lists, one value per epoch).
LOG_KEYS = ("train_losses", "val_losses", "mean_fg_dice", "ema_fg_dice", "lrs",
            "epoch_start_timestamps", "epoch_end_timestamps")


def training_log(folder: str | os.PathLike) -> dict[str, list[float]] | None:
    """Per-epoch log of the nnU-Net run in ``folder`` (None when it has no checkpoint yet)."""
    import torch

    for name in LOG_CHECKPOINTS:
        path = Path(folder) / name
        if path.is_file():
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            log = ckpt.get("logging") or {}
            out = {k: [float(v) for v in log.get(k, [])] for k in LOG_KEYS}
            per_label = log.get("dice_per_class_or_region", [])
            if per_label and len(per_label[0]) == TUMOR:  # a 15-label (tumor stage) run
                out["tumor_dice"] = [float(d[-1]) for d in per_label]
            return out
    return None


def epoch_seconds(log: Mapping[str, list[float]]) -> list[float]:
    """Wall time of each logged epoch (end minus start stamp)."""
    start, end = log.get("epoch_start_timestamps", []), log.get("epoch_end_timestamps", [])
    return [round(e - s, 2) for s, e in zip(start, end, strict=False)]


def plot_training_curves(logs: Mapping[str, Mapping[str, list[float]]], out_png: str | os.PathLike,
                         title: str = "c2fseg training curves") -> Path:
    """One row per stage: losses (left) and pseudo-Dice (right) per epoch; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not logs:
        raise ValueError("no training logs to plot")
    fig, axes = plt.subplots(len(logs), 2, figsize=(10, 2.8 * len(logs)), squeeze=False)
    for row, (stage, log) in enumerate(logs.items()):
        loss_ax, dice_ax = axes[row]
        for key, label in (("train_losses", "train loss"), ("val_losses", "validation loss")):
            values = log.get(key, [])
            loss_ax.plot(np.arange(1, len(values) + 1), values, label=label)
        loss_ax.set_title(f"{stage}: loss (Dice + CE)")
        loss_ax.set_xlabel("epoch")
        loss_ax.legend(fontsize=8)
        for key, label in (("mean_fg_dice", "mean of the labels"), ("ema_fg_dice", "moving average"),
                           ("tumor_dice", "tumor")):
            values = log.get(key, [])
            if values:
                dice_ax.plot(np.arange(1, len(values) + 1), values, label=label)
        dice_ax.set_ylim(0, 1)
        dice_ax.set_title(f"{stage}: pseudo-Dice (validation patches)")
        dice_ax.set_xlabel("epoch")
        dice_ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out_png)
    with atomic_target(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return out
