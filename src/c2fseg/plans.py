"""Reading nnU-Net v2 plans and dataset.json, and building the network entry of a plans file.

Pure dict work: no torch, no nnU-Net import, no knowledge of stage folders. Training (which
writes plans), inference (which reads them from a stage folder) and the benchmark and test
networks (which build them) all use these functions.

Plans store spacing and patch size in the network's axis order (after ``transpose_forward``);
:func:`stage_settings` returns them in c2fseg's canonical (z, y, x) order.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

from c2fseg.labels import LABELS, NAME_TO_ID

LABEL_IDS = frozenset(LABELS)

#: nnU-Net v2's plain U-Net (the architecture every c2fseg stage uses).
PLAIN_CONV_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
CT_STATISTICS_KEYS = ("mean", "std", "percentile_00_5", "percentile_99_5")


class PlansError(ValueError):
    """A plans or dataset.json dict lacks what c2fseg needs; the message says what."""


def resolve_configuration(plans: Mapping, configuration: str) -> dict:
    """The configuration dict with ``inherits_from`` chains merged (child keys win)."""
    configs = plans.get("configurations", {})
    chain: list[str] = []
    name: str | None = configuration
    while name is not None:
        if name not in configs:
            raise PlansError(
                f"configuration {name!r} is not in the plans (available: {', '.join(configs)})"
            )
        if name in chain:
            raise PlansError(f"circular 'inherits_from' in plans: {' -> '.join(chain + [name])}")
        chain.append(name)
        name = configs[name].get("inherits_from")
    merged: dict = {}
    for name in reversed(chain):
        merged.update(copy.deepcopy(configs[name]))
    merged.pop("inherits_from", None)
    return merged


def _argsort(perm: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted(range(len(perm)), key=lambda i: perm[i]))


def transposes(plans: Mapping) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(transpose_forward, transpose_backward) of the plans, checked to be inverse permutations."""
    fwd = tuple(int(a) for a in plans.get("transpose_forward", (0, 1, 2)))
    bwd = tuple(int(a) for a in plans.get("transpose_backward", _argsort(fwd)))
    if sorted(fwd) != [0, 1, 2] or _argsort(fwd) != bwd:
        raise PlansError(
            f"plans transpose_forward {fwd} / transpose_backward {bwd} are not inverse 3D permutations"
        )
    return fwd, bwd  # type: ignore[return-value]


def to_canonical_order(values_in_model_order: Sequence, transpose_forward: Sequence[int]) -> tuple:
    """Plans store spacing/patch in the model's (transposed) axis order; return canonical z, y, x."""
    bwd = _argsort(tuple(transpose_forward))
    return tuple(values_in_model_order[bwd[a]] for a in range(3))


def ct_statistics(plans: Mapping, configuration: str) -> dict[str, float]:
    """Clip bounds and z-score statistics of the CT channel, from the plans (never constants)."""
    config = resolve_configuration(plans, configuration)
    schemes = config.get("normalization_schemes", [])
    if list(schemes) != ["CTNormalization"]:
        raise PlansError(
            f"configuration {configuration!r} uses normalization {schemes}; c2fseg stages take one CT "
            "channel with nnU-Net's CTNormalization (plan the stage dataset with channel name 'CT')"
        )
    props = plans.get("foreground_intensity_properties_per_channel", {}).get("0")
    if props is None:
        raise PlansError("plans lack foreground_intensity_properties_per_channel['0'] (CT statistics)")
    missing = [k for k in CT_STATISTICS_KEYS if k not in props]
    if missing:
        raise PlansError(f"plans CT statistics lack {missing}")
    return {k: float(props[k]) for k in CT_STATISTICS_KEYS}


#: dataset.json key of an explicit network channel -> FLARE label map (``c2fseg import nnunet
#: --labels``): one FLARE id per channel, 0 for a channel that is dropped (becomes background).
CHANNEL_LABELS_KEY = "c2fseg_channel_labels"


def _explicit_channel_labels(value: object, n_channels: int) -> tuple[int, ...]:
    """The checked :data:`CHANNEL_LABELS_KEY` list of a dataset.json."""
    if (not isinstance(value, list) or len(value) != n_channels
            or any(isinstance(v, bool) or not isinstance(v, int) for v in value)):
        raise PlansError(f"dataset.json {CHANNEL_LABELS_KEY} must list one FLARE label id per "
                         f"network channel ({n_channels}), got {value!r}")
    if value[0] != 0 or any(v not in LABEL_IDS for v in value):
        raise PlansError(f"dataset.json {CHANNEL_LABELS_KEY} {value}: channel 0 must be background "
                         f"(0) and every id a FLARE23 label 0-{max(LABEL_IDS)}")
    kept = [v for v in value if v != 0]
    if len(kept) != len(set(kept)):
        raise PlansError(f"dataset.json {CHANNEL_LABELS_KEY} {value} gives a FLARE label to "
                         "several channels; map each FLARE label from one channel")
    return tuple(int(v) for v in value)


