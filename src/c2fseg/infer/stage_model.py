"""One loaded cascade stage (network + plans settings) that segments a canonical CT volume.

Load once, call :meth:`StageModel.predict` per volume. Everything heavy stays on the model's
device: normalisation, trilinear resampling to the stage spacing, batched sliding-window inference
with fp16 (CUDA) or bf16 (CPUs with native bf16) autocast, and chunked resampling of the logits back
to the input grid with the argmax taken per chunk (by default all classes are interpolated only
near label boundaries, see :func:`c2fseg.infer.resample.logits_to_labels`). ``predict(...,
output="model_grid")`` skips that step and returns the labels on the model grid (what the
cascade's ROI needs). Spacing, patch size and CT statistics come from
the stage's plans; the plans' ``transpose_forward`` is applied only around the network call, so
callers always work in canonical (z, y, x) order.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from c2fseg.device import resolve_device  # the one resolver; importable from here too
from c2fseg.infer.normalize import CTNormalizer
from c2fseg.infer.resample import (
    RESAMPLE_MODES,
    chunk_rows,
    grid_box_to_input,
    grid_shape,
    logits_to_labels,
    model_grid_labels,
    resample_image,
)
from c2fseg.infer.sliding import count_tiles, sliding_window
from c2fseg.labels import check_stage
from c2fseg.weights import (
    DATASET_NAME,
    DEFAULT_INFERENCE,
    PLANS_NAME,
    WeightsError,
    check_input_orientation,
    load_manifest,
    resolve_configuration,
    stage_settings,
)

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
OUTPUTS = ("input_grid", "model_grid")
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}
#: Memory for one chunk of full-resolution float work (logits back to the input grid).
_CHUNK_BUDGET = {"cuda": 1 << 30, "cpu": 256 << 20}


class NonFiniteOutputError(RuntimeError):
    """The network produced NaN/inf logits even in fp32 (damaged weights or input)."""


@dataclass
class StagePrediction:
    """Result of one stage on one volume, on the model's device.

    ``labels`` (and ``prob``) live on the input grid (``grid == "input"``, the default) or on the
    stage's model grid (``grid == "model"``), which covers the same physical extent with
    ``labels.shape`` voxels of ``grid_spacing`` mm. :meth:`box_to_input` maps a box found on
    that grid to input voxel indices.
    """

    labels: torch.Tensor  # uint8 FLARE label ids, on the grid named by ``grid``
    prob: torch.Tensor | None  # float16 softmax of the requested label, or None
    timings: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # device, precision, tiles, grid, fallbacks
    grid: str = "input"  # "input" | "model"
    grid_spacing: tuple[float, float, float] | None = None  # mm per voxel of ``labels`` (z, y, x)
    input_shape: tuple[int, int, int] | None = None  # shape of the input volume

    def box_to_input(
        self, start: Sequence[int], stop: Sequence[int], expand: int = 1
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Input voxel box (start, stop exclusive) covering a box of ``labels``' grid, conservatively.

        The box is widened by ``expand`` grid voxels per side before its physical extent is
        rounded outward to input voxels (see :func:`c2fseg.infer.resample.grid_box_to_input`).
        """
        if self.grid == "input":
            return tuple(int(a) for a in start), tuple(int(b) for b in stop)
        if self.input_shape is None:
            raise ValueError("a model-grid prediction needs input_shape to map boxes to the input grid")
        return grid_box_to_input(start, stop, tuple(self.labels.shape), self.input_shape, expand)


# ---------------------------------------------------------------------------------------------
# Devices, precision, network
# ---------------------------------------------------------------------------------------------


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matmul (AVX512-BF16/AMX), where bf16 autocast is ~2-3x faster."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """Concrete precision ('fp32', 'fp16', 'bf16') for a request on a device."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 autocast is for CUDA; on CPU use bf16, fp32 or auto")
    return precision


def _cap_cpu_threads() -> None:
    """Never run more torch threads than CPUs this process may use (containers, taskset)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        available = os.cpu_count() or 1
    if torch.get_num_threads() > available:
        torch.set_num_threads(max(1, available))


def extract_state_dict(checkpoint: dict) -> dict:
    """Network weights from an nnU-Net checkpoint dict or a bare state dict, prefixes stripped."""
    state = checkpoint.get("network_weights", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError("checkpoint holds neither 'network_weights' nor a plain state dict")
    clean = {}
    for key, value in state.items():
        for prefix in ("_orig_mod.", "module."):
            while key.startswith(prefix):
                key = key[len(prefix) :]
        clean[key] = value
    return clean


def load_checkpoint(path: str | os.PathLike) -> dict:
    """torch.load a checkpoint on CPU; safe tensor-only loading first, full unpickling if needed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # nnU-Net checkpoints also pickle logs/numpy scalars; the manifest hash vouches for the file.
        return torch.load(path, map_location="cpu", weights_only=False)


