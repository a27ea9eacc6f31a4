"""The coarse-to-fine cascade for one case, in memory: ``segment_volume(volume, models, options)``.

Order of work (all arrays canonical ``(z, y, x)``):

1. The CT goes to the models' device once.
2. coarse: the coarse model labels the whole volume and returns the labels on its own model
   grid (``coarse_output="model_grid"``: resampling 14 classes back to the full input grid would
   cost more than the network and add nothing, the coarse model cannot resolve anything finer).
   :func:`c2fseg.infer.roi.compute_roi_from_grid` finds the box there and maps it to the input
   grid conservatively (widened by one model voxel); the margins are in mm as before. With
   ``coarse_output="input_grid"`` the labels come back on the input grid and
   :func:`c2fseg.infer.roi.compute_roi` runs on them subsampled to about the coarse spacing.
   No organ -> an all-background result with status "empty".
3. organ and tumor models run on the ROI crop only, at the input spacing (each model resamples
   to its own spacing and normalises inside ``StageModel.predict``).
4. postprocess: the organ map's single-component organs keep their largest component (and
   optionally get their holes filled) BEFORE the tumor is merged, so a tumor that cuts an organ
   in two does not make a genuine organ part look like a stray fragment.
5. merge: tumor (14) overrides organ labels (rules in :mod:`c2fseg.infer.merge`).
6. The ROI result is pasted into a full-size uint8 volume; writing is the caller's job
   (``c2fseg.io.write_labels`` with the input's geometry).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from c2fseg.infer.merge import merge_labels, tumor_mask_from_models
from c2fseg.infer.postprocess import fill_holes, keep_largest_components, paste_roi
from c2fseg.infer.roi import RoiBox, as_triple, compute_roi, compute_roi_from_grid
from c2fseg.io import Volume
from c2fseg.labels import LABELS, MAX_LABEL, TUMOR

STATUS_OK, STATUS_EMPTY = "ok", "empty"
COARSE_OUTPUTS = ("model_grid", "input_grid")


@dataclass
class CascadeOptions:
    """Everything that changes a cascade result (recorded in the run report)."""

    margin_mm: tuple[float, float, float] = (20.0, 20.0, 20.0)
    max_liver_gap_mm: float = 100.0
    roi_at_coarse_spacing: bool = True
    tumor_threshold: float = 0.5
    tumor_must_touch_organ: bool = False
    min_tumor_ml: float = 0.0
    keep_largest: bool = True
    fill_holes: bool = False
    chunk_z: int | None = None
    coarse_output: str = "model_grid"  # where the coarse labels for the ROI live (module docstring)

    def __post_init__(self) -> None:
        self.margin_mm = as_triple(self.margin_mm)
        if self.coarse_output not in COARSE_OUTPUTS:
            raise ValueError(f"coarse_output must be one of {', '.join(COARSE_OUTPUTS)}, got {self.coarse_output!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CascadeModels:
    """The loaded stage models (objects following the ``StageModel`` interface)."""

    coarse: object
    organ: object
    tumors: list = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return torch.device(self.coarse.device)


@dataclass
class CaseResult:
    """One case's full-size canonical label map and what the report needs about it."""

    labels: np.ndarray
    status: str
    roi: RoiBox | None
    timings: dict[str, float]
    reason: str = ""
    warnings: list[str] = field(default_factory=list)

    def label_counts(self) -> dict[str, int]:
        """Voxel count per label name present (background excluded)."""
        counts = np.bincount(self.labels.ravel(), minlength=MAX_LABEL + 1)
        return {LABELS[i]: int(c) for i, c in enumerate(counts) if i > 0 and c > 0}


class StageTimer:
    """Wall-clock seconds per named stage; waits for the GPU so timings are not just launches."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.sync = torch.device(device).type == "cuda"
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                torch.cuda.synchronize()
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 4)


def to_numpy(x) -> np.ndarray:
    """A numpy array from a numpy array or a torch tensor on any device."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def coarse_output(models: CascadeModels, options: CascadeOptions) -> str:
    """The grid to ask the coarse model for (the model grid by default: the ROI needs no more)."""
    return options.coarse_output


