"""Our nnU-Net trainer: nnU-Net's training loop with the schedule read from the plans.

``C2fsegTrainer`` is constructed directly (never looked up by name: nnU-Net's lookup imports
every trainer module, which breaks on some installs). It keeps nnU-Net's constructor signature
(nnU-Net records the constructor arguments in every checkpoint) and takes its settings from the
``c2fseg.training`` entry of its plans configuration (see ``c2fseg.train.plans``):

* epochs, iterations per epoch, validation iterations, checkpoint interval;
* optimizer: nnU-Net's SGD (Nesterov, momentum 0.99) or AdamW, both with nnU-Net's poly
  learning-rate schedule;
* checkpoints written atomically (a killed run resumes from its last complete checkpoint);
* bf16 autocast of the network forward on CPU (nnU-Net autocasts only on CUDA; bf16 roughly
  halves the CPU step time).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class C2fsegTrainer(nnUNetTrainer):
    """nnU-Net trainer configured by the ``c2fseg`` entry of its plans configuration."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        settings = self.configuration_manager.configuration.get("c2fseg", {}).get("training", {})
        self.c2fseg_settings = dict(settings)
        self.num_epochs = int(settings.get("epochs", self.num_epochs))
        self.num_iterations_per_epoch = int(settings.get("iters_per_epoch", self.num_iterations_per_epoch))
        self.num_val_iterations_per_epoch = int(
            settings.get("val_iters_per_epoch", self.num_val_iterations_per_epoch))
        self.initial_lr = float(settings.get("lr", self.initial_lr))
        self.weight_decay = float(settings.get("weight_decay", self.weight_decay))
        self.save_every = max(1, int(settings.get("save_every", self.save_every)))
        self.optimizer_name = str(settings.get("optimizer", "sgd"))
        self.cpu_bf16 = bool(settings.get("cpu_bf16", False))

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        """nnU-Net's augmentation geometry, with the mirroring axes from the plans.

        Default: no mirroring. Left/right organs (kidneys, adrenals) are different labels, all
        images are in canonical orientation, and c2fseg predicts without mirroring.
        """
        rotation, dummy_2d, initial_patch, mirror = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        axes = self.c2fseg_settings.get("mirror_axes")
        if axes is not None:
            mirror = tuple(int(a) for a in axes) or None
            self.inference_allowed_mirroring_axes = mirror
        if not self._augment():
            initial_patch = list(self.configuration_manager.patch_size)  # no room for rotation
        return rotation, dummy_2d, initial_patch, mirror

    def _augment(self) -> bool:
        return self.c2fseg_settings.get("augmentation", "default") != "none"

    def get_training_transforms(self, patch_size, rotation_for_DA, deep_supervision_scales,
                                mirror_axes, do_dummy_2d_data_aug, **kwargs):
        """nnU-Net's augmentation, or (``augmentation: none``) only the target conversions.

        Very short schedules (the tiny CPU configuration) learn faster without augmentation, and
        skip its CPU cost; full trainings keep nnU-Net's pipeline.
        """
        if self._augment():
            return nnUNetTrainer.get_training_transforms(
                patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                do_dummy_2d_data_aug, **kwargs)
        kwargs.pop("use_mask_for_norm", None)
        return nnUNetTrainer.get_validation_transforms(deep_supervision_scales, **kwargs)

    def configure_optimizers(self):
        """SGD as in nnU-Net, or AdamW (converges much faster on short schedules); poly decay."""
        if self.optimizer_name == "adamw":
            optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr,
                                          weight_decay=self.weight_decay)
            return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)
        return super().configure_optimizers()

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written to a temporary file and renamed into place.

        A run killed while saving then leaves the previous checkpoint intact, so it can resume.
        """
        path = Path(filename)
        tmp = path.with_name(f".{path.name}.part")
        super().save_checkpoint(str(tmp))
        if tmp.exists():
            os.replace(tmp, path)

    def initialize(self):
        """nnU-Net's initialisation, then bf16 autocast around the network forward on CPU."""
        super().initialize()
        if self.cpu_bf16 and self.device.type == "cpu":
            _autocast_forward(self.network)


def _upcast(output):
    if isinstance(output, (list, tuple)):
        return type(output)(_upcast(o) for o in output)
    return output.float() if torch.is_tensor(output) and output.is_floating_point() else output


def _autocast_forward(network: torch.nn.Module) -> None:
    """Run ``network``'s forward pass under CPU bf16 autocast and hand back float32 outputs.

    Done with forward hooks rather than a wrapper module so that state-dict keys, deep
    supervision switching and checkpoints stay exactly nnU-Net's. Losses, metrics and the
    backward pass then run outside autocast, in float32.
    """

    def enter(module, args):
        module._c2fseg_autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        module._c2fseg_autocast.__enter__()

    def leave(module, args, output):
        module._c2fseg_autocast.__exit__(None, None, None)
        return _upcast(output)

    network.register_forward_pre_hook(enter)
    network.register_forward_hook(leave)
