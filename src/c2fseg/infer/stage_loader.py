"""Getting a stage network: what every loader returns, and the loaders of today.

A loader returns a :class:`LoadedStage`: the network (eval mode, on the CPU), a
:class:`StageSpec` (what the network expects: stage, spacing, patch size, axis order, CT
normalisation, channel -> FLARE label map) and the stage's complete inference settings
(:func:`c2fseg.settings.resolve_inference`). :class:`c2fseg.infer.stage_model.StageModel` runs
any ``LoadedStage``; a new way of getting a network (a checkpoint importer that builds the network
from another format) adds a loader here and touches no prediction code.

Loaders today:

* :func:`from_stage_folder`: a ``weights/<stage>/`` folder (manifest checked, hashes verified).
* :func:`from_plans`: nnU-Net v2 plans + dataset.json, with a state dict or random weights.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from c2fseg.infer.normalize import CTNormalizer
from c2fseg.labels import check_stage
from c2fseg.plans import PlansError, resolve_configuration, stage_settings
from c2fseg.settings import SettingsError, resolve_inference
from c2fseg.weights import (
    DATASET_NAME,
    INPUT_ORIENTATION,
    INPUT_ORIENTATIONS,
    PLANS_NAME,
    WeightsError,
    check_input_orientation,
    load_manifest,
)


@dataclass(frozen=True)
class StageSpec:
    """What a stage network expects, in canonical (z, y, x) order."""

    stage: str
    spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    normalizer: CTNormalizer
    channel_labels: tuple[int, ...]
    transpose_forward: tuple[int, int, int] = (0, 1, 2)
    #: the voxel order the network expects (``c2fseg.weights.INPUT_ORIENTATIONS``); the cascade
    #: feeds every stage in that order (all stages of one cascade must agree)
    input_orientation: str = INPUT_ORIENTATION

    def __post_init__(self) -> None:
        check_stage(self.stage)
        if self.input_orientation not in INPUT_ORIENTATIONS:
            raise ValueError(f"input_orientation must be one of {INPUT_ORIENTATIONS}, got {self.input_orientation!r}")
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        object.__setattr__(self, "channel_labels", tuple(int(c) for c in self.channel_labels))
        fwd = tuple(int(a) for a in self.transpose_forward)
        if sorted(fwd) != [0, 1, 2]:
            raise ValueError(f"transpose_forward {self.transpose_forward} is not a permutation of (0, 1, 2)")
        object.__setattr__(self, "transpose_forward", fwd)
        if len(self.spacing) != 3 or len(self.patch_size) != 3:
            raise ValueError(f"spacing and patch size must be 3-D, got {self.spacing} / {self.patch_size}")

    @classmethod
    def from_settings(cls, stage: str, settings: Mapping[str, Any],
                      input_orientation: str = INPUT_ORIENTATION) -> StageSpec:
        """From :func:`c2fseg.plans.stage_settings` (or a manifest holding the same keys)."""
        return cls(stage, settings["spacing"], settings["patch_size"],
                   CTNormalizer.from_stats(settings["normalization"]), settings["channel_labels"],
                   settings.get("transpose_forward", (0, 1, 2)), input_orientation)

    def describe(self) -> dict:
        """JSON-ready summary (for run reports)."""
        n = self.normalizer
        return {"spacing": list(self.spacing), "patch_size": list(self.patch_size),
                "transpose_forward": list(self.transpose_forward),
                "normalization": {"mean": n.mean, "std": n.std, "clip": [n.lower, n.upper]},
                "channel_labels": list(self.channel_labels), "input_orientation": self.input_orientation}


@dataclass
class LoadedStage:
    """A network ready to be placed on a device, what it expects and how to run it."""

    network: torch.nn.Module
    spec: StageSpec
    inference: dict[str, Any]
    manifest: dict | None = None
    source: str = ""  # where it came from, for reports (a stage folder, "plans")


# ---------------------------------------------------------------------------------------------
# Checkpoints and networks
# ---------------------------------------------------------------------------------------------


def extract_state_dict(checkpoint: dict) -> dict:
    """Network weights from an nnU-Net checkpoint dict or a bare state dict, prefixes stripped."""
    state = checkpoint.get("network_weights", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError("checkpoint holds neither 'network_weights' nor a plain state dict")
    clean = {}
    for key, value in state.items():
        for prefix in ("_orig_mod.", "module."):
            while key.startswith(prefix):
                key = key[len(prefix) :]
        clean[key] = value
    return clean


def load_checkpoint(path: str | os.PathLike) -> dict:
    """torch.load a checkpoint on CPU; safe tensor-only loading first, full unpickling if needed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # nnU-Net checkpoints also pickle logs/numpy scalars; the manifest hash vouches for the file.
        return torch.load(path, map_location="cpu", weights_only=False)


