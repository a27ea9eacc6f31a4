"""Our nnU-Net trainer: nnU-Net's training loop with the schedule read from the plans.

``C2fsegTrainer`` is constructed directly (never looked up by name: nnU-Net's lookup imports
every trainer module, which breaks on some installs). It keeps nnU-Net's constructor signature
(nnU-Net records the constructor arguments in every checkpoint) and takes its settings from the
``c2fseg.training`` entry of its plans configuration (see ``c2fseg.train.plans``):

* epochs, iterations per epoch, validation iterations, checkpoint interval;
* optimizer: nnU-Net's SGD (Nesterov, momentum 0.99) or AdamW, both with nnU-Net's poly
  learning-rate schedule;
* foreground sampling: ``oversample_foreground`` (share of each batch whose patch is centred on a
  labelled voxel; nnU-Net's default 0.33) and ``class_sampling`` (relative weight of a label when
  the centre class is chosen; nnU-Net chooses uniformly among the labels present, so a tumor is
  picked as rarely as the liver): see :class:`ClassWeightedLoader`;
* ``ce_class_weights``: {label: weight} of the cross-entropy half of nnU-Net's Dice + CE loss
  (others 1): a small class such as the tumor gets a stronger signal before it first appears;
* ``channels_last``: the network in channels-last memory layout on CPU (measured 1.2-1.5x faster
  training steps for the tiny networks on a 2-core AVX2 CPU);
* warm start (``init_from``, see :func:`init_from_checkpoint`): every weight whose name and
  shape match is copied from an exported stage before the first epoch, and a head with an extra
  label (the tumor stage from the coarse one) gets the source's outputs for the shared labels;
* ``plot_every``: nnU-Net redraws its progress.png every epoch, which took about 18 % of a tiny
  CPU training; N draws it every N epochs and at the last, 0 only at the last;
* checkpoints written atomically (a killed run resumes from its last complete checkpoint);
* bf16 autocast of the network forward on CPU (nnU-Net autocasts only on CUDA). ``cpu_bf16``
  "auto" (the default) uses it only on CPUs with native bf16 (AVX512-BF16/AMX), where it roughly
  halves the step time; on other CPUs (AVX2 only) bf16 convolutions are emulated and were
  measured 30x slower than fp32, so training runs in fp32 there. ``true`` forces it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
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
        self.cpu_bf16 = use_cpu_bf16(settings.get("cpu_bf16", "auto"))
        if settings.get("oversample_foreground") is not None:
            self.oversample_foreground_percent = float(settings["oversample_foreground"])
        self.class_sampling = class_weights(settings.get("class_sampling"))
        self._throttle_progress_plot(settings.get("plot_every", 1))

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

    def _throttle_progress_plot(self, every) -> None:
        """Let nnU-Net's logger draw progress.png only every ``every`` epochs and at the last."""
        every = 1 if every is None else int(every)
        if every == 1:
            return
        draw = self.logger.plot_progress_png

        def maybe_draw(output_folder):
            epoch = self.current_epoch
            if epoch >= self.num_epochs - 1 or (every > 0 and (epoch + 1) % every == 0):
                draw(output_folder)

        self.logger.plot_progress_png = maybe_draw

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

    def _build_loss(self):
        """nnU-Net's Dice + CE loss; ``ce_class_weights`` weighs the cross-entropy per label."""
        loss = super()._build_loss()
        weights = class_weights(self.c2fseg_settings.get("ce_class_weights"), "ce_class_weights")
        if weights:
            weight_cross_entropy(loss, weights, len(self.label_manager.all_labels), self.device)
        return loss

    def get_dataloaders(self):
        """nnU-Net's loaders; with ``class_sampling`` their patch sampler weighs the centre class."""
        train, val = super().get_dataloaders()
        if self.class_sampling:
            for augmenter in (train, val):
                use_class_weights(augmenter, self.class_sampling)
        return train, val

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
        if self.device.type == "cpu" and self.c2fseg_settings.get("channels_last"):
            self.network.to(memory_format=torch.channels_last_3d)  # parameters keep their identity
        if self.cpu_bf16 and self.device.type == "cpu":
            _autocast_forward(self.network)


def use_cpu_bf16(setting) -> bool:
    """Whether a CPU training runs its forward under bf16 autocast.

    ``True``/``False`` force it on or off; ``"auto"`` (or None) follows the inference policy:
    only where the CPU has native bf16 (:func:`c2fseg.infer.precision.cpu_has_fast_bf16`).
    """
    if setting is None or setting == "auto":
        from c2fseg.infer.precision import cpu_has_fast_bf16

        return cpu_has_fast_bf16()
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"cpu_bf16 must be true, false or \"auto\", got {setting!r}")


