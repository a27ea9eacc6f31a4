"""Finding the files of an nnU-Net model folder (v1 trained-model folder, v2 results folder)."""

from __future__ import annotations

import os
from pathlib import Path

from c2fseg.convert.errors import ConversionError

V1_CHECKPOINT = "model_final_checkpoint.model"
V2_CHECKPOINT = "checkpoint_final.pth"


def fold_dir_name(fold: int | str) -> str:
    """``fold_3`` for 3 or "3", ``fold_all`` for "all"."""
    text = str(fold)
    if text != "all" and not text.isdigit():
        raise ConversionError(f"fold must be a number or 'all', got {fold!r}")
    return f"fold_{text}"


def find_checkpoint(folder: str | os.PathLike, fold: int | str, name: str) -> Path:
    """``folder/name`` when the folder is a fold folder, else ``folder/fold_F/name``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConversionError(f"{folder}: model folder not found (or not a folder)")
    direct = folder / name
    if direct.is_file():
        return direct
    in_fold = folder / fold_dir_name(fold) / name
    if in_fold.is_file():
        return in_fold
    folds = sorted(p.name for p in folder.glob("fold_*") if p.is_dir())
    have = f"it has {', '.join(folds)}" if folds else "it has no fold_* folders"
    raise ConversionError(f"{in_fold}: checkpoint not found ({have}); pick a fold that was "
                          f"trained (--fold), or point at the folder holding {name}")


def detect_format(folder: str | os.PathLike) -> str:
    """'nnU-Net v2' for a results folder (plans.json), 'nnU-Net v1' for a v1 model folder."""
    folder = Path(folder)
    if (folder / "plans.json").is_file():
        return "nnU-Net v2"
    if list(folder.glob("*.model")) or list(folder.glob("fold_*/*.model")) or (folder / "plans.pkl").is_file():
        return "nnU-Net v1"
    raise ConversionError(f"{folder}: neither an nnU-Net v2 results folder (plans.json, "
                          "dataset.json, fold_F/checkpoint_final.pth) nor an nnU-Net v1 model "
                          "folder (fold_F/model_final_checkpoint.model and .model.pkl)")
