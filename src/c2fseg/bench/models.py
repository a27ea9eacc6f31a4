"""The stage models a benchmark runs: random-weight production/thin networks or trained ones.

Each model is wrapped in :class:`TimedModel`, which keeps the per-call timings that
``segment_volume`` does not return (resample in, sliding window, resample out) and, for a fixed
ROI, replaces the coarse labels by a map whose ROI is the wanted box (the coarse network still
runs in full, so its time is real).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from c2fseg.bench.plans import CONFIGURATION, bench_plans, stage_dataset_json, with_patch
from c2fseg.weights import DATASET_NAME, PLANS_NAME


class TimedModel:
    """A StageModel look-alike that records each ``predict`` call's timings."""

    def __init__(self, model, name: str) -> None:
        self.model = model
        self.name = name
        self.calls: list[dict] = []
        self.roi_labels: np.ndarray | None = None  # set per case for a fixed ROI (coarse only)

    def __getattr__(self, key):
        if key == "model":  # not set yet (copy/pickle): avoid infinite recursion
            raise AttributeError(key)
        return getattr(self.model, key)

    def predict(self, ct, spacing_zyx, **kwargs):
        pred = self.model.predict(ct, spacing_zyx, **kwargs)
        self.calls.append({k: float(v) for k, v in pred.timings.items()})
        if self.roi_labels is not None:
            # the model ran for real (timed, on whichever grid it was asked for); its labels
            # are replaced by the fixed full-size ROI map, so the prediction is on the input grid
            if tuple(self.roi_labels.shape) != tuple(ct.shape[-3:]):
                raise ValueError(f"fixed ROI map {self.roi_labels.shape} != volume {tuple(ct.shape[-3:])}")
            pred.labels = torch.from_numpy(self.roi_labels).to(pred.labels.device)
            if getattr(pred, "grid", "input") == "model":
                pred.grid, pred.grid_spacing = "input", tuple(float(s) for s in spacing_zyx)
        return pred

    def summed(self, key: str) -> float:
        """Sum of one timing over the recorded calls."""
        return float(sum(c.get(key, 0.0) for c in self.calls))


@dataclass
class StageSource:
    """Where a stage network came from (for the baseline and the JSON)."""

    plans: dict
    dataset_json: dict
    configuration: str


@dataclass
class BenchModels:
    """The wrapped stage models plus their plans."""

    coarse: TimedModel
    organ: TimedModel
    tumors: list[TimedModel]
    sources: dict[str, StageSource] = field(default_factory=dict)
    kind: str = "production"

    @property
    def wrappers(self) -> list[TimedModel]:
        return [self.coarse, self.organ, *self.tumors]

    def cascade_models(self):
        from c2fseg.infer.cascade import CascadeModels

        return CascadeModels(coarse=self.coarse, organ=self.organ, tumors=list(self.tumors))

    def clear(self) -> None:
        for w in self.wrappers:
            w.calls.clear()

    def describe(self) -> dict:
        """Per stage: the settings it runs with (spacing, patch, inference settings, device,
        precision), its network's features per stage and parameter count."""
        out = {}
        for w in self.wrappers:
            source = self.sources[w.name]
            conf = source.plans["configurations"].get(source.configuration, {})
            kw = conf.get("architecture", {}).get("arch_kwargs", {})
            used = w.settings_used()
            out[w.name] = {
                "spacing_zyx": used["spacing"],
                "patch_zyx": used["patch_size"],
                "step": w.step,
                "weighting": w.weighting,
                "mirror": w.mirror,
                "inference": used["inference"],
                "features_per_stage": kw.get("features_per_stage"),
                "parameters": int(sum(p.numel() for p in w.network.parameters())),
                "device": used["device"],
                "precision": used["precision"],
            }
        return out


def random_models(kind: str, device, *, seed: int = 0, precision: str = "auto",
                  patch: tuple[int, int, int] | None = None, width: int | None = None) -> BenchModels:
    """coarse, organ and one tumor model with seeded random weights (``kind`` production|thin)."""
    from c2fseg.bench.plans import production_plans
    from c2fseg.infer.stage_model import StageModel

    wrapped, sources = {}, {}
    for i, stage in enumerate(("coarse", "organ", "tumor")):
        plans = bench_plans(stage, kind)
        if width is not None:
            conf = plans["configurations"][CONFIGURATION]
            plans = production_plans(stage, width, spacing=conf["spacing"], patch=patch or conf["patch_size"])
        elif patch is not None:
            plans = with_patch(plans, patch)
        dataset_json = stage_dataset_json(stage)
        torch.manual_seed(seed + i)
        model = StageModel.from_plans(plans, dataset_json, CONFIGURATION, stage, None, device,
                                      precision=precision)
        wrapped[stage] = TimedModel(model, stage)
        sources[stage] = StageSource(plans, dataset_json, CONFIGURATION)
    return BenchModels(wrapped["coarse"], wrapped["organ"], [wrapped["tumor"]], sources, kind)


def trained_models(weights_dir: str | Path, device, *, precision: str = "auto") -> BenchModels:
    """Trained stage models from a weights folder (every tumor model found)."""
    from c2fseg.infer.model_setup import load_models

    loaded = load_models(Path(weights_dir), str(device), precision=precision)
    sources = {}
    tumors = []
    for i, model in enumerate([loaded.coarse, loaded.organ, *loaded.tumors]):
        folder = Path(model.manifest["stage_dir"])
        name = model.stage if i < 2 else ("tumor" if i == 2 else f"tumor_{i - 1}")
        sources[name] = StageSource(json.loads((folder / PLANS_NAME).read_text(encoding="utf-8")),
                                    json.loads((folder / DATASET_NAME).read_text(encoding="utf-8")),
                                    model.manifest["configuration"])
        if i >= 2:
            tumors.append(TimedModel(model, name))
    return BenchModels(TimedModel(loaded.coarse, "coarse"), TimedModel(loaded.organ, "organ"), tumors,
                       sources, f"weights:{weights_dir}")