def weight_cross_entropy(loss: torch.nn.Module, weights: dict[int, float], n_labels: int,
                         device: torch.device) -> torch.Tensor:
    """Give the cross-entropy term of nnU-Net's (deep-supervised) Dice + CE ``loss`` per-label
    weights (``weights``, others 1); returns the weight vector."""
    inner = getattr(loss, "loss", loss)  # inside nnU-Net's deep-supervision wrapper
    if not hasattr(inner, "ce"):
        raise TypeError(f"ce_class_weights: {type(inner).__name__} has no cross-entropy term")
    if max(weights) >= n_labels:
        raise ValueError(f"ce_class_weights: label {max(weights)} is not one of the {n_labels} labels")
    w = torch.ones(n_labels, dtype=torch.float32)
    for label, value in weights.items():
        w[label] = value
    inner.ce.weight = w.to(device)
    return inner.ce.weight


def init_from_checkpoint(network: torch.nn.Module, checkpoint: str | os.PathLike) -> dict:
    """Copy the weights of an exported stage's checkpoint into ``network`` (a warm start).

    Every encoder and decoder weight must exist with the same shape (same architecture), or
    ValueError names the first mismatch. The segmentation heads (``seg_layers``) are copied when
    their shapes match (the organ stage from the coarse one: the same 14 labels). A head with
    more outputs than the source's (the tumor stage's 15th label) gets the source's outputs in
    its first channels, because a c2fseg stage's output channel is its label id in every stage
    (0 background, 1-13 the organs, 14 the tumor); only the extra channels keep their fresh
    initialisation. Without this the tumor stage first re-learnt all 13 organs from random heads.
    Returns what was copied (``extended``: heads copied in part).
    """
    source = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
    target = network.state_dict()
    copied, fresh, extended = [], [], []
    for key, value in target.items():
        incoming = source.get(key)
        fits = incoming is not None and tuple(incoming.shape) == tuple(value.shape)
        if ".seg_layers." in key and not fits:
            if _head_prefix_fits(incoming, value):
                value = value.clone()
                value[: incoming.shape[0]] = incoming.to(value.dtype)
                target[key] = value
                extended.append(key)
            else:
                fresh.append(key)
            continue
        if not fits:
            got = "missing" if incoming is None else f"shape {tuple(incoming.shape)}"
            raise ValueError(f"cannot start from {checkpoint}: its {key} is {got}, this network "
                             f"needs {tuple(value.shape)} (init_from needs the same network)")
        target[key] = incoming.to(value.dtype)
        copied.append(key)
    network.load_state_dict(target)
    return {"checkpoint": str(checkpoint), "copied": len(copied), "fresh": fresh, "extended": extended}


def _head_prefix_fits(incoming: torch.Tensor | None, value: torch.Tensor) -> bool:
    """True when a source head has fewer output channels and is otherwise the same shape."""
    return (incoming is not None and incoming.dim() == value.dim() and incoming.dim() >= 1
            and incoming.shape[0] < value.shape[0] and tuple(incoming.shape[1:]) == tuple(value.shape[1:]))


def class_weights(setting, name: str = "class_sampling") -> dict[int, float]:
    """``{label: weight}`` from a per-label setting (JSON keys are strings)."""
    if not setting:
        return {}
    out = {}
    for key, value in dict(setting).items():
        label, weight = int(key), float(value)
        if label < 1 or not weight > 0:
            raise ValueError(f"{name}: labels must be >= 1 and weights > 0, got {key}: {value}")
        out[label] = weight
    return out


def choose_centre_class(class_locations: dict, weights: dict[int, float],
                        rng: np.random.Generator | None = None):
    """A label with locations in ``class_locations``, drawn with probability proportional to its
    weight (1 for labels not in ``weights``); None when the case has no labelled voxel."""
    eligible = [k for k, v in class_locations.items() if not isinstance(k, tuple) and len(v) > 0]
    if not eligible:
        return None
    p = np.array([weights.get(int(k), 1.0) for k in eligible], dtype=float)
    draw = (rng or np.random).random() * p.sum()
    return eligible[min(int(np.searchsorted(np.cumsum(p), draw, side="right")), len(eligible) - 1)]


class ClassWeightedLoader(nnUNetDataLoader):
    """nnU-Net's data loader whose foreground patches pick their centre class by weight.

    nnU-Net draws the class of a foreground-centred patch uniformly among the labels a case
    contains. With ``class_weights`` {14: 6} a tumor case centres a patch on its tumor six times as
    often as on any one organ. Everything else (the voxel within the class, padding, cropping) is
    nnU-Net's ``get_bbox``, which takes the chosen class as its ``overwrite_class``.
    """

    class_weights: dict[int, float] = {}

    def get_bbox(self, data_shape, force_fg, class_locations, overwrite_class=None, verbose=False):
        if force_fg and overwrite_class is None and class_locations:
            overwrite_class = choose_centre_class(class_locations, self.class_weights)
        return super().get_bbox(data_shape, force_fg, class_locations, overwrite_class, verbose)


def use_class_weights(augmenter, weights: dict[int, float]) -> None:
    """Give the nnU-Net loader inside ``augmenter`` (single- or multi-process, before it starts
    its workers) the class-weighted sampler."""
    loader = getattr(augmenter, "data_loader", None) or getattr(augmenter, "generator", None)
    if not isinstance(loader, nnUNetDataLoader):
        raise TypeError(f"cannot find nnU-Net's data loader in {type(augmenter).__name__}")
    loader.__class__ = ClassWeightedLoader
    loader.class_weights = dict(weights)


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