def channel_labels_from_dataset(dataset_json: Mapping) -> tuple[int, ...]:
    """Network channel index -> FLARE label id, from the label names in dataset.json.

    A dataset.json with :data:`CHANNEL_LABELS_KEY` (an imported model whose labels are not
    FLARE's) gives the map explicitly; its channels mapped to 0 are dropped: a voxel whose
    argmax is such a channel becomes background.
    """
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise PlansError("dataset.json has no 'labels' mapping")
    if CHANNEL_LABELS_KEY in dataset_json:
        return _explicit_channel_labels(dataset_json[CHANNEL_LABELS_KEY], len(labels))
    by_channel: dict[int, int] = {}
    for name, channel in labels.items():
        if not isinstance(channel, int):
            raise PlansError(
                f"dataset.json label {name!r} is a region ({channel}); c2fseg needs one channel per label"
            )
        if name not in NAME_TO_ID:
            raise PlansError(
                f"dataset.json label name {name!r} is not a FLARE23 label name (expected one of "
                f"{', '.join(NAME_TO_ID)})"
            )
        by_channel[channel] = NAME_TO_ID[name]
    if sorted(by_channel) != list(range(len(by_channel))) or by_channel[0] != 0:
        raise PlansError(f"dataset.json labels must use channels 0..n-1 with 0 = background, got {labels}")
    return tuple(by_channel[c] for c in range(len(by_channel)))


def stage_settings(plans: Mapping, dataset_json: Mapping, configuration: str) -> dict:
    """What inference needs from plans + dataset.json, with spacing/patch in canonical z, y, x."""
    config = resolve_configuration(plans, configuration)
    fwd, _ = transposes(plans)
    for key in ("spacing", "patch_size", "architecture"):
        if key not in config:
            raise PlansError(f"configuration {configuration!r} has no {key!r} in the plans")
    if len(config["spacing"]) != 3 or len(config["patch_size"]) != 3:
        raise PlansError(f"configuration {configuration!r} is not 3D (spacing {config['spacing']})")
    if len(dataset_json.get("channel_names", {"0": "CT"})) != 1:
        raise PlansError("c2fseg stages take exactly one input channel (CT); dataset.json lists more")
    return {
        "spacing": [float(v) for v in to_canonical_order(config["spacing"], fwd)],
        "patch_size": [int(v) for v in to_canonical_order(config["patch_size"], fwd)],
        "transpose_forward": list(fwd),
        "normalization": {"scheme": "CTNormalization", **ct_statistics(plans, configuration)},
        "channel_labels": list(channel_labels_from_dataset(dataset_json)),
    }


# ---------------------------------------------------------------------------------------------
# Building plans (benchmark and test networks)
# ---------------------------------------------------------------------------------------------


def features_per_stage(base: int, n_stages: int, max_features: int) -> list[int]:
    """nnU-Net's width rule: ``base`` features, doubling per stage, capped at ``max_features``."""
    return [min(int(base) * 2**i, int(max_features)) for i in range(int(n_stages))]


def plain_unet_architecture(
    features: Sequence[int],
    strides: Sequence[Sequence[int]],
    *,
    kernels: Sequence[Sequence[int]] | None = None,
    n_conv: int = 2,
    n_conv_decoder: int | None = None,
) -> dict:
    """The ``architecture`` entry of a plans configuration for a 3-D PlainConvUNet.

    One stage per entry of ``features``/``strides``; ``kernels`` default to 3x3x3; ``n_conv``
    convolutions per encoder stage and ``n_conv_decoder`` (default ``n_conv``) per decoder stage;
    instance norm (affine), leaky ReLU, conv bias, no dropout: nnU-Net's default settings.
    """
    n = len(features)
    if len(strides) != n or (kernels is not None and len(kernels) != n):
        raise PlansError(f"{n} feature counts but {len(strides)} strides / kernels given")
    kernels = kernels if kernels is not None else [[3, 3, 3]] * n
    n_conv_decoder = n_conv if n_conv_decoder is None else n_conv_decoder
    return {
        "network_class_name": PLAIN_CONV_UNET,
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": [int(f) for f in features],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[int(k) for k in ks] for ks in kernels],
            "strides": [[int(s) for s in st] for st in strides],
            "n_conv_per_stage": [int(n_conv)] * n,
            "n_conv_per_stage_decoder": [int(n_conv_decoder)] * (n - 1),
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def ct_intensity_properties(stats: Mapping[str, float]) -> dict[str, float]:
    """``foreground_intensity_properties_per_channel['0']`` from CT statistics (mean, std, clip)."""
    out = {k: float(stats[k]) for k in CT_STATISTICS_KEYS}
    out.update({"median": out["mean"], "min": -1024.0, "max": 3071.0})
    return out


def network_plans(
    *,
    spacing: Sequence[float],
    patch_size: Sequence[int],
    architecture: Mapping,
    ct_stats: Mapping[str, float],
    configuration: str = "3d_fullres",
    dataset_name: str = "Dataset999_c2fseg",
    transpose_forward: Sequence[int] = (0, 1, 2),
    median_shape: Sequence[int] | None = None,
    batch_size: int = 2,
) -> dict:
    """nnU-Net v2 plans with one configuration (values in model axis order, like nnU-Net's).

    Shaped like the output of nnU-Net's default planner (CT normalisation, its default
    resampling functions), so nnU-Net's own ``PlansManager`` and predictor accept it.
    """
    fwd = [int(a) for a in transpose_forward]
    median = [int(m) for m in (median_shape or [max(int(p), 128) for p in patch_size])]
    config = {
        "data_identifier": f"nnUNetPlans_{configuration}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": int(batch_size),
        "patch_size": [int(p) for p in patch_size],
        "median_image_size_in_voxels": median,
        "spacing": [float(s) for s in spacing],
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                               "force_separate_z": None},
        "architecture": copy.deepcopy(dict(architecture)),
        "batch_dice": False,
    }
    return {
        "dataset_name": dataset_name,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [float(s) for s in spacing],
        "original_median_shape_after_transp": median,
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": fwd,
        "transpose_backward": list(_argsort(fwd)),
        "configurations": {configuration: config},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": ct_intensity_properties(ct_stats)},
    }
