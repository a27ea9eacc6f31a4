"""Stage weights folders (``weights/<stage>/``): manifest writing, loading and hash checks.

A stage folder holds ``plans.json``, ``dataset.json``, ``checkpoint_final.pth`` and ``manifest.json``.
The manifest records what inference needs to know without importing torch (spacing, patch size,
CT statistics, channel -> FLARE label map, and the stage's inference settings, see
:mod:`c2fseg.settings`) plus provenance (version, date, trainer, training cases) and a SHA-256 of
every file so a damaged or swapped file is caught before a model runs on it. Imports nothing heavy.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import warnings
from pathlib import Path

from c2fseg import __version__, fileutil
from c2fseg.labels import check_stage
from c2fseg.plans import PlansError, stage_settings
from c2fseg.settings import SettingsError, resolve_inference

MANIFEST_NAME = "manifest.json"
PLANS_NAME = "plans.json"
DATASET_NAME = "dataset.json"
#: The network weights of a stage folder: the name nnU-Net gives a finished training's checkpoint.
CHECKPOINT_NAME = "checkpoint_final.pth"
#: 2: the inference section holds every setting of the stage (1: step, weighting, mirror, min_prob).
MANIFEST_FORMAT = 2
ENV_VAR = "C2FSEG_WEIGHTS"
#: The orientation of the images a stage was trained on (and that inference feeds it): c2fseg's
#: canonical form, axes toward patient Superior, Posterior, Left (see ``c2fseg.io.image``).
INPUT_ORIENTATION = "canonical-LPS"
#: The other voxel order a stage may expect: the file's array as stored (what nnU-Net itself
#: feeds its networks, so what imported nnU-Net models and the published checkpoints expect).
AS_STORED = "as-stored"
INPUT_ORIENTATIONS = (INPUT_ORIENTATION, AS_STORED)
#: Top-level manifest keys; others are reported (free-form information belongs under "extra").
MANIFEST_KEYS = frozenset({
    "format", "stage", "c2fseg_version", "created_utc", "configuration", "fold", "trainer",
    "checkpoint", "input_orientation", "spacing", "patch_size", "transpose_forward", "normalization",
    "channel_labels", "inference", "num_training_cases", "training_cases", "files", "extra",
})


class WeightsError(ValueError):
    """A weights folder is missing, incomplete or damaged; the message says how to fix it.

    A ValueError (bad input to the program), so callers can catch it with other setup errors.
    """


# ---------------------------------------------------------------------------------------------
# Hashing
# ---------------------------------------------------------------------------------------------

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file (:func:`c2fseg.fileutil.sha256_file`), cached per (path, size, mtime) so
    loading the same stage again (CPU fallback models, several tumor models) does not re-read it."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = fileutil.sha256_file(path)
    return _HASH_CACHE[key]


def _read_json(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path}: {what} is not valid JSON ({exc}); re-export the stage weights") from None


def _as_dict(value: dict | str | os.PathLike, stage_dir: Path, name: str) -> dict:
    """Accept a dict or a path; a dict must equal the JSON file already in ``stage_dir``."""
    on_disk = _read_json(stage_dir / name, name)
    if isinstance(value, dict):
        if json.loads(json.dumps(value)) != on_disk:
            raise WeightsError(
                f"{stage_dir / name} differs from the {name} passed to write_manifest; write the file "
                "first, then the manifest"
            )
        return on_disk
    return _read_json(Path(value), name)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def write_manifest(
    stage_dir: str | os.PathLike,
    *,
    stage: str,
    configuration: str,
    fold: int | str,
    plans: dict | str | os.PathLike,
    dataset_json: dict | str | os.PathLike,
    checkpoint_path: str | os.PathLike,
    training_cases: list[str] | tuple[str, ...],
    trainer: str,
    extra: dict | None = None,
    inference: dict | None = None,
    input_orientation: str = INPUT_ORIENTATION,
) -> Path:
    """Hash every file of a stage folder and record how to run it; returns the manifest path.

    ``plans.json``, ``dataset.json`` and the checkpoint must already be in ``stage_dir`` (nothing
    is copied). ``inference`` overrides the stage's default inference settings (any key of
    :mod:`c2fseg.settings`; the manifest stores all of them); ``extra`` is stored verbatim under
    ``"extra"``. ``input_orientation`` is the voxel order the network expects
    (:data:`INPUT_ORIENTATIONS`: c2fseg-trained stages canonical, imported nnU-Net models as stored).
    """
    check_stage(stage)
    if input_orientation not in INPUT_ORIENTATIONS:
        raise WeightsError(f"input_orientation must be one of {INPUT_ORIENTATIONS}, got {input_orientation!r}")
    stage_dir = Path(stage_dir)
    if not stage_dir.is_dir():
        raise WeightsError(f"{stage_dir} is not a folder; create it and put the stage files in it first")
    ckpt = Path(checkpoint_path)
    if ckpt.resolve().parent != stage_dir.resolve():
        raise WeightsError(f"checkpoint {ckpt} must be inside {stage_dir}; copy it there first")
    for name in (PLANS_NAME, DATASET_NAME, ckpt.name):
        if not (stage_dir / name).is_file():
            raise WeightsError(f"{stage_dir / name} is missing; write it before the manifest")
    plans_d = _as_dict(plans, stage_dir, PLANS_NAME)
    dataset_d = _as_dict(dataset_json, stage_dir, DATASET_NAME)
    try:
        settings = stage_settings(plans_d, dataset_d, configuration)
    except PlansError as exc:
        raise WeightsError(f"{stage_dir}: {exc}") from None
    try:
        infer = resolve_inference(stage, inference)
    except SettingsError as exc:
        raise WeightsError(f"inference settings for {stage_dir / MANIFEST_NAME}: {exc}") from None
    files = sorted(
        p.name for p in stage_dir.iterdir() if p.is_file() and p.name != MANIFEST_NAME and not p.name.startswith(".")
    )
    manifest = {
        "format": MANIFEST_FORMAT,
        "stage": stage,
        "c2fseg_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "configuration": configuration,
        "fold": fold,
        "trainer": trainer,
        "checkpoint": ckpt.name,
        "input_orientation": input_orientation,
        **settings,
        "inference": infer,
        "num_training_cases": len(training_cases),
        "training_cases": sorted(str(c) for c in training_cases),
        "files": {name: sha256_file(stage_dir / name) for name in files},
        "extra": extra or {},
    }
    return fileutil.write_json_atomic(stage_dir / MANIFEST_NAME, manifest)


def load_manifest(stage_dir: str | os.PathLike, verify: bool = True) -> dict:
    """Read ``manifest.json`` of a stage folder, checking that every listed file is intact.

    The returned dict is the manifest plus ``"stage_dir"`` (absolute path as a string).
    """
    stage_dir = Path(stage_dir)
    stage = stage_dir.name
    if not stage_dir.is_dir():
        raise WeightsError(
            f"no weights folder {stage_dir}: train it with `c2fseg train {stage}` or copy the "
            f"weights there (or point --weights / ${ENV_VAR} at the folder that holds them)"
        )
    path = stage_dir / MANIFEST_NAME
    if not path.is_file():
        raise WeightsError(
            f"{path} is missing: the folder is not a complete stage export; re-run "
            f"`c2fseg train {stage}` (export step) or copy the whole weights/{stage}/ folder"
        )
    manifest = _read_json(path, MANIFEST_NAME)
    for key in ("stage", "configuration", "files", "checkpoint", "spacing", "patch_size", "channel_labels"):
        if key not in manifest:
            raise WeightsError(f"{path} has no {key!r}; it was not written by c2fseg's exporter")
    _check_format(manifest, path)
    try:
        check_stage(manifest["stage"])
    except ValueError as exc:
        raise WeightsError(f"{path}: {exc}") from None
    try:
        manifest["inference"] = resolve_inference(manifest["stage"], manifest.get("inference"))
    except SettingsError as exc:
        raise WeightsError(f"{path}: inference settings: {exc}. Fix or remove the key (the "
                           "keys and their values: docs/design.md, Stage settings)") from None
    for name, digest in manifest["files"].items():
        fpath = stage_dir / name
        if not fpath.is_file():
            raise WeightsError(f"{fpath} is listed in the manifest but missing; copy the whole stage folder again")
        if verify and sha256_file(fpath) != digest:
            raise WeightsError(
                f"{fpath} does not match its SHA-256 in {path} (damaged or replaced file); copy the "
                "stage folder again or re-export it"
            )
    for name in (PLANS_NAME, DATASET_NAME, manifest["checkpoint"]):
        if name not in manifest["files"]:
            raise WeightsError(f"{path} does not list {name}; re-export the stage weights")
    manifest["stage_dir"] = str(stage_dir.resolve())
    return manifest


def _check_format(manifest: dict, path: Path) -> None:
    """Refuse manifests of a newer format; report top-level keys c2fseg does not know."""
    found = manifest.get("format", 1)
    if not isinstance(found, int) or found > MANIFEST_FORMAT:
        raise WeightsError(
            f"{path} has manifest format {found!r}, newer than this c2fseg ({__version__}) reads "
            f"(up to {MANIFEST_FORMAT}); update c2fseg"
        )
    unknown = sorted(set(manifest) - MANIFEST_KEYS)
    if unknown:
        warnings.warn(
            f"{path}: ignoring unknown manifest keys {unknown}; c2fseg reads none of them (keep "
            "free-form information under \"extra\")",
            stacklevel=3,
        )


def check_input_orientation(manifest: dict) -> str:
    """The voxel order a stage's network expects (:data:`INPUT_ORIENTATIONS`), from its manifest.

    A network fed another axis order than the one it was trained on runs without error and
    returns nonsense, so a missing or unknown orientation is a WeightsError.
    """
    where = Path(manifest.get("stage_dir", ".")) / MANIFEST_NAME
    found = manifest.get("input_orientation")
    if found in INPUT_ORIENTATIONS:
        return found
    if found is None:
        raise WeightsError(
            f"{where} does not record the orientation of the training images (no "
            f"\"input_orientation\": \"{INPUT_ORIENTATION}\"); it was exported by an older c2fseg or "
            "another tool. Re-export the stage with `c2fseg train "
            f"{manifest.get('stage', 'STAGE')}`, or, if its training images were c2fseg stage datasets "
            f"(canonical LPS), add \"input_orientation\": \"{INPUT_ORIENTATION}\" to the manifest; "
            "for an nnU-Net model use `c2fseg import nnunet`"
        )
    raise WeightsError(
        f"{where}: input_orientation {found!r} is not supported; it must be one of "
        f"{', '.join(map(repr, INPUT_ORIENTATIONS))}. Re-train or re-import the stage"
    )


def find_weights_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The weights root: the explicit flag, else ``$C2FSEG_WEIGHTS``, else ``./weights``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path("weights")


def stage_dir_for(weights: str | os.PathLike | None, stage: str) -> Path:
    """Folder of one stage: ``weights`` itself if it already holds a manifest, else ``weights/stage``."""
    check_stage(stage)
    root = find_weights_dir(weights)
    if (root / MANIFEST_NAME).is_file():
        return root
    return root / stage