def find_roi(coarse_pred, spacing, shape, models: CascadeModels, options: CascadeOptions):
    """The ROI box (input voxels) from the coarse prediction, on whichever grid it came back."""
    labels = to_numpy(coarse_pred.labels)
    if getattr(coarse_pred, "grid", "input") == "model":
        return compute_roi_from_grid(
            labels,
            coarse_pred.grid_spacing,
            shape,
            spacing,
            margin_mm=options.margin_mm,
            max_liver_gap_mm=options.max_liver_gap_mm,
        )
    work = tuple(models.coarse.spacing) if options.roi_at_coarse_spacing else None
    return compute_roi(
        labels,
        spacing,
        margin_mm=options.margin_mm,
        max_liver_gap_mm=options.max_liver_gap_mm,
        work_spacing_mm=work,
    )


def run_stage(model, ct: torch.Tensor, spacing, options: CascadeOptions, notes: list[str], **kw):
    """``model.predict`` plus a note for the report when the model had to fall back (memory)."""
    pred = model.predict(ct, spacing, chunk_z=options.chunk_z, **kw)
    for fallback in (getattr(pred, "info", None) or {}).get("fallbacks", []):
        notes.append(f"{model.stage} stage: {fallback}")
    return pred


def predict_tumor(crop: torch.Tensor, spacing, models: CascadeModels, options: CascadeOptions,
                  notes: list[str]):
    """Tumor mask (numpy bool) of the ROI from one or several tumor models."""
    several = len(models.tumors) > 1
    labels, probs = [], []
    for model in models.tumors:
        pred = run_stage(model, crop, spacing, options, notes, prob_label=TUMOR if several else None)
        labels.append(pred.labels)
        probs.append(pred.prob)
    return to_numpy(tumor_mask_from_models(labels, probs, options.tumor_threshold)).astype(bool)


def clean_organs(organ: np.ndarray, options: CascadeOptions) -> np.ndarray:
    """Largest-component and hole-filling post-processing of the organ map, as configured."""
    if options.keep_largest:
        organ = keep_largest_components(organ)
    if options.fill_holes:
        organ = fill_holes(organ)
    return organ


def segment_volume(
    volume: Volume, models: CascadeModels, options: CascadeOptions | None = None
) -> CaseResult:
    """Run the cascade on one canonical CT volume and return the full-size label map."""
    options = options or CascadeOptions()
    spacing = tuple(float(s) for s in volume.spacing)
    timer, notes = StageTimer(models.device), []
    with timer("coarse"):
        ct = torch.from_numpy(np.ascontiguousarray(volume.array, dtype=np.float32)).to(models.device)
        coarse = run_stage(models.coarse, ct, spacing, options, notes, output=coarse_output(models, options))
    with timer("roi"):
        box = find_roi(coarse, spacing, volume.shape, models, options)
    del coarse
    if box is None:
        empty = np.zeros(volume.shape, dtype=np.uint8)
        reason = "the coarse model found no abdominal organ (no abdomen in view?)"
        return CaseResult(empty, STATUS_EMPTY, None, timer.timings, reason, notes)
    crop = ct[box.slices].contiguous()
    with timer("organ"):
        organ = to_numpy(run_stage(models.organ, crop, spacing, options, notes).labels)
    with timer("tumor"):
        tumor = predict_tumor(crop, spacing, models, options, notes) if models.tumors else None
    with timer("postprocess"):
        organ = clean_organs(organ.astype(np.uint8, copy=False), options)
    with timer("merge"):
        if tumor is None:
            tumor = np.zeros(organ.shape, dtype=bool)
        merged = merge_labels(
            organ,
            tumor,
            spacing,
            tumor_must_touch_organ=options.tumor_must_touch_organ,
            min_tumor_ml=options.min_tumor_ml,
        )
    with timer("postprocess"):
        full = paste_roi(merged, box, volume.shape)
    if not full.any():
        reason = "the fine stages found no organ inside the ROI"
        return CaseResult(full, STATUS_EMPTY, box, timer.timings, reason, notes)
    return CaseResult(full, STATUS_OK, box, timer.timings, warnings=notes)
