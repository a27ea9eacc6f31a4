"""What an import produces: plans, dataset.json and PlainConvUNet weights, ready to be written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class ImportedModel:
    """A converted model: an nnU-Net v2 plans/dataset.json pair and a matching state dict.

    ``state_dict`` loads with ``strict=True`` into the network that
    ``c2fseg.infer.stage_loader.build_network(plans, configuration, num_classes)`` builds (with
    or without deep supervision). ``labels`` is the model's own label value for each network
    channel (``labels[0] == 0``: background). nnU-Net feeds a network the image arrays as stored
    on disk (``voxel_order == "as-stored"``), which the stage's manifest must record.
    """

    plans: dict
    dataset_json: dict
    configuration: str
    state_dict: dict[str, torch.Tensor]
    labels: tuple[int, ...]
    source_format: str  # "nnU-Net v1" or "nnU-Net v2"
    sources: tuple[Path, ...]  # every file read
    trainer: str | None = None
    fold: str | None = None
    voxel_order: str = "as-stored"
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def checkpoint(self) -> dict:
        """The dict to ``torch.save`` as the stage's ``checkpoint_final.pth`` (v2 layout)."""
        return {
            "network_weights": self.state_dict,
            "init_args": {"plans": self.plans, "configuration": self.configuration,
                          "fold": self.fold, "dataset_json": self.dataset_json},
            "trainer_name": self.trainer or "nnUNetTrainer",
            "imported_from": self.source_format,
            "inference_allowed_mirroring_axes": (0, 1, 2),
        }
