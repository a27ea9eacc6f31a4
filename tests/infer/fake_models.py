"""Tiny stage models for tests: nnU-Net plans/dataset.json dicts, StageModels and weights folders.

Import from tests in ``tests/infer/`` as ``from fake_models import ...``; from a test directly in
``tests/`` as ``from infer.fake_models import ...`` (pytest puts the test's own folder on sys.path).

- :func:`tiny_plans` / :func:`tiny_dataset_json`: a 3-stage PlainConvUNet (4-8-16 features, patch
  16x32x32) in nnU-Net 2.6 plans format, CT statistics included.
- :func:`tiny_stage_model`: a StageModel with seeded random weights (CPU, fp32 by default).
- :func:`write_fake_weights`: a complete ``weights/<stage>/`` folder (plans.json, dataset.json,
  nnU-Net-style checkpoint_final.pth, manifest.json) that ``StageModel.load`` accepts.
- :func:`band_stage_model`: a StageModel whose "network" labels each voxel by the nearest of a few
  HU values, so tests know the expected segmentation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from c2fseg.data.stage_dataset import stage_dataset_json
from c2fseg.infer.normalize import CTNormalizer
from c2fseg.infer.stage_loader import StageSpec
from c2fseg.infer.stage_model import StageModel
from c2fseg.labels import STAGE_LABELS
from c2fseg.plans import network_plans, plain_unet_architecture
from c2fseg.weights import CHECKPOINT_NAME, write_manifest

#: CT statistics of the tiny plans (wide clip so tests can use the whole HU range).
CT_STATS = {"mean": 0.0, "std": 200.0, "percentile_00_5": -1000.0, "percentile_99_5": 1000.0}


def tiny_plans(
    *,
    spacing: Sequence[float] = (2.0, 1.5, 1.5),
    patch_size: Sequence[int] = (16, 32, 32),
    features: Sequence[int] = (4, 8, 16),
    transpose_forward: Sequence[int] = (0, 1, 2),
    configuration: str = "3d_tiny",
) -> dict:
    """nnU-Net v2 plans with ``configuration`` inheriting from ``3d_fullres`` (values in model order)."""
    n = len(features)
    arch = plain_unet_architecture(features, [[1, 1, 1]] + [[2, 2, 2]] * (n - 1), n_conv=1)
    plans = network_plans(spacing=(1.0, 1.0, 1.0), patch_size=(64, 64, 64), architecture=arch,
                          ct_stats=CT_STATS, dataset_name="Dataset901_Tiny",
                          transpose_forward=transpose_forward, median_shape=(64, 128, 128))
    plans["original_median_spacing_after_transp"] = list(spacing)
    plans["configurations"][configuration] = {
        "inherits_from": "3d_fullres",
        "data_identifier": f"nnUNetPlans_{configuration}",
        "patch_size": list(patch_size),
        "spacing": list(spacing),
    }
    return plans


def tiny_dataset_json(stage: str = "coarse") -> dict:
    """dataset.json of a stage, as training writes it (4 training cases)."""
    return stage_dataset_json(stage, 4)


def tiny_stage_model(
    stage: str = "coarse",
    *,
    seed: int = 0,
    device: str = "cpu",
    precision: str = "fp32",
    step: float = 0.5,
    plans: dict | None = None,
    configuration: str = "3d_tiny",
    **options,
) -> StageModel:
    """A StageModel with seeded random weights built from :func:`tiny_plans`."""
    torch.manual_seed(seed)
    return StageModel.from_plans(
        plans or tiny_plans(configuration=configuration),
        tiny_dataset_json(stage),
        configuration,
        stage,
        device=device,
        step=step,
        precision=precision,
        **options,
    )


def write_fake_weights(
    weights_dir: str | Path,
    stage: str = "coarse",
    *,
    seed: int = 0,
    plans: dict | None = None,
    configuration: str = "3d_tiny",
    inference: dict | None = None,
) -> Path:
    """Write a complete ``weights_dir/<stage>/`` folder with random weights; returns that folder."""
    folder = Path(weights_dir) / stage
    folder.mkdir(parents=True, exist_ok=True)
    plans = plans or tiny_plans(configuration=configuration)
    dataset = tiny_dataset_json(stage)
    model = tiny_stage_model(stage, seed=seed, plans=plans, configuration=configuration)
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))
    checkpoint = {  # what nnUNetTrainer.save_checkpoint stores (optimizer etc. left minimal)
        "network_weights": model.network.state_dict(),
        "optimizer_state": {},
        "grad_scaler_state": None,
        "logging": {"epoch_end_timestamps": [1.0]},
        "_best_ema": 0.5,
        "current_epoch": 1,
        "init_args": {"plans": plans, "configuration": configuration, "fold": 0, "dataset_json": dataset},
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    torch.save(checkpoint, folder / CHECKPOINT_NAME)
    write_manifest(
        folder, stage=stage, configuration=configuration, fold=0, plans=plans, dataset_json=dataset,
        checkpoint_path=folder / CHECKPOINT_NAME, training_cases=["case_a", "case_b"],
        trainer="nnUNetTrainer", inference=inference,
    )
    return folder


class BandNet(torch.nn.Module):
    """Pointwise "network": channel k's logit is -sharpness * (x - centre_k)^2 (normalised x)."""

    def __init__(self, centres: Sequence[float], sharpness: float = 4.0) -> None:
        super().__init__()
        self.register_buffer("centres", torch.tensor(list(centres), dtype=torch.float32))
        self.sharpness = sharpness

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.centres.view(1, -1, 1, 1, 1).to(x.dtype)
        return -self.sharpness * (x - c) ** 2


def band_stage_model(
    stage: str = "coarse",
    hu_by_label: Mapping[int, float] | None = None,
    *,
    background_hu: float = -1000.0,
    spacing: Sequence[float] = (2.0, 1.5, 1.5),
    patch_size: Sequence[int] = (16, 32, 32),
    device: str = "cpu",
    precision: str = "fp32",
    step: float = 0.5,
    tile_batch: int | None = None,
    resample_mode: str = "boundary",
    **inference,
) -> StageModel:
    """StageModel labelling each voxel by the nearest HU in ``hu_by_label`` (else background).

    Defaults: label k of the stage sits at ``100 * k + 50`` HU, background at -1000 HU.
    Labels not in ``hu_by_label`` get a centre far outside the clip range and never win (50
    normalised units, finite in fp16). ``inference``: more inference settings (weighting, ...).
    """
    channel_labels = (0, *STAGE_LABELS[stage])
    hu = dict(hu_by_label) if hu_by_label is not None else {lab: 100.0 * lab + 50.0 for lab in channel_labels[1:]}
    norm = CTNormalizer.from_stats(CT_STATS)
    centres = [norm.normalised(background_hu)]
    centres += [norm.normalised(hu[lab]) if lab in hu else 50.0 for lab in channel_labels[1:]]
    spec = StageSpec(stage, tuple(spacing), tuple(patch_size), norm, channel_labels)
    return StageModel(BandNet(centres), spec, inference={"step": step, **inference}, device=device,
                      precision=precision, tile_batch=tile_batch, resample_mode=resample_mode)
