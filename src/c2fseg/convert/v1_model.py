"""Importing nnU-Net v1 models: a bare trainer checkpoint, or a model folder with its plans."""

from __future__ import annotations

import os
from pathlib import Path

from c2fseg.convert.architecture import UNetArchitecture
from c2fseg.convert.checkpoint import read_checkpoint, v1_state_dict
from c2fseg.convert.errors import ConversionError
from c2fseg.convert.folders import V1_CHECKPOINT, find_checkpoint
from c2fseg.convert.imported import ImportedModel
from c2fseg.convert.plans import make_dataset_json, make_plans
from c2fseg.convert.v1_keys import convert_v1_state_dict
from c2fseg.convert.v1_plans import read_v1_plans


def read_v1_checkpoint(
    path: str | os.PathLike, expected: UNetArchitecture | None = None
) -> tuple[UNetArchitecture, dict]:
    """(architecture, PlainConvUNet state dict) of a v1 trainer checkpoint (``.model``/``.pth``).

    With ``expected`` the file must hold exactly that network; without, the architecture is read
    off the weights. Errors name the file.
    """
    path = Path(path)
    state = v1_state_dict(read_checkpoint(path, "nnU-Net v1 checkpoint"), path)
    return convert_v1_state_dict(state, expected, source=str(path))


def read_v1_model_folder(
    folder: str | os.PathLike, *, fold: int | str = 0, checkpoint: str = V1_CHECKPOINT
) -> ImportedModel:
    """A v1 trained-model folder (``fold_F/<checkpoint>`` and ``<checkpoint>.pkl``) as v2 plans + weights."""
    path = find_checkpoint(folder, fold, checkpoint)
    plans_path = path.with_name(path.name + ".pkl")
    v1 = read_v1_plans(plans_path)
    if len(v1.labels) != v1.architecture.num_classes:
        raise ConversionError(f"{plans_path}: lists classes {list(v1.labels)} for "
                              f"{v1.architecture.num_classes} network channels")
    arch, state = read_v1_checkpoint(path, v1.architecture)
    plans = make_plans(
        arch, spacing=v1.spacing, patch_size=v1.patch_size, ct_statistics=v1.ct_statistics,
        transpose_forward=v1.transpose_forward, median_shape=v1.median_shape,
        batch_size=v1.batch_size or 2,
    )
    return ImportedModel(
        plans=plans,
        dataset_json=make_dataset_json(v1.labels),
        configuration="3d_fullres",
        state_dict=state,
        labels=v1.labels,
        source_format="nnU-Net v1",
        sources=(path, plans_path),
        trainer=v1.trainer,
        fold=path.parent.name.removeprefix("fold_") if path.parent.name.startswith("fold_") else None,
    )
