"""nnU-Net v2 plans and dataset.json for a converted model, so it runs as an ordinary stage.

The plans carry what the stage loader reads (spacing, patch size, CT statistics, axis order and
the network's ``architecture`` entry) plus the fields nnU-Net's own ``PlansManager`` expects, so
the same folder also works with nnU-Net's tools. Values are in the plans' (model) axis order,
as in every nnU-Net plans file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from c2fseg.convert.architecture import UNetArchitecture
from c2fseg.plans import network_plans

CT_KEYS = ("mean", "std", "percentile_00_5", "percentile_99_5")


def make_plans(
    arch: UNetArchitecture,
    *,
    spacing: Sequence[float],
    patch_size: Sequence[int],
    ct_statistics: Mapping[str, float],
    transpose_forward: Sequence[int] = (0, 1, 2),
    configuration: str = "3d_fullres",
    dataset_name: str = "Dataset000_Imported",
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
    plans = network_plans(spacing=spacing, patch_size=patch_size, architecture=arch.plans_entry(),
                          ct_stats=ct_statistics, configuration=configuration,
                          dataset_name=dataset_name, transpose_forward=fwd,
                          median_shape=median_shape or patch_size, batch_size=batch_size)
    plans["experiment_planner_used"] = "c2fseg import"
    given = {k: float(v) for k, v in ct_statistics.items()}  # keep a model's own median/min/max
    plans["foreground_intensity_properties_per_channel"]["0"].update(given)
    return plans


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
