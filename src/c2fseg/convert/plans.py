"""nnU-Net v2 plans and dataset.json for a converted model, so it runs as an ordinary stage.

The plans carry what the stage loader reads (spacing, patch size, CT statistics, axis order and
the network's ``architecture`` entry) plus the fields nnU-Net's own ``PlansManager`` expects, so
the same folder also works with nnU-Net's tools. Values are in the plans' (model) axis order,
as in every nnU-Net plans file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from c2fseg.convert.architecture import UNetArchitecture

CT_KEYS = ("mean", "std", "percentile_00_5", "percentile_99_5")


def _resampling() -> dict:
    """nnU-Net's default resampling entries (c2fseg resamples itself; nnU-Net tools need them)."""
    def kwargs(is_seg: bool, order: int) -> dict:
        return {"is_seg": is_seg, "order": order, "order_z": 0, "force_separate_z": None}

    return {
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": kwargs(False, 3),
        "resampling_fn_seg_kwargs": kwargs(True, 1),
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": kwargs(False, 1),
    }


def make_plans(
    arch: UNetArchitecture,
    *,
    spacing: Sequence[float],
    patch_size: Sequence[int],
    ct_statistics: Mapping[str, float],
    transpose_forward: Sequence[int] = (0, 1, 2),
    configuration: str = "3d_fullres",
    dataset_name: str = "Dataset000_Imported",
    plans_name: str = "nnUNetPlans",
    median_shape: Sequence[int] | None = None,
    batch_size: int = 2,
) -> dict:
    """nnU-Net v2 plans with one 3-D configuration running ``arch`` on a CT channel.

    ``ct_statistics`` needs ``mean``, ``std``, ``percentile_00_5`` and ``percentile_99_5``
    (``median``, ``min``, ``max`` are kept when given).
    """
    missing = [k for k in CT_KEYS if k not in ct_statistics]
    if missing:
        raise ValueError(f"CT statistics lack {missing}")
    if len(spacing) != 3 or len(patch_size) != 3:
        raise ValueError(f"spacing {list(spacing)} and patch size {list(patch_size)} must be 3-D")
    fwd = [int(a) for a in transpose_forward]
    if sorted(fwd) != [0, 1, 2]:
        raise ValueError(f"transpose_forward {fwd} is not a permutation of 0, 1, 2")
    bwd = sorted(range(3), key=fwd.__getitem__)
    shape = [int(v) for v in (median_shape or patch_size)]
    config = {
        "data_identifier": f"{plans_name}_{configuration}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": int(batch_size),
        "patch_size": [int(v) for v in patch_size],
        "median_image_size_in_voxels": shape,
        "spacing": [float(v) for v in spacing],
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        **_resampling(),
        "architecture": arch.plans_entry(),
        "batch_dice": False,
    }
    return {
        "dataset_name": dataset_name,
        "plans_name": plans_name,
        "original_median_spacing_after_transp": [float(v) for v in spacing],
        "original_median_shape_after_transp": shape,
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": fwd,
        "transpose_backward": bwd,
        "configurations": {configuration: config},
        "experiment_planner_used": "c2fseg import",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {k: float(v) for k, v in ct_statistics.items()}
        },
    }


def make_dataset_json(
    labels: Mapping[str, int] | Sequence[int],
    *,
    num_training: int = 0,
    file_ending: str = ".nii.gz",
) -> dict:
    """A one-channel CT dataset.json; ``labels`` as name -> value, or values (named generically)."""
    if not isinstance(labels, Mapping):
        labels = {("background" if v == 0 else f"label_{v}"): int(v) for v in labels}
    return {
        "channel_names": {"0": "CT"},
        "labels": {str(k): int(v) for k, v in labels.items()},
        "numTraining": int(num_training),
        "file_ending": file_ending,
    }
