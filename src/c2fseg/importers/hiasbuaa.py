"""``c2fseg import hiasbuaa``: the four released FLARE23 HIASBUAA checkpoints as c2fseg stages.

The released files (zenodo record 8372563) are nnU-Net v1 trainer checkpoints of one
``Generic_UNet`` architecture. Each is converted to nnU-Net v2's ``PlainConvUNet`` (a key
renaming, :mod:`c2fseg.convert`) and written as an ordinary stage folder whose plans and
manifest carry the published constants and pipeline settings, all read from the package data
file ``hiasbuaa.json`` (no second pipeline in code). The four folders are written together or
not at all; nothing in the source folder is changed.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from c2fseg.convert import ConversionError, UNetArchitecture, make_plans, read_v1_checkpoint
from c2fseg.convert.plans import make_dataset_json
from c2fseg.importers.provenance import import_extra
from c2fseg.importers.stage_folders import StageFolder, check_targets, write_stage_folders
from c2fseg.labels import LABELS

DATA_FILE = "hiasbuaa.json"
SOURCE_FORMAT = "nnU-Net v1 trainer checkpoint (Generic_UNet state_dict)"
CONVERTED = ("Generic_UNet state_dict renamed to nnU-Net v2 PlainConvUNet keys (same tensors; "
             "zero biases for the transposed convs and heads v1 builds without bias)")
RELEASE = "FLARE23 HIASBUAA, zenodo record 8372563"


@functools.lru_cache(maxsize=1)
def _data_text() -> str:
    return resources.files("c2fseg.importers").joinpath(DATA_FILE).read_text(encoding="utf-8")


def published() -> dict:
    """The packaged ``hiasbuaa.json`` (a fresh copy)."""
    return json.loads(_data_text())


def published_architecture(num_classes: int, network: Mapping[str, Any] | None = None
                           ) -> UNetArchitecture:
    """The released network with ``num_classes`` outputs (``network``: another description)."""
    net = dict(network or published()["network"])
    return UNetArchitecture.uniform(net["features"], net["strides"], num_classes,
                                    kernel=int(net.get("kernel", 3)), n_conv=int(net.get("n_conv", 2)))


def stage_inference(name: str) -> dict[str, Any]:
    """The published inference settings of stage folder ``name`` (shared ones included)."""
    data = published()
    return {**data["inference_all"], **data["stages"][name]["inference"]}


def _convert_all(src_dir: Path, data: dict, network: Mapping[str, Any] | None) -> dict:
    """name -> (architecture, state dict, source path); one error naming every bad file."""
    converted, problems = {}, []
    for name, entry in data["stages"].items():
        path = src_dir / entry["file"]
        arch = published_architecture(int(entry["classes"]), network)
        try:
            converted[name] = (*read_v1_checkpoint(path, arch), path)
        except ConversionError as exc:
            problems.append(str(exc))
    if problems:
        files = ", ".join(e["file"] for e in data["stages"].values())
        raise ConversionError(
            f"{src_dir}: cannot import the HIASBUAA checkpoints ({len(problems)} of "
            f"{len(data['stages'])} files):\n- " + "\n- ".join(problems)
            + f"\nThe folder must hold the four released files ({files}) as downloaded "
            f"({RELEASE}); nothing was written"
        )
    return converted


def _stage_folder(name: str, entry: dict, data: dict, arch: UNetArchitecture, state: dict,
                  source: Path) -> StageFolder:
    plans = make_plans(arch, spacing=entry["spacing"], patch_size=entry["patch"],
                       ct_statistics=entry["ct_statistics"],
                       transpose_forward=data["transpose_forward"],
                       dataset_name="Dataset000_HIASBUAA")
    dataset_json = make_dataset_json({LABELS[i]: i for i in range(int(entry["classes"]))})
    extra = import_extra(sources=[source], source_format=SOURCE_FORMAT, converted=CONVERTED,
                         pipeline=data["pipeline"], release=RELEASE,
                         architecture=arch.describe(), stage_folder=name)
    return StageFolder(stage=entry["stage"], plans=plans, dataset_json=dataset_json,
                       configuration="3d_fullres", state_dict=state, trainer="nnUNetTrainerV2",
                       fold="all", inference=stage_inference(name), extra=extra,
                       input_orientation=data["input_orientation"],
                       checkpoint_fields={"imported_from": SOURCE_FORMAT})


def import_hiasbuaa(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    *,
    network: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Convert the four released checkpoints in ``src_dir`` into ``out_dir/{coarse,tumor,tumor_2,organ}``.

    Every file must hold exactly the released network (6 stages 32-320 features, strides
    [1,1,1], [2,2,2] x4, [1,2,2], 3x3x3 kernels; 14 classes, 15 for the tumor models);
    ``network`` replaces that description (tests use a thin one). Raises
    :class:`~c2fseg.convert.ConversionError` naming every missing, unreadable or mismatching
    file before anything is written, and :class:`~c2fseg.importers.ImportTargetError` for an
    existing target without ``overwrite``. Returns folder name -> written folder.
    """
    src_dir, data = Path(src_dir), published()
    if not src_dir.is_dir():
        raise ConversionError(f"{src_dir}: not a folder; give the folder holding the four "
                              f"released checkpoints ({RELEASE})")
    out = Path(out_dir)
    if out.resolve().is_relative_to(src_dir.resolve()):
        raise ConversionError(f"{out} is inside the source folder {src_dir}; c2fseg never "
                              "writes there: choose another output folder")
    check_targets({name: out / name for name in data["stages"]}, overwrite)  # before reading
    converted = _convert_all(src_dir, data, network)
    folders = {name: _stage_folder(name, data["stages"][name], data, *converted[name])
               for name in data["stages"]}
    return write_stage_folders(out, folders, overwrite=overwrite)
