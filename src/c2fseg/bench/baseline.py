"""nnU-Net v2's own default predictor on the same ROI crop with the same organ network weights.

``nnUNetPredictor`` (tile step 0.5, Gaussian tile weights, mirroring on all three axes, or off;
everything on the device when it is CUDA) is initialised by hand with the organ stage's network,
plans and dataset.json, and run with ``predict_single_npy_array``: its own preprocessing
(normalisation, third-order resampling), sliding window and export resampling. So the comparison
is model against model on the same input; agreement is measured on the output labels.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from c2fseg.labels import LABELS

BASELINES = ("none", "nomirror", "all")


def baseline_variants(choice: str) -> list[bool]:
    """Mirroring settings to run for ``--baseline`` none|nomirror|all (True = mirroring on)."""
    if choice not in BASELINES:
        raise ValueError(f"--baseline must be one of {', '.join(BASELINES)}, got {choice!r}")
    return {"none": [], "nomirror": [False], "all": [False, True]}[choice]


def make_predictor(network: torch.nn.Module, plans: dict, dataset_json: dict, configuration: str,
                   device: torch.device, mirror: bool):
    """An ``nnUNetPredictor`` with nnU-Net's defaults, holding ``network``'s current weights."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=mirror,
        perform_everything_on_device=device.type == "cuda",
        device=device,
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    manager = PlansManager(plans)
    state = {k: v.detach().clone() for k, v in network.state_dict().items()}
    predictor.manual_initialization(
        network, manager, manager.get_configuration(configuration), [state], dataset_json,
        "nnUNetTrainer", (0, 1, 2),
    )
    return predictor


def run_nnunet(predictor, crop: np.ndarray, spacing_zyx, channel_labels) -> tuple[np.ndarray, float]:
    """FLARE label map of ``crop`` (canonical HU) from the predictor, and its wall time (s)."""
    image = np.ascontiguousarray(crop, dtype=np.float32)[None]
    sync = predictor.device.type == "cuda"
    if sync:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    seg = predictor.predict_single_npy_array(image, {"spacing": [float(s) for s in spacing_zyx]})
    if sync:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    lut = np.asarray(channel_labels, dtype=np.uint8)
    return lut[np.asarray(seg, dtype=np.int64)], seconds


def agreement(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """Fraction of equal voxels and per-label Dice between two label maps of the same shape."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    if ours.shape != theirs.shape:
        raise ValueError(f"label maps differ in shape: {ours.shape} vs {theirs.shape}")
    dice = {}
    for lab in np.union1d(np.unique(ours), np.unique(theirs)):
        if lab == 0:
            continue
        a, b = ours == lab, theirs == lab
        denom = int(a.sum()) + int(b.sum())
        dice[LABELS.get(int(lab), str(int(lab)))] = round(2.0 * int((a & b).sum()) / denom, 4)
    return {
        "equal_fraction": round(float((ours == theirs).mean()), 5),
        "dice": dice,
        "mean_dice": round(float(np.mean(list(dice.values()))), 4) if dice else None,
    }