def build_network(
    plans: dict, configuration: str, num_classes: int, state_dict: dict | None = None
) -> torch.nn.Module:
    """The stage's network built by nnU-Net's helper from the plans (no deep supervision), eval mode."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = resolve_configuration(plans, configuration).get("architecture")
    if not arch:
        raise WeightsError(
            f"configuration {configuration!r} has no 'architecture' entry (plans from nnU-Net < 2.4?); "
            "re-plan the stage with nnunetv2==2.6.0"
        )
    network = get_network_from_plans(
        arch["network_class_name"],
        arch["arch_kwargs"],
        arch["_kw_requires_import"],
        1,
        num_classes,
        allow_init=True,
        deep_supervision=False,
    )
    if state_dict is not None:
        try:
            network.load_state_dict(extract_state_dict(state_dict), strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"checkpoint does not fit the network in the plans: {exc}") from None
    return network.eval()


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------


def from_plans(
    plans: dict,
    dataset_json: dict,
    configuration: str,
    stage: str,
    state_dict: dict | None = None,
    *,
    inference: Mapping[str, Any] | None = None,
    source: str = "plans",
    input_orientation: str = INPUT_ORIENTATION,
) -> LoadedStage:
    """A stage from plans + dataset.json; ``state_dict`` (or an nnU-Net checkpoint dict) or random.

    ``inference`` sets inference settings over the stage's defaults.
    """
    check_stage(stage)
    try:
        settings = stage_settings(plans, dataset_json, configuration)
    except PlansError as exc:
        raise WeightsError(str(exc)) from None
    network = build_network(plans, configuration, len(settings["channel_labels"]), state_dict)
    return LoadedStage(network, StageSpec.from_settings(stage, settings, input_orientation),
                       resolve_inference(stage, inference), None, source)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path} is not valid JSON ({exc}); re-export the stage weights") from None


def _check_manifest_matches(manifest: dict, settings: dict, folder: Path) -> None:
    """The manifest's copies of the plans values must equal the plans (a hand edit would not)."""
    for key in ("channel_labels", "spacing", "patch_size", "transpose_forward", "normalization"):
        if key in manifest and manifest[key] != settings[key]:
            raise WeightsError(
                f"{folder}: manifest {key} {manifest[key]} disagrees with plans.json/dataset.json "
                f"({settings[key]}); the plans are what the network was trained with: re-export "
                "the stage (or correct the manifest)"
            )


def from_stage_folder(stage_dir: str | os.PathLike, *, verify: bool = True) -> LoadedStage:
    """Load ``weights/<stage>/`` (hashes verified unless ``verify=False``).

    Refuses (WeightsError) a manifest that does not record a known ``"input_orientation"``
    (the voxel order its network expects, see :func:`c2fseg.weights.check_input_orientation`), or whose
    spacing, patch size, normalisation or labels disagree with its plans and dataset.json.
    """
    manifest = load_manifest(stage_dir, verify=verify)
    orientation = check_input_orientation(manifest)
    folder = Path(manifest["stage_dir"])
    plans = _read_json(folder / PLANS_NAME)
    dataset_json = _read_json(folder / DATASET_NAME)
    try:
        settings = stage_settings(plans, dataset_json, manifest["configuration"])
    except PlansError as exc:
        raise WeightsError(f"{folder}: {exc}") from None
    _check_manifest_matches(manifest, settings, folder)
    checkpoint = load_checkpoint(folder / manifest["checkpoint"])
    try:
        network = build_network(plans, manifest["configuration"], len(settings["channel_labels"]), checkpoint)
    except WeightsError as exc:
        raise WeightsError(f"{folder / manifest['checkpoint']}: {exc}") from None
    spec = StageSpec.from_settings(manifest["stage"], settings, orientation)
    return LoadedStage(network, spec, dict(manifest["inference"]), manifest, str(folder))


def with_overrides(loaded: LoadedStage, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The loaded stage's inference settings with ``overrides`` applied (None values ignored)."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        return resolve_inference(loaded.spec.stage, loaded.inference, given)
    except SettingsError as exc:
        where = f" ({loaded.source})" if loaded.source else ""
        raise SettingsError(f"{loaded.spec.stage} stage{where}: {exc}") from None

