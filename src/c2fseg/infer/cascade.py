"""The coarse-to-fine cascade for one case, in memory: ``segment_volume(volume, models, options)``.

Order of work (all arrays canonical ``(z, y, x)``):

1. The CT goes to the models' device once.
2. coarse: the coarse model labels the whole volume and returns the labels on its own model
   grid (``coarse_grid="model"``: resampling 14 classes back to the full input grid would
   cost more than the network and add nothing, the coarse model cannot resolve anything finer).
   The coarse stage's ROI rule (``roi_rule``, :data:`ROI_RULES`) finds the box there:
   :func:`c2fseg.infer.roi.compute_roi_from_grid` maps it to the input grid conservatively
   (widened by one model voxel); the margins are in mm. With ``coarse_grid="input"`` the labels
   come back on the input grid and :func:`c2fseg.infer.roi.compute_roi` runs on them
   subsampled to about the coarse spacing. No organ -> an all-background result with status
   "empty".
3. organ and tumor models run on the ROI crop only, at the input spacing (each model resamples
   to its own spacing and normalises inside ``StageModel.predict``).
4. postprocess: the organ map's ``keep_largest`` labels keep their largest component (and
   optionally get their holes filled) BEFORE the tumor is merged, so a tumor that cuts an organ
   in two does not make a genuine organ part look like a stray fragment.
5. merge: tumor (14) overrides organ labels (rules in :mod:`c2fseg.infer.merge`); several
   tumor models combine by the tumor stage's ``tumor_combination`` rule (:data:`TUMOR_RULES`).
6. The ROI result is pasted into a full-size uint8 volume; writing is the caller's job
   (``c2fseg.io.write_labels`` with the input's geometry).

Settings: the ROI margin, liver-gap rule, tumor threshold and largest-component labels are the
stages' own inference settings (each model's ``inference``, from its stage folder; a model
without one, such as a test double, gets the packaged defaults of its stage). A
:class:`CascadeOptions` field left at None uses them; a value overrides them for this run.
:func:`settings_used` says, per stage, what a run used.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from c2fseg.infer.merge import merge_labels, reconcile_tumor_maps, tumor_mask_from_models
from c2fseg.infer.postprocess import (
    clean_coarse_labels,
    fill_holes,
    keep_largest_components,
    paste_roi,
)
from c2fseg.infer.resample import resize_labels_nearest
from c2fseg.infer.roi import (
    RoiBox,
    as_triple,
    compute_roi,
    compute_roi_from_grid,
    roi_from_foreground,
)
from c2fseg.io import Volume
from c2fseg.io.geometry import box_to_canonical, from_canonical, to_canonical
from c2fseg.labels import LABELS, MAX_LABEL, SINGLE_COMPONENT_ORGANS, TUMOR
from c2fseg.settings import SettingsError, inference_defaults
from c2fseg.weights import AS_STORED, INPUT_ORIENTATION

STATUS_OK, STATUS_EMPTY = "ok", "empty"
#: Where the coarse labels for the ROI live (``StageModel.predict(grid=...)``).
COARSE_GRIDS = ("model", "input")


@dataclass
class CascadeOptions:
    """Everything that changes a cascade result (recorded in the run report).

    ``margin_mm``, ``max_liver_gap_mm`` and ``tumor_threshold`` override the coarse and tumor
    stages' settings when set (None: the stages' own); ``keep_largest=False`` skips the organ
    stage's largest-component post-processing.
    """

    margin_mm: tuple[float, float, float] | None = None
    max_liver_gap_mm: float | None = None
    roi_at_coarse_spacing: bool = True
    tumor_threshold: float | None = None
    tumor_must_touch_organ: bool = False
    min_tumor_ml: float = 0.0
    keep_largest: bool = True
    fill_holes: bool = False
    chunk_z: int | None = None
    coarse_grid: str = "model"

    def __post_init__(self) -> None:
        if self.margin_mm is not None:
            self.margin_mm = as_triple(self.margin_mm)
        if self.coarse_grid not in COARSE_GRIDS:
            raise ValueError(f"coarse_grid must be one of {', '.join(COARSE_GRIDS)}, got {self.coarse_grid!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CascadeModels:
    """The loaded stage models: objects with ``StageModel``'s ``stage``, ``spacing``, ``device``
    and ``predict``; ``inference`` (the stage's settings) and ``settings_used`` are optional."""

    coarse: object
    organ: object
    tumors: list = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return torch.device(self.coarse.device)

    @property
    def input_orientation(self) -> str:
        """The voxel order every stage expects (they must agree: they see one volume)."""
        found = {}
        for model in [self.coarse, self.organ, *self.tumors]:
            spec = getattr(model, "spec", None)
            found[getattr(model, "source", "") or model.stage] = getattr(spec, "input_orientation",
                                                                         INPUT_ORIENTATION)
        if len(set(found.values())) > 1:
            listed = ", ".join(f"{name}: {value}" for name, value in found.items())
            raise SettingsError(
                f"the stages expect different voxel orders ({listed}); one cascade feeds all of them "
                "the same volume, so use stages made for the same order (re-import or re-export them)"
            )
        return next(iter(found.values()))


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


def stage_inference(model) -> dict:
    """A model's inference settings; the packaged defaults of its stage if it has none."""
    settings = getattr(model, "inference", None)
    return dict(settings) if settings is not None else inference_defaults(model.stage)


def roi_settings(models: CascadeModels, options: CascadeOptions) -> dict:
    """The ROI rule, margin and liver gap this run uses (options override the coarse stage)."""
    coarse = stage_inference(models.coarse)
    margin = options.margin_mm if options.margin_mm is not None else coarse["roi_margin_mm"]
    gap = options.max_liver_gap_mm if options.max_liver_gap_mm is not None else coarse["max_liver_gap_mm"]
    return {"roi_rule": coarse["roi_rule"], "roi_margin_mm": [float(m) for m in as_triple(margin)],
            "max_liver_gap_mm": float(gap)}


def tumor_settings(models: CascadeModels, options: CascadeOptions) -> dict:
    """How the tumor models combine (the first tumor model's settings; load checks they agree)."""
    tumor = stage_inference(models.tumors[0]) if models.tumors else inference_defaults("tumor")
    threshold = options.tumor_threshold if options.tumor_threshold is not None else tumor["tumor_threshold"]
    return {"tumor_combination": tumor["tumor_combination"], "tumor_threshold": float(threshold)}


def organ_keep_largest(models: CascadeModels, options: CascadeOptions) -> list[int]:
    """Labels of the organ map that keep only their largest component ([] when switched off)."""
    return list(stage_inference(models.organ)["keep_largest"]) if options.keep_largest else []


def clean_coarse(labels: np.ndarray, models: CascadeModels) -> np.ndarray:
    """The coarse stage's own clean-up of its labels before any ROI rule (none by default):
    drop components far from the liver, keep the largest component of some labels, delete some."""
    s = stage_inference(models.coarse)
    distance, keep, delete = (s.get("max_centroid_distance_voxels"), s.get("keep_largest", []),
                              s.get("delete_labels", []))
    if distance is None and not keep and not delete:
        return labels
    return clean_coarse_labels(labels, max_distance=distance, keep_largest_ids=keep, deleted_ids=delete)


def roi_c2fseg(coarse_pred, labels: np.ndarray, spacing, shape, models: CascadeModels,
               options: CascadeOptions, rule: dict) -> RoiBox | None:
    """c2fseg's ROI rule (:mod:`c2fseg.infer.roi`) on whichever grid the coarse labels came back."""
    if getattr(coarse_pred, "grid", "input") == "model":
        return compute_roi_from_grid(labels, coarse_pred.grid_spacing, shape, spacing,
                                     margin_mm=rule["roi_margin_mm"],
                                     max_liver_gap_mm=rule["max_liver_gap_mm"])
    work = tuple(models.coarse.spacing) if options.roi_at_coarse_spacing else None
    return compute_roi(labels, spacing, margin_mm=rule["roi_margin_mm"],
                       max_liver_gap_mm=rule["max_liver_gap_mm"], work_spacing_mm=work)


def roi_published(coarse_pred, labels: np.ndarray, spacing, shape, models: CascadeModels,
                  options: CascadeOptions, rule: dict) -> RoiBox | None:
    """The published rule: the (cleaned) coarse labels resized to the input grid by legacy
    nearest neighbour, their bounding box widened by ``int(margin / spacing)`` voxels per side."""
    if getattr(coarse_pred, "grid", "input") == "model":
        labels = resize_labels_nearest(labels, shape)
    return roi_from_foreground(labels, spacing, rule["roi_margin_mm"])


#: The coarse stage's ``roi_rule`` -> the function that finds the ROI box.
ROI_RULES = {"c2fseg": roi_c2fseg, "published": roi_published}


def find_roi(coarse_pred, spacing, shape, models: CascadeModels, options: CascadeOptions):
    """The ROI box (input voxels) from the coarse prediction, by the coarse stage's ROI rule."""
    rule = roi_settings(models, options)
    labels = clean_coarse(to_numpy(coarse_pred.labels), models)
    return ROI_RULES[rule["roi_rule"]](coarse_pred, labels, spacing, shape, models, options, rule)


def run_stage(model, ct: torch.Tensor, spacing, options: CascadeOptions, notes: list[str], **kw):
    """``model.predict`` plus a note for the report when the model had to fall back (memory)."""
    pred = model.predict(ct, spacing, chunk_z=options.chunk_z, **kw)
    for fallback in (getattr(pred, "info", None) or {}).get("fallbacks", []):
        notes.append(f"{model.stage} stage: {fallback}")
    return pred


def tumor_mean_probability(crop: torch.Tensor, spacing, models: CascadeModels, options: CascadeOptions,
                           notes: list[str], rule: dict):
    """One tumor model: its tumor label; several: mean tumor probability >= threshold."""
    several = len(models.tumors) > 1
    labels, probs = [], []
    for model in models.tumors:
        pred = run_stage(model, crop, spacing, options, notes, prob_label=TUMOR if several else None)
        labels.append(pred.labels)
        probs.append(pred.prob)
    return tumor_mask_from_models(labels, probs, rule["tumor_threshold"])


def tumor_published_reconcile(crop: torch.Tensor, spacing, models: CascadeModels, options: CascadeOptions,
                              notes: list[str], rule: dict):
    """The published combination: each model's label map, folded in order by
    :func:`c2fseg.infer.merge.reconcile_tumor_maps` (order-dependent); tumor where the result is 14."""
    maps = [to_numpy(run_stage(model, crop, spacing, options, notes).labels) for model in models.tumors]
    combined = maps[0]
    for other in maps[1:]:
        combined = reconcile_tumor_maps(combined, other)
    return combined == TUMOR


#: The tumor stage's ``tumor_combination`` -> the function that makes the tumor mask.
TUMOR_RULES = {"mean_probability": tumor_mean_probability, "published_reconcile": tumor_published_reconcile}


def predict_tumor(crop: torch.Tensor, spacing, models: CascadeModels, options: CascadeOptions,
                  notes: list[str]):
    """Tumor mask (numpy bool) of the ROI from one or several tumor models."""
    rule = tumor_settings(models, options)
    mask = TUMOR_RULES[rule["tumor_combination"]](crop, spacing, models, options, notes, rule)
    return to_numpy(mask).astype(bool)


def clean_organs(organ: np.ndarray, models: CascadeModels, options: CascadeOptions) -> np.ndarray:
    """Largest-component and hole-filling post-processing of the organ map, as configured."""
    keep = organ_keep_largest(models, options)
    if keep:
        organ = keep_largest_components(organ, keep)
    if options.fill_holes:
        organ = fill_holes(organ, SINGLE_COMPONENT_ORGANS)
    return organ


def settings_used(models: CascadeModels, options: CascadeOptions) -> dict:
    """Per stage, the settings a run uses: each model's own plus the cascade rules it feeds."""
    def one(model) -> dict:
        used = model.settings_used() if hasattr(model, "settings_used") else {"inference": stage_inference(model)}
        return {"stage": model.stage, **used}

    out = {"coarse": {**one(models.coarse), "cascade": roi_settings(models, options)},
           "organ": {**one(models.organ), "cascade": {"keep_largest": organ_keep_largest(models, options),
                                                      "fill_holes": options.fill_holes}}}
    for i, model in enumerate(models.tumors):
        source = getattr(model, "source", "")
        name = Path(source).name if source else ("tumor" if i == 0 else f"tumor_{i + 1}")
        out[name] = {**one(model), "cascade": tumor_settings(models, options)}
    return out


def segment_volume(
    volume: Volume, models: CascadeModels, options: CascadeOptions | None = None
) -> CaseResult:
    """Run the cascade on one canonical CT volume and return the full-size canonical label map.

    Stages that expect the file's stored voxel order (``input_orientation`` "as-stored", e.g.
    imported nnU-Net models) get the volume in that order, and the result comes back canonical.
    """
    options = options or CascadeOptions()
    if models.input_orientation != AS_STORED:
        return segment_array(volume.array, volume.spacing, models, options)
    geom = volume.geometry
    stored = from_canonical(volume.array, geom)
    result = segment_array(stored, tuple(reversed(geom.spacing)), models, options)
    result.labels = to_canonical(result.labels, geom)
    if result.roi is not None:
        result.roi = RoiBox(*box_to_canonical(result.roi.start, result.roi.stop, geom))
    return result


def segment_array(array: np.ndarray, spacing, models: CascadeModels, options: CascadeOptions) -> CaseResult:
    """The cascade on a [Z, Y, X] HU array in the voxel order the stages expect."""
    spacing = tuple(float(s) for s in spacing)
    shape = tuple(int(n) for n in array.shape)
    timer, notes = StageTimer(models.device), []
    with timer("coarse"):
        ct = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(models.device)
        coarse = run_stage(models.coarse, ct, spacing, options, notes, grid=options.coarse_grid)
    with timer("roi"):
        box = find_roi(coarse, spacing, shape, models, options)
    del coarse
    if box is None:
        empty = np.zeros(shape, dtype=np.uint8)
        reason = "the coarse model found no abdominal organ (no abdomen in view?)"
        return CaseResult(empty, STATUS_EMPTY, None, timer.timings, reason, notes)
    crop = ct[box.slices].contiguous()
    with timer("organ"):
        organ = to_numpy(run_stage(models.organ, crop, spacing, options, notes).labels)
    with timer("tumor"):
        tumor = predict_tumor(crop, spacing, models, options, notes) if models.tumors else None
    with timer("postprocess"):
        organ = clean_organs(organ.astype(np.uint8, copy=False), models, options)
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
        full = paste_roi(merged, box, shape)
    if not full.any():
        reason = "the fine stages found no organ inside the ROI"
        return CaseResult(full, STATUS_EMPTY, box, timer.timings, reason, notes)
    return CaseResult(full, STATUS_OK, box, timer.timings, warnings=notes)
