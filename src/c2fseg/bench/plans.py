"""nnU-Net v2 plans for benchmark networks of production size (or thinner), with random weights.

Timing does not need trained weights: a network of the same architecture costs the same with
random ones. ``production_plans`` writes what nnU-Net's default planner would give for
FLARE-like data with the per-stage settings c2fseg trains with by default: PlainConvUNet,
``n_stages`` stages, ``width`` base features doubling up to ``max_features``, 3x3x3 kernels,
nnU-Net's own pooling rule (first stride 1, then 2; z stops pooling when the patch is short), two
convs per stage, instance norm, leaky ReLU. Every number comes from ``stage_defaults.json``
(:mod:`c2fseg.settings`): spacing, patch and network size from ``configs.default``, the step from
``inference``, the published CT statistics from ``ct_statistics``, the thin variant from
``bench.thin``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

from c2fseg.labels import STAGES, check_stage
from c2fseg.plans import features_per_stage, network_plans, plain_unet_architecture
from c2fseg.settings import inference_defaults, load_defaults

CONFIGURATION = "3d_fullres"


def _stage_settings(stage: str) -> dict:
    """Spacing, patch, step and CT statistics of a production benchmark stage."""
    defaults = load_defaults()
    config = defaults["configs"]["default"]
    merged = {**config["base"], **config[stage]}
    return {"spacing": merged["spacing"], "patch": merged["patch"], "n_stages": merged["n_stages"],
            "width": merged["features"], "max_features": merged["max_features"],
            "step": inference_defaults(stage)["step"], "ct": defaults["ct_statistics"][stage]}


#: Per-stage benchmark settings (a view of stage_defaults.json): spacing (z, y, x) mm, patch,
#: network depth and width, step and CT statistics.
STAGE_SETTINGS: Mapping[str, dict] = {stage: _stage_settings(stage) for stage in STAGES}
#: The thin CPU variant: base width and per-stage spacing/patch.
THIN_SETTINGS: Mapping = load_defaults()["bench"]["thin"]


def stage_dataset_json(stage: str) -> dict:
    """dataset.json of a stage, exactly as training writes it (no training cases)."""
    from c2fseg.data.stage_dataset import stage_dataset_json as training_dataset_json

    return training_dataset_json(check_stage(stage), 0)


def production_plans(
    stage: str,
    width: int | None = None,
    *,
    spacing: Sequence[float] | None = None,
    patch: Sequence[int] | None = None,
    n_stages: int | None = None,
) -> dict:
    """nnU-Net v2 plans (configuration ``3d_fullres``) of a production-size stage network.

    ``width`` (base features), ``spacing``/``patch`` (canonical z, y, x; the plans use no
    transpose) and ``n_stages`` override the stage's defaults. Topology follows nnU-Net's
    planner rule for that spacing and patch.
    """
    from c2fseg.train.plans import network_topology

    settings = STAGE_SETTINGS[check_stage(stage)]
    spacing = [float(s) for s in (spacing or settings["spacing"])]
    depth = int(n_stages or settings["n_stages"])
    strides, kernels, patch_fit = network_topology(spacing, list(patch or settings["patch"]), depth)
    features = features_per_stage(int(width or settings["width"]), len(strides), settings["max_features"])
    architecture = plain_unet_architecture(features, strides, kernels=kernels)
    return network_plans(spacing=spacing, patch_size=patch_fit, architecture=architecture,
                         ct_stats=settings["ct"], configuration=CONFIGURATION,
                         dataset_name=f"Dataset990_c2fsegBench{stage.capitalize()}")


def thin_plans(stage: str) -> dict:
    """Plans of the thin CPU variant (``bench.thin`` of stage_defaults.json)."""
    over = THIN_SETTINGS[check_stage(stage)]
    return production_plans(stage, THIN_SETTINGS["width"], spacing=over["spacing"], patch=over["patch"])


def bench_plans(stage: str, kind: str) -> dict:
    """Plans for ``kind`` 'production' or 'thin'."""
    if kind == "production":
        return production_plans(stage)
    if kind == "thin":
        return thin_plans(stage)
    raise ValueError(f"unknown model kind {kind!r}; use production, thin or a weights folder")


def with_patch(plans: dict, patch: Sequence[int]) -> dict:
    """A copy of ``plans`` with another patch size (tests: tiny patches on tiny volumes)."""
    out = copy.deepcopy(plans)
    out["configurations"][CONFIGURATION]["patch_size"] = [int(p) for p in patch]
    return out
