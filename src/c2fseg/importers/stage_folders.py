"""Writing converted networks as ordinary c2fseg stage folders, all of them or none.

A stage folder (``plans.json``, ``dataset.json``, ``checkpoint_final.pth``, ``manifest.json``,
see :mod:`c2fseg.weights`) is built in a temporary folder beside its target and renamed into
place only when complete, so an interrupted or failed import never leaves a half folder. An
existing target is refused unless ``overwrite=True``; it is then kept as ``<name>.previous``
(as training's export does, ``c2fseg.train.run``), replacing an older ``.previous`` only when
that one is an intact c2fseg stage folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from c2fseg.convert.errors import ConversionError
from c2fseg.fileutil import write_json_atomic
from c2fseg.train.run import PREVIOUS_SUFFIX
from c2fseg.weights import (
    AS_STORED,
    CHECKPOINT_NAME,
    DATASET_NAME,
    PLANS_NAME,
    load_manifest,
    write_manifest,
)


class ImportTargetError(ConversionError):
    """The output folder of an import exists (or cannot be replaced); the message says what to do."""


@dataclass
class StageFolder:
    """Everything one stage folder holds: plans, dataset.json, weights, settings and provenance."""

    stage: str
    plans: dict
    dataset_json: dict
    configuration: str
    state_dict: dict
    trainer: str
    fold: int | str | None = None
    inference: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    input_orientation: str = AS_STORED
    checkpoint_fields: dict[str, Any] = field(default_factory=dict)

    def checkpoint(self) -> dict:
        """The nnU-Net v2 checkpoint dict saved as ``checkpoint_final.pth``."""
        return {
            "network_weights": self.state_dict,
            "init_args": {"plans": self.plans, "configuration": self.configuration,
                          "fold": self.fold, "dataset_json": self.dataset_json},
            "trainer_name": self.trainer,
            "inference_allowed_mirroring_axes": (0, 1, 2),
            **self.checkpoint_fields,
        }


def previous_path(target: Path) -> Path:
    """Where a replaced folder is kept: ``<target>.previous``."""
    return target.with_name(target.name + PREVIOUS_SUFFIX)


def _is_stage_folder(folder: Path) -> bool:
    """True for an intact c2fseg stage folder (manifest present, every hash right)."""
    try:
        load_manifest(folder, verify=True)
    except (ValueError, OSError):
        return False
    return True


def check_targets(targets: Mapping[str, Path], overwrite: bool) -> None:
    """Refuse, before any work, targets that exist (without ``overwrite``) or cannot be replaced."""
    for target in targets.values():
        if not target.exists():
            continue
        if not overwrite:
            raise ImportTargetError(f"{target} already exists; choose another output folder, or "
                                    f"pass --overwrite (the old folder is kept as "
                                    f"{previous_path(target).name})")
        if not target.is_dir():
            raise ImportTargetError(f"{target} exists and is not a folder; move it away first")
        prev = previous_path(target)
        if prev.exists() and not _is_stage_folder(prev):
            raise ImportTargetError(f"{prev} exists and is not an intact c2fseg stage folder, so "
                                    f"it will not be replaced by the current {target}; move or "
                                    "delete it yourself, then import again")


def _write_one(folder: Path, spec: StageFolder) -> None:
    import torch

    folder.mkdir()
    write_json_atomic(folder / PLANS_NAME, spec.plans)
    write_json_atomic(folder / DATASET_NAME, spec.dataset_json)
    torch.save(spec.checkpoint(), folder / CHECKPOINT_NAME)
    write_manifest(folder, stage=spec.stage, configuration=spec.configuration,
                   fold=spec.fold if spec.fold is not None else "all", plans=spec.plans,
                   dataset_json=spec.dataset_json, checkpoint_path=folder / CHECKPOINT_NAME,
                   training_cases=[], trainer=spec.trainer, extra=spec.extra,
                   inference=spec.inference, input_orientation=spec.input_orientation)


def _replace(built: Path, target: Path, trash: Path) -> bool:
    """Move ``built`` to ``target``; an existing target becomes ``.previous``. True if it did."""
    moved = False
    if target.exists():
        prev = previous_path(target)
        if prev.exists():
            os.replace(prev, trash / prev.name)
        os.replace(target, prev)
        moved = True
    os.replace(built, target)
    return moved


def write_stage_folders(
    out_dir: str | os.PathLike,
    folders: Mapping[str, StageFolder],
    *,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``out_dir/<name>`` for each entry of ``folders``; all of them or none.

    Everything is written into a temporary folder first (beside ``out_dir`` when it does not
    exist yet, so a failure leaves no ``out_dir``; inside it otherwise) and renamed into place
    at the end. Returns name -> written folder. Raises :class:`ImportTargetError` when a
    target exists and ``overwrite`` is False.
    """
    out_dir = Path(out_dir)
    targets = {name: out_dir / name for name in folders}
    check_targets(targets, overwrite)
    new_root = not out_dir.exists()
    if new_root:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
    else:
        staging = Path(tempfile.mkdtemp(prefix=".import-", dir=out_dir))
    try:
        for name, spec in folders.items():
            _write_one(staging / name, spec)
        if new_root:
            os.replace(staging, out_dir)
        else:
            for name, target in targets.items():
                if _replace(staging / name, target, staging):
                    print(f"[c2fseg] the previous {target} was moved to "
                          f"{previous_path(target)}", flush=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return targets


def write_stage_folder(target: str | os.PathLike, folder: StageFolder, *,
                       overwrite: bool = False) -> Path:
    """Write one stage folder at ``target`` (see :func:`write_stage_folders`)."""
    target = Path(target)
    return write_stage_folders(target.parent, {target.name: folder}, overwrite=overwrite)[target.name]
