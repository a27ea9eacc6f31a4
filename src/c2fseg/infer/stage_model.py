"""One stage model on a device, segmenting canonical CT volumes: ``StageModel.predict``.

Getting the network is :mod:`c2fseg.infer.stage_loader`'s job (a stage folder, plans, later
imported checkpoints); a :class:`StageModel` runs whatever a loader returns, with the stage's
inference settings (step, tile weighting, mirroring, probability floor; from the stage folder,
overridable). Everything heavy stays on the model's device: normalisation, trilinear resampling
to the stage spacing, batched sliding-window inference with fp16 (CUDA) or bf16 (CPUs with
native bf16) autocast, and chunked resampling of the logits back to the input grid with the
argmax taken per chunk (by default all classes are interpolated only near label boundaries, see
:func:`c2fseg.infer.resample.logits_to_labels`). ``predict(..., grid="model")`` skips that step
and returns the labels on the model grid (what the cascade's ROI needs). The plans'
``transpose_forward`` is applied only around the network call, so callers always work in
canonical (z, y, x) order.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from c2fseg.device import resolve_device
from c2fseg.infer import stage_loader
from c2fseg.infer.inplane_cap import cap_inplane, capped_grid_shape
from c2fseg.infer.normalize import CTNormalizer
from c2fseg.infer.precision import AUTOCAST, default_tile_batch, prepare_device, resolve_precision
from c2fseg.infer.probabilities import (
    floor_probabilities,
    probabilities_to_labels,
    resize_probabilities,
    resized_probability_labels,
)
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
from c2fseg.infer.stage_loader import LoadedStage, StageSpec
from c2fseg.infer.truncated import TruncatedUNet
from c2fseg.settings import resolve_inference

log = logging.getLogger(__name__)

#: Where ``predict`` returns its labels: the input's grid, or the stage's own model grid.
GRIDS = ("input", "model")
#: Memory for one chunk of full-resolution float work (logits back to the input grid).
_CHUNK_BUDGET = {"cuda": 1 << 30, "cpu": 256 << 20}
#: Messages of allocation failures that arrive as a plain RuntimeError (cuDNN, cuBLAS, kernels).
OOM_MARKERS = ("out of memory", "cudnn_status_alloc_failed", "cublas_status_alloc_failed")


class NonFiniteOutputError(RuntimeError):
    """The network produced NaN/inf logits even in fp32 (damaged weights or input)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for device memory exhaustion: ``torch.cuda.OutOfMemoryError`` or a RuntimeError
    whose message says an allocation failed (cuDNN and cuBLAS report it that way)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    if not isinstance(exc, RuntimeError) or isinstance(exc, NonFiniteOutputError):
        return False
    text = str(exc).lower()
    return any(marker in text for marker in OOM_MARKERS)


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
    grid: str = "input"  # one of GRIDS
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


