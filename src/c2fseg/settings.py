"""Per-stage settings: the packaged defaults and the inference section of a stage's manifest.

``stage_defaults.json`` (package data beside this module) is the one home of c2fseg's defaults:
training reads its ``configs``, the stage export writes its ``inference`` section into each
manifest, inference fills settings an older manifest lacks from it, the benchmark reads its CT
statistics and thin networks, and the command-line help texts quote it.

A stage folder carries its own inference settings (``manifest.json`` -> ``inference``); these
are what predict, pseudolabel and bench use, unless the command line overrides one. Which keys a
stage accepts is what its entry in the defaults holds; a value is checked by the key's rule
below. An unknown key is refused with a message naming it: a setting that would silently do
nothing must not load. The published FLARE23 HIASBUAA pipeline is one set of values of these
keys (``c2fseg import hiasbuaa`` writes them), run by the same code as c2fseg's own stages.
Imports nothing heavy.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

from c2fseg.labels import STAGE_LABELS, check_stage

DEFAULTS_FILE = "stage_defaults.json"

#: Allowed values of the keys that name a rule. "published" / "published_reconcile" are the
#: published FLARE23 HIASBUAA pipeline's rules (``c2fseg import hiasbuaa`` writes them).
CHOICES: Mapping[str, tuple[str, ...]] = {
    "weighting": ("uniform", "gaussian"),
    "average": ("logits", "probabilities"),
    "tile_rule": ("stride", "span"),
    "roi_rule": ("c2fseg", "published"),
    "tumor_combination": ("mean_probability", "published_reconcile"),
}

#: Settings the tumor models of one ensemble must share (they combine into one mask).
ENSEMBLE_KEYS = ("tumor_threshold", "tumor_combination")
#: Settings every stage of one cascade must share (they see the same volume).
CASCADE_KEYS = ("input_orientation",)


class SettingsError(ValueError):
    """An inference setting is unknown, reserved or out of range; the message names it."""


@functools.lru_cache(maxsize=1)
def _defaults_text() -> str:
    return resources.files("c2fseg").joinpath(DEFAULTS_FILE).read_text(encoding="utf-8")


def load_defaults() -> dict:
    """The packaged ``stage_defaults.json`` (a fresh copy: callers may change it)."""
    return json.loads(_defaults_text())


def inference_defaults(stage: str) -> dict[str, Any]:
    """c2fseg's default inference settings of ``stage`` (what an export writes)."""
    return copy.deepcopy(load_defaults()["inference"][check_stage(stage)])


# ---------------------------------------------------------------------------------------------
# Value rules
# ---------------------------------------------------------------------------------------------


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingsError(f"{key} must be a number, got {value!r}")
    return float(value)


def _in_range(low: float, high: float, *, low_open: bool = False, high_open: bool = False
              ) -> Callable[[Any, str, str], float]:
    def check(value: Any, key: str, stage: str) -> float:
        x = _number(value, key)
        if (x < low or (low_open and x == low)) or (x > high or (high_open and x == high)):
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise SettingsError(f"{key} must be in {interval}, got {value!r}")
        return x

    return check


def _non_negative(value: Any, key: str, stage: str) -> float:
    x = _number(value, key)
    if x < 0:
        raise SettingsError(f"{key} must be >= 0, got {value!r}")
    return x


def _boolean(value: Any, key: str, stage: str) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"{key} must be true or false, got {value!r}")
    return value


def _choice(value: Any, key: str, stage: str) -> str:
    if value not in CHOICES[key]:
        raise SettingsError(f"{key} must be one of {', '.join(map(repr, CHOICES[key]))}, got {value!r}")
    return value


def _margin(value: Any, key: str, stage: str) -> list[float]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) not in (1, 3):
        raise SettingsError(f"{key} must be one number or three (z, y, x) in mm, got {value!r}")
    floats = [_non_negative(v, key, stage) for v in values]
    return floats * 3 if len(floats) == 1 else floats


def _stage_labels(value: Any, key: str, stage: str) -> list[int]:
    valid = STAGE_LABELS[stage]
    if not isinstance(value, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise SettingsError(f"{key} must be a list of label ids, got {value!r}")
    wrong = [v for v in value if v not in valid]
    if wrong:
        raise SettingsError(f"{key}: {wrong} are not labels of the {stage} stage ({min(valid)}-{max(valid)})")
    return sorted(set(int(v) for v in value))


def _optional_int(low: int) -> Callable[[Any, str, str], int | None]:
    def check(value: Any, key: str, stage: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SettingsError(f"{key} must be null or a whole number >= {low}, got {value!r}")
        return int(value)

    return check


def _optional_positive(value: Any, key: str, stage: str) -> float | None:
    if value is None:
        return None
    x = _number(value, key)
    if x <= 0:
        raise SettingsError(f"{key} must be null or > 0, got {value!r}")
    return x


#: key -> rule returning the normalised value (or raising SettingsError).
RULES: Mapping[str, Callable[[Any, str, str], Any]] = {
    "step": _in_range(0.0, 1.0, low_open=True),
    "weighting": _choice,
    "mirror": _boolean,
    "min_prob": _in_range(0.0, 1.0, high_open=True),
    "keep_largest": _stage_labels,
    "roi_rule": _choice,
    "roi_margin_mm": _margin,
    "max_liver_gap_mm": _non_negative,
    "tumor_threshold": _in_range(0.0, 1.0),
    "tumor_combination": _choice,
    "average": _choice,
    "tile_rule": _choice,
    "align_corners": _boolean,
    "max_inplane_voxels": _optional_int(16),
    "decoder_stages": _optional_int(1),
    "delete_labels": _stage_labels,
    "max_centroid_distance_voxels": _optional_positive,
}


def _check_key(stage: str, key: str, value: Any, valid: Mapping[str, Any]) -> Any:
    if key not in valid:
        raise SettingsError(
            f"{key!r} is not an inference setting of the {stage} stage (valid: {', '.join(sorted(valid))})"
        )
    return RULES[key](value, key, stage)


def resolve_inference(stage: str, *layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Complete, checked inference settings of ``stage``: the defaults, then each layer in turn.

    A layer is a manifest's ``inference`` section or a set of overrides; every key of every
    layer must be a setting of the stage with a valid value (:class:`SettingsError` otherwise).
    Keys a layer lacks keep the value of the layers below (an older manifest loads unchanged).
    """
    resolved = inference_defaults(stage)
    for layer in layers:
        if layer is None:
            continue
        if not isinstance(layer, Mapping):
            raise SettingsError(f"inference settings must be a JSON object, got {type(layer).__name__}")
        for key, value in layer.items():
            resolved[key] = _check_key(stage, key, value, resolved)
    for key, value in resolved.items():  # the defaults themselves must pass the rules
        resolved[key] = RULES[key](value, key, stage)
    return resolved


def check_ensemble(settings: Mapping[str, Mapping[str, Any]]) -> None:
    """Tumor models combined into one mask must agree on :data:`ENSEMBLE_KEYS`.

    ``settings`` maps a name (e.g. the stage folder) to its resolved inference settings.
    """
    names = list(settings)
    for key in ENSEMBLE_KEYS:
        values = {name: settings[name].get(key) for name in names}
        if len({json.dumps(v) for v in values.values()}) > 1:
            found = ", ".join(f"{name}: {value!r}" for name, value in values.items())
            raise SettingsError(
                f"the tumor models disagree on {key} ({found}); they are combined into one tumor "
                "mask, so give them the same value (manifest.json inference section)"
            )
