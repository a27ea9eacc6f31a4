"""Loading the cascade's models from a weights folder, once per run: ``load_models``.

A weights folder holds ``coarse/``, ``organ/``, ``tumor/`` and optionally ``tumor_2/``,
``tumor_3/``... (the tumor ensemble). Everything here runs before any case is touched and
raises :class:`SetupError` (a usage error) naming what is missing or unusable.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from c2fseg.device import resolve_device
from c2fseg.infer.cascade import CascadeModels
from c2fseg.settings import SettingsError, check_ensemble
from c2fseg.weights import find_weights_dir

REQUIRED_STAGES = ("coarse", "organ", "tumor")
_TUMOR_DIR = re.compile(r"tumor(?:_(\d+))?")


class SetupError(ValueError):
    """The run cannot start (weights missing or unusable, device unavailable): a usage error."""


def setup_device(device: str) -> str:
    """The concrete device name ('cpu', 'cuda', 'cuda:1') or a SetupError saying what to use."""
    try:
        return str(resolve_device(device))
    except ValueError as exc:
        raise SetupError(str(exc)) from None


def find_weights(explicit: str | os.PathLike | None = None) -> Path:
    """The weights folder: the flag, then $C2FSEG_WEIGHTS, then ./weights."""
    return Path(find_weights_dir(explicit))


def tumor_dirs(weights_dir: Path) -> list[Path]:
    """``tumor``, ``tumor_2``, ``tumor_3``... in that order (the ensemble's members)."""
    found = []
    for p in weights_dir.iterdir() if weights_dir.is_dir() else []:
        m = _TUMOR_DIR.fullmatch(p.name)
        if p.is_dir() and m:
            found.append((int(m.group(1) or 1), p))
    return [p for _, p in sorted(found)]


def check_weights(weights_dir: Path) -> None:
    """Raise SetupError naming what is missing, before any case is touched."""
    if not weights_dir.is_dir():
        raise SetupError(
            f"weights folder {weights_dir} does not exist. Pass --weights DIR, set "
            "C2FSEG_WEIGHTS, or train the stages with `c2fseg train STAGE`."
        )
    missing = [s for s in REQUIRED_STAGES if not (weights_dir / s).is_dir()]
    if missing:
        raise SetupError(
            f"weights folder {weights_dir} has no {', '.join(missing)} stage folder(s). Train "
            f"them with `c2fseg train {missing[0]}` or copy the stage weights there."
        )


def step_for(step: float | Mapping[str, float] | None, stage: str) -> float | None:
    """The sliding-window step override of ``stage`` (one value for all, or per stage)."""
    if step is None or isinstance(step, (int, float)):
        return step
    return step.get(stage.split("_")[0], step.get(stage))


def check_stage_folder(model_stage: str, stage_dir: Path) -> None:
    """A stage folder must hold its own stage (``tumor_2`` holds a tumor model, etc.)."""
    expected = stage_dir.name.split("_")[0]
    if model_stage != expected:
        raise SetupError(
            f"{stage_dir} holds a {model_stage!r} model (its manifest.json says stage "
            f"{model_stage!r}), not the {expected!r} model its folder name promises; move it to "
            f"{stage_dir.parent / model_stage} or put the {expected} weights there"
        )


def load_models(
    weights_dir: Path,
    device: str,
    *,
    step: float | Mapping[str, float] | None = None,
    precision: str = "auto",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    input_orientation: str | None = None,
) -> CascadeModels:
    """Load every stage model once (they stay in memory for the whole batch).

    Each model runs with its stage folder's inference settings; ``step`` (one value or per
    stage) and ``overrides`` (``{"coarse": {"min_prob": 0.1}, ...}``, per stage name) replace
    some of them. The tumor models must agree on how they are combined, and all stages on the
    voxel order they are fed (``input_orientation`` replaces the stage folders' for all).
    """
    from c2fseg.infer.stage_model import StageModel

    def load(stage_dir: Path):
        stage = stage_dir.name.split("_")[0]
        given = dict((overrides or {}).get(stage, {}))
        if step_for(step, stage) is not None:  # --step wins over a --set STAGE.step
            given["step"] = step_for(step, stage)
        try:
            model = StageModel.load(stage_dir, device, precision=precision, **given)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise SetupError(f"cannot load the {stage_dir.name} model from {stage_dir}: {exc}") from exc
        check_stage_folder(model.stage, stage_dir)
        if input_orientation is not None:
            model.spec = dataclasses.replace(model.spec, input_orientation=input_orientation)
        return model

    models = CascadeModels(
        coarse=load(weights_dir / "coarse"),
        organ=load(weights_dir / "organ"),
        tumors=[load(d) for d in tumor_dirs(weights_dir)],
    )
    try:
        check_ensemble({str(m.source or m.stage): m.inference for m in models.tumors})
        models.input_orientation  # noqa: B018 (raises when the stages disagree)
    except (SettingsError, ValueError) as exc:
        raise SetupError(str(exc)) from None
    return models