class StageModel:
    """A stage network on a device with its spec and inference settings; see :meth:`predict`.

    Build one from a loader's result (:meth:`from_loaded`), a stage folder (:meth:`load`) or
    plans (:meth:`from_plans`); or directly from a network and a :class:`StageSpec`.
    ``inference`` is the stage's inference settings over its defaults (the loaders pass the
    stage folder's); ``step``, ``weighting``, ``mirror`` and ``min_prob`` are read from it.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        spec: StageSpec,
        *,
        inference: Mapping[str, Any] | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        tile_batch: int | None = None,
        resample_mode: str = "boundary",
        manifest: dict | None = None,
        source: str = "",
    ) -> None:
        self.spec = spec
        self.stage = spec.stage
        self.spacing = spec.spacing
        self.patch_size = spec.patch_size
        self.transpose_forward = spec.transpose_forward
        self.transpose_backward = tuple(int(a) for a in np.argsort(self.transpose_forward))
        self.normalizer: CTNormalizer = spec.normalizer
        self.channel_labels = spec.channel_labels
        self.inference = resolve_inference(self.stage, inference)
        self.device = resolve_device(device)
        self.precision_request = precision
        self.precision = resolve_precision(precision, self.device)
        if resample_mode not in RESAMPLE_MODES:
            raise ValueError(f"resample_mode must be one of {', '.join(RESAMPLE_MODES)}, got {resample_mode!r}")
        self.resample_mode = resample_mode
        self.tile_batch = int(tile_batch or default_tile_batch(self.device, spec.patch_size))
        self.manifest = manifest
        self.source = source
        prepare_device(self.device)
        stages = self.inference["decoder_stages"]
        if stages is not None:  # a cheap pass: only the first decoder stages and their head
            network = TruncatedUNet(network, int(stages) - 1, align_corners=self.align_corners)
        self.network = network.to(self.device).eval()
        self._cpu_network: torch.nn.Module | None = None

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_loaded(
        cls,
        loaded: LoadedStage,
        device: str | torch.device = "auto",
        *,
        precision: str = "auto",
        tile_batch: int | None = None,
        resample_mode: str = "boundary",
        **overrides: Any,
    ) -> StageModel:
        """Place a loader's result on ``device``; ``overrides`` (inference settings, None = keep)."""
        return cls(
            loaded.network,
            loaded.spec,
            inference=stage_loader.with_overrides(loaded, overrides),
            device=device,
            precision=precision,
            tile_batch=tile_batch,
            resample_mode=resample_mode,
            manifest=loaded.manifest,
            source=loaded.source,
        )

    @classmethod
    def from_plans(
        cls,
        plans: dict,
        dataset_json: dict,
        configuration: str,
        stage: str,
        state_dict: dict | None = None,
        device: str | torch.device = "auto",
        **options: Any,
    ) -> StageModel:
        """Build from plans + dataset.json; ``state_dict`` (or an nnU-Net checkpoint dict) or random.

        ``options``: ``precision``, ``tile_batch``, ``resample_mode`` and inference settings.
        """
        loaded = stage_loader.from_plans(plans, dataset_json, configuration, stage, state_dict)
        return cls.from_loaded(loaded, device, **options)

    @classmethod
    def load(
        cls,
        stage_dir: str | os.PathLike,
        device: str | torch.device = "auto",
        *,
        verify: bool = True,
        **options: Any,
    ) -> StageModel:
        """Load ``weights/<stage>/`` (:func:`c2fseg.infer.stage_loader.from_stage_folder`).

        Inference settings come from the manifest; ``options`` may override them (``step=0.5``;
        None keeps the manifest's) and set ``precision``, ``tile_batch``, ``resample_mode``.
        """
        return cls.from_loaded(stage_loader.from_stage_folder(stage_dir, verify=verify), device, **options)

    # -- settings -------------------------------------------------------------------------------

    @property
    def step(self) -> float:
        return float(self.inference["step"])

    @property
    def weighting(self) -> str:
        return str(self.inference["weighting"])

    @property
    def mirror(self) -> bool:
        return bool(self.inference["mirror"])

    @property
    def min_prob(self) -> float:
        return float(self.inference["min_prob"])

    @property
    def align_corners(self) -> bool:
        """Every trilinear resampling of this stage uses ``align_corners=True`` (published flavour)."""
        return bool(self.inference["align_corners"])

    @property
    def average(self) -> str:
        """What the sliding window averages over tiles: "logits" (ours) or "probabilities"."""
        return str(self.inference["average"])

    def settings_used(self) -> dict:
        """What this model runs with (for run reports): source, spec, inference, device, precision."""
        return {"source": self.source, **self.spec.describe(), "inference": dict(self.inference),
                "device": str(self.device), "precision": self.precision}

    # -- geometry helpers -----------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return len(self.channel_labels)

    @property
    def patch_size_model(self) -> tuple[int, int, int]:
        """Patch size in the network's (transposed) axis order."""
        return tuple(self.patch_size[a] for a in self.transpose_forward)  # type: ignore[return-value]

    def model_grid_shape(self, shape: Sequence[int], spacing_zyx: Sequence[float]) -> tuple[int, ...]:
        """Shape of a volume resampled to this stage's spacing (before any in-plane cap)."""
        return grid_shape(shape, spacing_zyx, self.spacing)

    def network_grid_shape(self, shape: Sequence[int], spacing_zyx: Sequence[float]) -> tuple[int, ...]:
        """Shape the network runs on: the model grid, scaled down by ``max_inplane_voxels`` if set."""
        grid = self.model_grid_shape(shape, spacing_zyx)
        cap = self.inference["max_inplane_voxels"]
        return grid if cap is None else capped_grid_shape(grid, int(cap))

    # -- inference ------------------------------------------------------------------------------

    def predict(
        self,
        ct: torch.Tensor | np.ndarray,
        spacing_zyx: Sequence[float],
        *,
        prob_label: int | None = None,
        chunk_z: int | None = None,
        grid: str = "input",
    ) -> StagePrediction:
        """Segment a canonical HU volume [Z, Y, X] with voxel size ``spacing_zyx`` (mm).

        ``grid="input"`` returns labels (and ``prob``) on the input's grid; ``grid="model"``
        returns them on the model grid (no resampling back: the coarse stage's ROI needs no
        more), with ``grid_spacing``/``input_shape`` set for mapping boxes. ``min_prob`` (zeroing
        probabilities below it before the argmax) is applied either way; with it the resampling
        back always interpolates all classes (``resample_mode`` "full").

        When the device runs out of memory (:func:`is_out_of_memory`: CUDA's error, or cuDNN /
        cuBLAS allocation failures) it retries on the same device with one tile per batch,
        smaller resampling chunks and the full-volume logits accumulated in host memory, then
        entirely on the CPU in fp32 (a CPU copy of the network made from host copies of the
        weights); the labels still come back on ``self.device``. Each retry starts after the
        failed attempt's tensors were released. Other errors are raised as they are.
        """
        ct_t = torch.from_numpy(np.ascontiguousarray(ct)) if isinstance(ct, np.ndarray) else ct
        if ct_t.dim() != 3 or min(ct_t.shape) < 1:
            raise ValueError(f"expected a 3D [Z, Y, X] CT volume, got shape {tuple(ct_t.shape)}")
        spacing = tuple(float(s) for s in spacing_zyx)
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing must be three positive numbers (z, y, x) in mm, got {spacing_zyx}")
        if grid not in GRIDS:
            raise ValueError(f"grid must be one of {', '.join(GRIDS)}, got {grid!r}")
        prob_channel = None
        if prob_label is not None:
            if prob_label not in self.channel_labels:
                raise ValueError(f"label {prob_label} is not predicted by the {self.stage} stage {self.channel_labels}")
            prob_channel = self.channel_labels.index(prob_label)
        fallbacks: list[str] = []
        for device, tile_batch, shrink, acc_device in self._attempts():
            pred, failure = self._attempt(ct_t, spacing, prob_channel, chunk_z, device, tile_batch, shrink,
                                          acc_device, grid)
            if pred is not None:
                pred.info["fallbacks"] = fallbacks
                if pred.labels.device != self.device:
                    pred.labels = pred.labels.to(self.device)
                    pred.prob = None if pred.prob is None else pred.prob.to(self.device)
                return pred
            # the failed attempt's exception (and the tensors its traceback held) is gone here
            fallbacks.append(f"out of memory on {device} (tile batch {tile_batch}, chunk /{shrink}, "
                             f"logits on {acc_device or device}: {failure})")
            log.warning("%s stage: %s; retrying with less memory", self.stage, fallbacks[-1])
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        raise torch.cuda.OutOfMemoryError(f"{self.stage} stage ran out of memory even on the CPU: {fallbacks}")

    def _attempt(self, *args: Any) -> tuple[StagePrediction | None, str]:
        """:meth:`_predict_once`, or (None, first line of the error) when memory ran out.

        The exception is caught and dropped inside this frame, so by the time the caller retries
        nothing refers to its traceback and the tensors of the failed attempt can be freed.
        """
        try:
            return self._predict_once(*args), ""
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
            failure = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return None, failure

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
        out_grid: str = "input",
    ) -> StagePrediction:
        times: dict[str, float] = {}
        t0 = t = time.perf_counter()
        shape = tuple(int(s) for s in ct.shape)
        grid = self.model_grid_shape(shape, spacing)
        budget = _CHUNK_BUDGET["cuda" if device.type == "cuda" else "cpu"] // (4 * shrink)
        precision = self._precision_on(device)
        cap = self.inference["max_inplane_voxels"]
        with torch.inference_mode():
            in_chunk = chunk_rows(1, shape[1] * shape[2], budget)
            image = resample_image(ct, grid, device=device, chunk_z=in_chunk, prep=self.normalizer,
                                   align_corners=self.align_corners)
            if cap is not None:  # a second interpolation, as the published pipeline does
                image = cap_inplane(image, int(cap), chunk_z=in_chunk)
                grid = tuple(int(v) for v in image.shape)
            t = _lap(times, "resample_in", t, device)
            scores, used_precision = self._logits(image.permute(*self.transpose_forward), device, tile_batch,
                                                  precision, acc_device)
            del image
            t = _lap(times, "sliding_window", t, device)

        # Outside inference mode (no_grad only) so callers get ordinary tensors they may edit in place.
        with torch.no_grad():
            scores = scores.permute(0, *(1 + a for a in self.transpose_backward))  # canonical order
            lut = torch.tensor(self.channel_labels, dtype=torch.uint8)
            out_shape = grid if out_grid == "model" else shape
            chunk = self._chunk_z(chunk_z, out_shape[1] * out_shape[2], scores.device, shrink)
            if self.average == "probabilities":
                labels, prob = self._labels_from_probabilities(scores, shape, lut, chunk, prob_channel, out_grid)
            elif out_grid == "model":
                labels, prob = model_grid_labels(scores, lut, chunk_z=chunk, min_prob=self.min_prob,
                                                 prob_channel=prob_channel)
            else:
                labels, prob = logits_to_labels(
                    scores, shape, lut, chunk_z=chunk, min_prob=self.min_prob, prob_channel=prob_channel,
                    mode=self.resample_mode, align_corners=self.align_corners,
                )
        _lap(times, "resample_out", t, device)
        times["total"] = time.perf_counter() - t0
        info = {
            "device": str(device),
            "precision": used_precision,
            "model_grid_shape": list(grid),
            "tiles": count_tiles(tuple(grid[a] for a in self.transpose_forward), self.patch_size_model, self.step),
            "step": self.step,
            "grid": out_grid,
            "resample_mode": "full" if self.min_prob > 0 or self.average == "probabilities" else self.resample_mode,
        }
        on_model = out_grid == "model"
        grid_spacing = tuple(n * s / m for n, s, m in zip(shape, spacing, grid, strict=True)) if on_model else spacing
        return StagePrediction(labels=labels, prob=prob, timings=times, info=info, grid=out_grid,
                               grid_spacing=grid_spacing, input_shape=shape)

    def _labels_from_probabilities(
        self, probs: torch.Tensor, shape: tuple[int, ...], lut: torch.Tensor, chunk: int,
        prob_channel: int | None, out_grid: str,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Labels from tile-averaged probabilities: floor at ``min_prob`` on the network grid, then
        (input grid) resize every class's probability and take the argmax; a voxel whose
        probabilities were all zeroed is background. The published pipeline's order of steps."""
        probs = floor_probabilities(probs, self.min_prob) if self.min_prob > 0 else probs
        prob = None
        if out_grid == "model":
            labels = probabilities_to_labels(probs, lut, chunk_z=chunk)
            if prob_channel is not None:
                prob = probs[prob_channel].half()
            return labels, prob
        labels = resized_probability_labels(probs, shape, lut, align_corners=self.align_corners, chunk_z=chunk)
        if prob_channel is not None:
            one = probs[prob_channel : prob_channel + 1]
            prob = resize_probabilities(one, shape, align_corners=self.align_corners, chunk_z=chunk)[0].half()
        return labels, prob

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
        cast = AUTOCAST.get(precision)

        def net_fn(batch: torch.Tensor) -> torch.Tensor:
            if cast is None:
                return network(batch)
            with torch.autocast(device.type, dtype=cast):
                return network(batch)

        fp16_sums = precision == "fp16" and self.weighting == "uniform" and self.average == "logits"
        acc = torch.float16 if fp16_sums else torch.float32
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
            average=self.average,
            tile_rule=str(self.inference["tile_rule"]),
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
