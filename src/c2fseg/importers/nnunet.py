"""``c2fseg import nnunet``: any trained nnU-Net v1/v2 PlainConvUNet model as a c2fseg stage.

The model folder is read by :mod:`c2fseg.convert` (v2 results folder or v1 model folder,
:func:`~c2fseg.convert.detect_format`). The network's output channels are fixed, so a label map
(``--labels``) says which FLARE label each of the model's labels becomes; channels left out are
*dropped*: they map to background, so a voxel whose most likely class is a dropped one becomes
background. The map is written into the stage's dataset.json (``c2fseg_channel_labels``, see
:mod:`c2fseg.plans`), beside the model's own labels (which nnU-Net's tools keep reading).

Inference settings follow nnU-Net's own where c2fseg has them: Gaussian tile weights, tile step
0.5, logits averaged over tiles, nnU-Net's tile positions; the file's voxels as stored (nnU-Net
never reorients). nnU-Net mirrors by default (test-time augmentation, 8 passes for 3-D); the
import switches mirroring off (8x faster), ``predict --mirror`` turns it on.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from c2fseg.convert import (
    ConversionError,
    ImportedModel,
    detect_format,
    read_v1_model_folder,
    read_v2_results_folder,
)
from c2fseg.importers.provenance import import_extra
from c2fseg.importers.stage_folders import StageFolder, check_targets, write_stage_folder
from c2fseg.labels import LABELS, NAME_TO_ID, STAGE_LABELS, check_stage
from c2fseg.plans import CHANNEL_LABELS_KEY, PlansError, channel_labels_from_dataset

PIPELINE = "c2fseg"
#: nnU-Net's sliding-window behaviour in c2fseg's settings keys (mirroring: see module doc).
NNUNET_INFERENCE: dict[str, Any] = {"weighting": "gaussian", "step": 0.5, "average": "logits",
                                    "tile_rule": "stride", "mirror": False, "min_prob": 0.0}
NOTES = ("nnU-Net mirrors by default (test-time augmentation); this stage runs without "
         "mirroring unless predict is given --mirror. c2fseg's Gaussian tile weights are "
         "floored at 0.05 and centred at (p-1)/2, nnU-Net's are not: labels can differ where "
         "tiles overlap.")


def _flare_id(value: Any, where: str) -> int:
    if isinstance(value, str) and value in NAME_TO_ID:
        return NAME_TO_ID[value]
    if isinstance(value, bool) or not isinstance(value, int) or value not in LABELS:
        raise ConversionError(f"{where}: {value!r} is not a FLARE23 label id (0-14) or name")
    return int(value)


def _model_label(key: str, names: Mapping[str, int], values: tuple[int, ...], where: str) -> int:
    """The model label value a map key names (its id, or its name in dataset.json)."""
    if key.strip().lstrip("-").isdigit():
        value = int(key)
    elif key in names:
        value = names[key]
    else:
        raise ConversionError(f"{where}: {key!r} is neither a label id nor a label name of the "
                              f"model (its labels: {dict(names)})")
    if value not in values:
        raise ConversionError(f"{where}: the model has no label {value} (its labels: {list(values)})")
    return value


def mapped_channel_labels(model: ImportedModel, labels_map: Mapping[str, Any], stage: str,
                          where: str = "label map") -> list[int]:
    """Network channel -> FLARE id from ``labels_map`` (model label id or name -> FLARE id or
    name); unmapped channels (and background) map to 0 (dropped)."""
    names = {str(k): v for k, v in model.dataset_json.get("labels", {}).items() if isinstance(v, int)}
    out = [0] * model.num_classes
    for key, target in labels_map.items():
        value = _model_label(str(key), names, model.labels, where)
        flare = _flare_id(target, f"{where} entry {key!r}")
        if value == 0 and flare != 0:
            raise ConversionError(f"{where}: the model's background (0) must stay background")
        out[model.labels.index(value)] = flare
    kept = [v for v in out if v]
    twice = sorted({v for v in kept if kept.count(v) > 1})
    if twice:
        raise ConversionError(f"{where}: FLARE label(s) {twice} are given by several model labels; "
                              "map each FLARE label from one model label")
    _check_stage_labels(kept, stage, where)
    if not kept:
        raise ConversionError(f"{where}: maps no model label to a FLARE label")
    return out


def _check_stage_labels(labels: list[int], stage: str, where: str) -> None:
    wrong = sorted(set(labels) - set(STAGE_LABELS[stage]) - {0})
    if wrong:
        raise ConversionError(f"{where}: the {stage} stage predicts labels "
                              f"{min(STAGE_LABELS[stage])}-{max(STAGE_LABELS[stage])}, not {wrong}; "
                              "map the model's labels to the stage's (or import it as another stage)")


def read_labels_map(path: str | os.PathLike) -> dict[str, Any]:
    """A ``--labels`` JSON file: an object model label (id or name) -> FLARE id (or name)."""
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversionError(f"{path}: label map not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path}: cannot read the label map ({exc})") from None
    if not isinstance(content, dict) or not content:
        raise ConversionError(f"{path}: the label map must be a JSON object such as "
                              '{"5": 1, "1": 3} (model label id -> FLARE23 label id)')
    return content


def _dataset_json(model: ImportedModel, stage: str, labels_map: Mapping[str, Any] | None,
                  where: str) -> dict:
    dataset_json = copy.deepcopy(model.dataset_json)
    if labels_map is not None:
        dataset_json[CHANNEL_LABELS_KEY] = mapped_channel_labels(model, labels_map, stage, where)
        return dataset_json
    dataset_json.pop(CHANNEL_LABELS_KEY, None)
    try:
        labels = channel_labels_from_dataset(dataset_json)
    except PlansError as exc:
        raise ConversionError(
            f"{model.sources[0]}: {exc}. Give a label map with --labels MAP.json (model label id "
            '-> FLARE23 id, e.g. {"5": 1, "1": 3}; labels left out are dropped)') from None
    _check_stage_labels(list(labels), stage, "the model's labels")
    return dataset_json


def read_model(model_dir: str | os.PathLike, fold: int | str = 0) -> ImportedModel:
    """The model folder read by the converter that fits its format."""
    if detect_format(model_dir) == "nnU-Net v2":
        return read_v2_results_folder(model_dir, fold=fold)
    return read_v1_model_folder(model_dir, fold=fold)


def import_nnunet(
    model_dir: str | os.PathLike,
    stage: str,
    out_stage_dir: str | os.PathLike,
    fold: int | str = 0,
    labels_map: Mapping[str, Any] | str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an nnU-Net v1 model folder or v2 results folder as the stage folder ``out_stage_dir``.

    ``labels_map`` (a dict or a JSON file): model label (id or name) -> FLARE23 id; model labels
    left out are dropped (their voxels become background). Without it the model's label names
    must be FLARE23 names. Raises :class:`~c2fseg.convert.ConversionError` (and
    :class:`~c2fseg.importers.ImportTargetError`) with the file and the fix.
    """
    stage = check_stage(stage)
    target = Path(out_stage_dir)
    if target.resolve().is_relative_to(Path(model_dir).resolve()):
        raise ConversionError(f"{target} is inside the model folder {model_dir}; choose another "
                              "output folder")
    check_targets({target.name: target}, overwrite)
    map_sources: list[Path] = []
    if labels_map is not None and not isinstance(labels_map, Mapping):
        map_sources = [Path(labels_map)]
        labels_map = read_labels_map(labels_map)
    model = read_model(model_dir, fold)
    dataset_json = _dataset_json(model, stage, labels_map, str(map_sources[0]) if map_sources
                                 else "label map")
    extra = import_extra(
        sources=[*model.sources, *map_sources], source_format=model.source_format,
        converted=("nnU-Net v2 PlainConvUNet weights, checked against the plans"
                   if model.source_format == "nnU-Net v2" else
                   "nnU-Net v1 Generic_UNet state_dict renamed to PlainConvUNet keys"),
        pipeline=PIPELINE, voxel_order=model.voxel_order, model_labels=list(model.labels),
        labels_map=dict(labels_map) if labels_map is not None else None,
        notes=[*model.notes, NOTES],
    )
    folder = StageFolder(stage=stage, plans=model.plans, dataset_json=dataset_json,
                         configuration=model.configuration, state_dict=model.state_dict,
                         trainer=model.trainer or "nnUNetTrainer", fold=model.fold,
                         inference=dict(NNUNET_INFERENCE), extra=extra,
                         input_orientation=model.voxel_order,
                         checkpoint_fields={"imported_from": model.source_format})
    return write_stage_folder(target, folder, overwrite=overwrite)