def build_network(
    plans: dict, configuration: str, num_classes: int, state_dict: dict | None = None
) -> torch.nn.Module:
    """The stage's network built by nnU-Net's helper from the plans (no deep supervision), eval mode."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = resolve_configuration(plans, configuration).get("architecture")
    if not arch:
        raise WeightsError(
            f"configuration {configuration!r} has no 'architecture' entry (plans from nnU-Net < 2.4?); "
            "re-plan the stage with nnunetv2==2.6.0"
        )
    network = get_network_from_plans(
        arch["network_class_name"],
        arch["arch_kwargs"],
        arch["_kw_requires_import"],
        1,
        num_classes,
        allow_init=True,
        deep_supervision=False,
    )
    if state_dict is not None:
        try:
            network.load_state_dict(extract_state_dict(state_dict), strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"checkpoint does not fit the network in the plans: {exc}") from None
    return network.eval()


# ---------------------------------------------------------------------------------------------
# The stage model
# ---------------------------------------------------------------------------------------------


class StageModel:
    """A stage network with its plans settings, ready to segment canonical CT volumes."""

    def __init__(
        self,
        network: torch.nn.Module,
        *,
        stage: str,
        spacing: Sequence[float],
        patch_size: Sequence[int],
        normalizer: CTNormalizer,
        channel_labels: Sequence[int],
        transpose_forward: Sequence[int] = (0, 1, 2),
        device: str | torch.device = "auto",
        step: float = 0.5,
        precision: str = "auto",
        weighting: str = "uniform",
        mirror: bool = False,
        min_prob: float = 0.0,
        tile_batch: int | None = None,
        manifest: dict | None = None,
        resample_mode: str = "boundary",
    ) -> None:
        self.stage = check_stage(stage)
        self.spacing = tuple(float(s) for s in spacing)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.transpose_forward = tuple(int(a) for a in transpose_forward)
        if sorted(self.transpose_forward) != [0, 1, 2]:
            raise ValueError(f"transpose_forward {transpose_forward} is not a permutation of (0, 1, 2)")
        self.transpose_backward = tuple(int(a) for a in np.argsort(self.transpose_forward))
        self.normalizer = normalizer
        self.channel_labels = tuple(int(c) for c in channel_labels)
        self.device = resolve_device(device)
        self.precision_request = precision
        self.precision = resolve_precision(precision, self.device)
        if not 0 < step <= 1:
            raise ValueError(f"step must be in (0, 1], got {step}")
        self.step = float(step)
        if weighting not in ("uniform", "gaussian"):
            raise ValueError(f"tile weighting must be 'uniform' or 'gaussian', got {weighting!r}")
        if not 0.0 <= min_prob < 1.0:
            raise ValueError(f"min_prob must be in [0, 1), got {min_prob}")
        self.weighting = weighting
        self.mirror = bool(mirror)
        self.min_prob = float(min_prob)
        if resample_mode not in RESAMPLE_MODES:
            raise ValueError(f"resample_mode must be one of {', '.join(RESAMPLE_MODES)}, got {resample_mode!r}")
        self.resample_mode = resample_mode
        self.tile_batch = int(tile_batch or (2 if self.device.type == "cuda" else 1))
        self.manifest = manifest
        if self.device.type == "cpu":
            _cap_cpu_threads()
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch size: pick the fastest kernels once
        self.network = network.to(self.device).eval()
        self._cpu_network: torch.nn.Module | None = None

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_plans(
        cls,
        plans: dict,
        dataset_json: dict,
        configuration: str,
        stage: str,
        state_dict: dict | None = None,
        device: str | torch.device = "auto",
        *,
        step: float = 0.5,
        precision: str = "auto",
        **options,
    ) -> StageModel:
        """Build from plans + dataset.json; ``state_dict`` (or an nnU-Net checkpoint dict) or random."""
        settings = stage_settings(plans, dataset_json, configuration)
        if len(dataset_json.get("channel_names", {"0": "CT"})) != 1:
            raise WeightsError("c2fseg stages take exactly one input channel (CT); dataset.json lists more")
        network = build_network(plans, configuration, len(settings["channel_labels"]), state_dict)
        return cls(
            network,
            stage=stage,
            spacing=settings["spacing"],
            patch_size=settings["patch_size"],
            normalizer=CTNormalizer.from_stats(settings["normalization"]),
            channel_labels=settings["channel_labels"],
            transpose_forward=settings["transpose_forward"],
            device=device,
            step=step,
            precision=precision,
            **options,
        )

    @classmethod
    def load(
        cls,
        stage_dir: str | os.PathLike,
        device: str | torch.device = "auto",
        *,
        step: float | None = None,
        precision: str = "auto",
        verify: bool = True,
        **options,
    ) -> StageModel:
        """Load ``weights/<stage>/`` (hashes verified); inference defaults come from the manifest.

        Refuses (WeightsError) a manifest that does not record ``"input_orientation":
        "canonical-LPS"``: the orientation the images it was trained on had, and the one fed here.
        """
        import json

        manifest = load_manifest(stage_dir, verify=verify)
        check_input_orientation(manifest)  # we feed canonical arrays; refuse stages not trained so
        folder = Path(manifest["stage_dir"])
        plans = json.loads((folder / PLANS_NAME).read_text(encoding="utf-8"))
        dataset_json = json.loads((folder / DATASET_NAME).read_text(encoding="utf-8"))
        settings = stage_settings(plans, dataset_json, manifest["configuration"])
        if list(settings["channel_labels"]) != list(manifest["channel_labels"]):
            raise WeightsError(
                f"{folder}: manifest channel_labels {manifest['channel_labels']} disagree with "
                f"dataset.json ({settings['channel_labels']}); re-export the stage"
            )
        inference = {**DEFAULT_INFERENCE[check_stage(manifest["stage"])], **manifest.get("inference", {})}
        for key in ("weighting", "mirror", "min_prob"):
            options.setdefault(key, inference[key])
        checkpoint = load_checkpoint(folder / manifest["checkpoint"])
        model = cls.from_plans(
            plans,
            dataset_json,
            manifest["configuration"],
            manifest["stage"],
            state_dict=checkpoint,
            device=device,
            step=inference["step"] if step is None else step,
            precision=precision,
            manifest=manifest,
            **options,
        )
        return model

    # -- geometry helpers -----------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return len(self.channel_labels)

    @property
    def patch_size_model(self) -> tuple[int, int, int]:
        """Patch size in the network's (transposed) axis order."""
        return tuple(self.patch_size[a] for a in self.transpose_forward)  # type: ignore[return-value]

    def model_grid(self, shape: Sequence[int], spacing_zyx: Sequence[float]) -> tuple[int, ...]:
        """Canonical shape of a volume resampled to this stage's spacing."""
        return grid_shape(shape, spacing_zyx, self.spacing)

    # -- inference ------------------------------------------------------------------------------

    def predict(
        self,
        ct: torch.Tensor | np.ndarray,
        spacing_zyx: Sequence[float],
        *,
        prob_label: int | None = None,
        chunk_z: int | None = None,
        output: str = "input_grid",
    ) -> StagePrediction:
        """Segment a canonical HU volume [Z, Y, X] with voxel size ``spacing_zyx`` (mm).

        ``output="input_grid"`` returns labels (and ``prob``) on the input's grid;
        ``output="model_grid"`` returns them on the model grid (no resampling back: the coarse
        stage's ROI needs no more), with ``grid_spacing``/``input_shape`` set for mapping boxes.
        ``min_prob`` (zeroing probabilities below it before the argmax) is applied either way;
        with it the resampling back always interpolates all classes (``resample_mode`` "full").

        On CUDA out-of-memory (only that error) it retries on the same device with one tile per
        batch, smaller resampling chunks and the full-volume logits accumulated in host memory,
        then entirely on the CPU in fp32 (a CPU copy of the network made from host copies of the
        weights); the labels still come back on ``self.device``.
        """
        ct_t = torch.from_numpy(np.ascontiguousarray(ct)) if isinstance(ct, np.ndarray) else ct
        if ct_t.dim() != 3 or min(ct_t.shape) < 1:
            raise ValueError(f"expected a 3D [Z, Y, X] CT volume, got shape {tuple(ct_t.shape)}")
        spacing = tuple(float(s) for s in spacing_zyx)
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing must be three positive numbers (z, y, x) in mm, got {spacing_zyx}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        prob_channel = None
        if prob_label is not None:
            if prob_label not in self.channel_labels:
                raise ValueError(f"label {prob_label} is not predicted by the {self.stage} stage {self.channel_labels}")
            prob_channel = self.channel_labels.index(prob_label)
        fallbacks: list[str] = []
        for device, tile_batch, shrink, acc_device in self._attempts():
            oom = False
            try:
                pred = self._predict_once(ct_t, spacing, prob_channel, chunk_z, device, tile_batch, shrink,
                                          acc_device, output)
            except torch.cuda.OutOfMemoryError:
                oom = True
            if not oom:
                pred.info["fallbacks"] = fallbacks
                if pred.labels.device != self.device:
                    pred.labels = pred.labels.to(self.device)
                    pred.prob = None if pred.prob is None else pred.prob.to(self.device)
                return pred
            fallbacks.append(f"out of memory on {device} (tile batch {tile_batch}, chunk /{shrink}, "
                             f"logits on {acc_device or device})")
            log.warning("%s stage: %s; retrying with less memory", self.stage, fallbacks[-1])
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        raise torch.cuda.OutOfMemoryError(f"{self.stage} stage ran out of memory even on the CPU: {fallbacks}")

    def _attempts(self) -> list[tuple[torch.device, int, int, torch.device | None]]:
        """(device, tile batch, chunk divisor, logits device) to try in turn when memory runs out.

        The second try keeps the tiles on the GPU but moves the largest allocation, the logits of
        every class over the whole model grid, to host memory; the last runs on the CPU.
        """
        cpu = torch.device("cpu")
        return [
            (self.device, self.tile_batch, 1, None),
            (self.device, 1, 4, cpu if self.device.type != "cpu" else None),
            (cpu, 1, 4, None),
        ]

    def _precision_on(self, device: torch.device) -> str:
        """The model's precision on its own device; fp32 on the CPU fallback of a GPU model.

        A GPU model runs fp16; bf16 on the CPU would round differently again (about 3 significant
        digits instead of 4), so the rare CPU retry uses fp32, the reference the others approximate.
        """
        return self.precision if device == self.device else "fp32"

    def _network_on(self, device: torch.device) -> torch.nn.Module:
        if device == self.device:
            return self.network
        if self._cpu_network is None:
            self._cpu_network = cpu_copy(self.network)
        return self._cpu_network

    def _chunk_z(self, requested: int | None, plane: int, device: torch.device, shrink: int) -> int:
        if requested is not None:
            return max(1, int(requested) // shrink)
        budget = _CHUNK_BUDGET["cuda" if device.type == "cuda" else "cpu"] // shrink
        return chunk_rows(self.num_classes, plane, budget)

    def _predict_once(
        self,
        ct: torch.Tensor,
        spacing: tuple[float, float, float],
        prob_channel: int | None,
        chunk_z: int | None,
        device: torch.device,
        tile_batch: int,
        shrink: int,
        acc_device: torch.device | None = None,
        output: str = "input_grid",
    ) -> StagePrediction:
        times: dict[str, float] = {}
        t0 = t = time.perf_counter()
        shape = tuple(int(s) for s in ct.shape)
        grid = self.model_grid(shape, spacing)
        budget = _CHUNK_BUDGET["cuda" if device.type == "cuda" else "cpu"] // (4 * shrink)
        precision = self._precision_on(device)
        with torch.inference_mode():
            in_chunk = chunk_rows(1, shape[1] * shape[2], budget)
            image = resample_image(ct, grid, device=device, chunk_z=in_chunk, prep=self.normalizer)
            t = _lap(times, "resample_in", t, device)
            logits, used_precision = self._logits(image.permute(*self.transpose_forward), device, tile_batch,
                                                  precision, acc_device)
            del image
            t = _lap(times, "sliding_window", t, device)

        # Outside inference mode (no_grad only) so callers get ordinary tensors they may edit in place.
        with torch.no_grad():
            logits = logits.permute(0, *(1 + a for a in self.transpose_backward))  # canonical order
            lut = torch.tensor(self.channel_labels, dtype=torch.uint8)
            if output == "model_grid":
                labels, prob = model_grid_labels(
                    logits, lut, chunk_z=self._chunk_z(chunk_z, grid[1] * grid[2], logits.device, shrink),
                    min_prob=self.min_prob, prob_channel=prob_channel,
                )
            else:
                out_chunk = self._chunk_z(chunk_z, shape[1] * shape[2], logits.device, shrink)
                labels, prob = logits_to_labels(
                    logits, shape, lut, chunk_z=out_chunk, min_prob=self.min_prob, prob_channel=prob_channel,
                    mode=self.resample_mode,
                )
        _lap(times, "resample_out", t, device)
        times["total"] = time.perf_counter() - t0
        info = {
            "device": str(device),
            "precision": used_precision,
            "model_grid": list(grid),
            "tiles": count_tiles(tuple(grid[a] for a in self.transpose_forward), self.patch_size_model, self.step),
            "step": self.step,
            "output": output,
            "resample_mode": "full" if self.min_prob > 0 else self.resample_mode,
        }
        on_model = output == "model_grid"
        grid_spacing = tuple(n * s / m for n, s, m in zip(shape, spacing, grid, strict=True)) if on_model else spacing
        return StagePrediction(labels=labels, prob=prob, timings=times, info=info,
                               grid="model" if on_model else "input", grid_spacing=grid_spacing,
                               input_shape=shape)

    def _logits(
        self, image: torch.Tensor, device: torch.device, tile_batch: int, precision: str,
        acc_device: torch.device | None = None,
    ) -> tuple[torch.Tensor, str]:
        """Sliding-window logits; non-finite ones in reduced precision are redone once in fp32."""
        network = self._network_on(device)
        logits = self._sliding(network, image, device, tile_batch, precision, acc_device)
        if bool(torch.isfinite(logits).all()):
            return logits, precision
        if precision == "fp32":
            raise NonFiniteOutputError(
                f"{self.stage} stage produced non-finite logits in fp32 (damaged weights or input?)"
            )
        log.warning("%s stage: non-finite logits in %s, retrying in fp32", self.stage, precision)
        del logits
        logits = self._sliding(network, image, device, tile_batch, "fp32", acc_device)
        if not bool(torch.isfinite(logits).all()):
            raise NonFiniteOutputError(f"{self.stage} stage produced non-finite logits, also in fp32")
        return logits, "fp32"

    def _sliding(
        self, network: torch.nn.Module, image: torch.Tensor, device: torch.device, tile_batch: int, precision: str,
        acc_device: torch.device | None = None,
    ) -> torch.Tensor:
        """Sliding-window logits in model axis order; fp16 accumulation only for fp16 + uniform."""
        cast = _AUTOCAST.get(precision)

        def net_fn(batch: torch.Tensor) -> torch.Tensor:
            if cast is None:
                return network(batch)
            with torch.autocast(device.type, dtype=cast):
                return network(batch)

        acc = torch.float16 if precision == "fp16" and self.weighting == "uniform" else torch.float32
        return sliding_window(
            net_fn,
            image,
            self.patch_size_model,
            self.num_classes,
            step=self.step,
            batch_size=tile_batch,
            weighting=self.weighting,
            mirror_axes=(0, 1, 2) if self.mirror else (),
            acc_dtype=acc,
            acc_device=acc_device,
        )

    def __repr__(self) -> str:
        return (
            f"StageModel(stage={self.stage!r}, spacing={self.spacing}, patch={self.patch_size}, "
            f"classes={self.num_classes}, device={self.device}, precision={self.precision}, step={self.step})"
        )


def cpu_copy(network: torch.nn.Module) -> torch.nn.Module:
    """An fp32 CPU copy of ``network`` built from host copies of its tensors.

    ``copy.deepcopy`` of a CUDA module would first clone every weight on the GPU, which has just
    run out of memory; here each parameter and buffer is copied to the host and handed to the
    deep copy through its memo, so no tensor is cloned on the network's device.
    """
    memo: dict[int, object] = {}
    for tensor in itertools.chain(network.parameters(), network.buffers()):
        host = tensor.detach().to("cpu", copy=True)
        if isinstance(tensor, torch.nn.Parameter):
            host = torch.nn.Parameter(host, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = host
    return copy.deepcopy(network, memo).float().eval()


def _lap(times: dict[str, float], name: str, since: float, device: torch.device) -> float:
    """Record the time since ``since`` (after the device finished its queued work)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    now = time.perf_counter()
    times[name] = now - since
    return now
