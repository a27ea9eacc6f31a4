"""Importing nnU-Net v2 results folders (``plans.json``, ``dataset.json``, ``fold_F/checkpoint_final.pth``).

The architecture comes from the plans (nnU-Net >= 2.4 ``architecture`` entries; older plans are
translated by nnU-Net's own ``ConfigurationManager``), the number of classes from dataset.json
via nnU-Net's ``LabelManager``. What c2fseg cannot run is refused with the reason: other network
classes (residual encoders), 2-D configurations, the two stages of a cascade, region-based
training and more than one input channel.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from c2fseg.convert.architecture import PLAIN_UNET, build_from_plans_entry
from c2fseg.convert.checkpoint import read_checkpoint, v2_state_dict
from c2fseg.convert.errors import ConversionError
from c2fseg.convert.fit import fit_state_dict
from c2fseg.convert.folders import V2_CHECKPOINT, find_checkpoint
from c2fseg.convert.imported import ImportedModel
from c2fseg.plans import PlansError, ct_statistics, resolve_configuration
from c2fseg.weights import WeightsError

FIX = ("Fix: give the checkpoint trained with these plans (same results folder), and the "
       "configuration it was trained as.")


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ConversionError(f"{path}: {what} not found; point at the nnU-Net results folder "
                              "(.../DatasetXXX/<trainer>__<plans>__<configuration>)")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{path}: {what} is not valid JSON ({exc})") from None
    if not isinstance(content, dict):
        raise ConversionError(f"{path}: {what} does not hold a JSON object")
    return content


def _architecture(plans: dict, configuration: str, path: Path) -> dict:
    """The configuration's ``architecture`` entry after refusing what c2fseg cannot run."""
    try:
        config = resolve_configuration(plans, configuration)
    except (PlansError, WeightsError) as exc:
        raise ConversionError(f"{path}: {exc}") from None
    if configuration == "3d_cascade_fullres" or config.get("previous_stage"):
        raise ConversionError(f"{path}: configuration {configuration!r} is the full-resolution "
                              "stage of an nnU-Net cascade (it takes the low-resolution stage's "
                              "segmentation as input); c2fseg does not import cascades: import a "
                              "3d_fullres model")
    if configuration == "3d_lowres" or config.get("next_stage"):
        raise ConversionError(f"{path}: configuration {configuration!r} is the low-resolution "
                              "first stage of an nnU-Net cascade; c2fseg does not import "
                              "cascades: import a 3d_fullres model")
    if len(config.get("patch_size", ())) != 3:
        raise ConversionError(f"{path}: configuration {configuration!r} is 2-D (patch "
                              f"{config.get('patch_size')}); c2fseg runs 3-D models only")
    arch = config.get("architecture")
    if arch is None:  # plans from nnU-Net < 2.4: let nnU-Net translate them
        from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

        arch = ConfigurationManager(copy.deepcopy(config)).configuration.get("architecture")
    if arch is None:
        raise ConversionError(f"{path}: configuration {configuration!r} describes no network")
    name = str(arch.get("network_class_name", ""))
    if name.rsplit(".", 1)[-1] != PLAIN_UNET.rsplit(".", 1)[-1]:
        kind = ("a residual-encoder U-Net (nnU-Net ResEnc plans)" if "Residual" in name
                else f"network class {name}")
        raise ConversionError(f"{path}: configuration {configuration!r} uses {kind}; c2fseg "
                              "imports nnU-Net's PlainConvUNet only")
    conv = str(arch.get("arch_kwargs", {}).get("conv_op", ""))
    if not conv.endswith("Conv3d"):
        raise ConversionError(f"{path}: configuration {configuration!r} uses {conv}; c2fseg runs "
                              "3-D models only")
    return arch


def _labels(plans: dict, dataset_json: dict, path: Path) -> tuple[int, ...]:
    """Network channel -> label value, refusing regions and several input channels."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    channels = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    if len(channels) != 1:
        raise ConversionError(f"{path}: the model takes {len(channels)} input channels "
                              f"({', '.join(map(str, channels.values()))}); c2fseg stages take "
                              "exactly one (CT)")
    if "labels" not in dataset_json:
        raise ConversionError(f"{path}: dataset.json has no 'labels'")
    try:
        manager = PlansManager(copy.deepcopy(plans)).get_label_manager(dataset_json)
    except (RuntimeError, AssertionError, KeyError, TypeError, ValueError) as exc:
        raise ConversionError(f"{path}: nnU-Net cannot read its labels ({exc})") from None
    if manager.has_regions or dataset_json.get("regions_class_order") is not None:
        raise ConversionError(f"{path}: the model is trained on regions (overlapping labels, "
                              "sigmoid outputs); c2fseg needs one softmax channel per label")
    return tuple(int(v) for v in manager.all_labels)


def _configuration(requested: str | None, checkpoint: dict, folder: Path, ckpt_path: Path) -> str:
    trained = (checkpoint.get("init_args") or {}).get("configuration")
    from_name = folder.name.split("__")[-1] if folder.name.count("__") == 2 else None
    if requested and trained and requested != trained:
        raise ConversionError(f"{ckpt_path}: trained as configuration {trained!r}, not "
                              f"{requested!r}; leave the configuration out or give {trained!r}")
    name = requested or trained or from_name
    if not name:
        raise ConversionError(f"{ckpt_path}: the checkpoint does not record its configuration; "
                              "give it (e.g. 3d_fullres)")
    return str(name)


def read_v2_results_folder(
    folder: str | os.PathLike,
    *,
    fold: int | str = 0,
    checkpoint: str = V2_CHECKPOINT,
    configuration: str | None = None,
) -> ImportedModel:
    """An nnU-Net v2 results folder as plans + dataset.json + checked PlainConvUNet weights."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConversionError(f"{folder}: nnU-Net results folder not found (or not a folder)")
    plans_path, dataset_path = folder / "plans.json", folder / "dataset.json"
    plans = _read_json(plans_path, "plans.json")
    dataset_json = _read_json(dataset_path, "dataset.json")
    ckpt_path = find_checkpoint(folder, fold, checkpoint)
    ckpt = read_checkpoint(ckpt_path, "nnU-Net v2 checkpoint")
    state = v2_state_dict(ckpt, ckpt_path)
    configuration = _configuration(configuration, ckpt, folder, ckpt_path)
    arch = _architecture(plans, configuration, plans_path)
    labels = _labels(plans, dataset_json, dataset_path)
    try:
        ct_statistics(plans, configuration)
    except (PlansError, WeightsError) as exc:
        raise ConversionError(f"{plans_path}: {exc}") from None
    network = build_from_plans_entry(arch, 1, len(labels), device="meta")
    kwargs = arch["arch_kwargs"]
    expected = (f"{arch['network_class_name'].rsplit('.', 1)[-1]}, {kwargs.get('n_stages')} stages, "
                f"features {kwargs.get('features_per_stage')}, {len(labels)} classes, as "
                f"configuration {configuration!r} of {plans_path} describes it")
    state = fit_state_dict(network, state, source=str(ckpt_path), expected=expected, fix=FIX)
    plans = copy.deepcopy(plans)
    plans["configurations"][configuration].setdefault("architecture", arch)
    return ImportedModel(
        plans=plans,
        dataset_json=dataset_json,
        configuration=configuration,
        state_dict=state,
        labels=labels,
        source_format="nnU-Net v2",
        sources=(plans_path, dataset_path, ckpt_path),
        trainer=ckpt.get("trainer_name"),
        fold=ckpt_path.parent.name.removeprefix("fold_"),
    )
