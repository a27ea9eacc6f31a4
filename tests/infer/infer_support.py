"""Fixtures for the cascade and batch tests: fake stage models with known outputs, tiny CTs.

A fake model reads labels straight from the CT values: a voxel of ``100 * k + 50`` HU is
label ``k`` (1-14), anything below 100 HU is background. So a test builds a CT whose "true"
segmentation it knows, and every stage returns that segmentation on whatever crop it gets.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from c2fseg.infer.cascade import CascadeModels
from c2fseg.io import make_geometry, write_volume

AIR = -1000.0


def hu(label: int) -> float:
    """The CT value fake models read as ``label``."""
    return 100.0 * label + 50.0


def value_labels(ct: torch.Tensor) -> torch.Tensor:
    """Labels encoded in CT values (see module docstring)."""
    lab = torch.div(ct, 100, rounding_mode="floor")
    lab = torch.where((ct >= 100) & (ct < 1500), lab, torch.zeros_like(lab))
    return lab.to(torch.uint8)


class FakeStageModel:
    """Follows the ``StageModel`` interface; records the shape of every input it is given."""

    def __init__(self, stage, label_fn=value_labels, prob_fn=None, spacing=(1.0, 1.0, 1.0),
                 device="cpu", error=None):
        self.stage = stage
        self.spacing = tuple(spacing)
        self.patch_size = (8, 8, 8)
        self.channel_labels = tuple(range(15 if stage == "tumor" else 14))
        self.device = torch.device(device)
        self.label_fn, self.prob_fn, self.error = label_fn, prob_fn, error
        self.calls: list[tuple] = []
        self.grids: list[str] = []

    def predict(self, ct, spacing_zyx, *, prob_label=None, chunk_z=None, grid="input"):
        """Labels on the input grid whatever ``grid`` asks (a prediction without a ``grid``)."""
        ct = torch.as_tensor(ct).to(self.device)
        self.calls.append((tuple(ct.shape), tuple(spacing_zyx), prob_label))
        self.grids.append(grid)
        if self.error is not None:
            raise self.error
        labels = self.label_fn(ct)
        if self.stage != "tumor":  # organ-only models see a (liver) tumor as liver
            labels = torch.where(labels == 14, torch.ones_like(labels), labels)
        prob = None
        if prob_label is not None:
            fn = self.prob_fn or (lambda c: (self.label_fn(c) == prob_label).to(torch.float16))
            prob = fn(ct).to(torch.float16)
        return SimpleNamespace(labels=labels, prob=prob, timings={})


def make_models(n_tumor: int = 1, **kwargs) -> CascadeModels:
    """A coarse, an organ and ``n_tumor`` tumor fake models."""
    return CascadeModels(
        coarse=FakeStageModel("coarse", spacing=(2.0, 2.0, 2.0), **kwargs),
        organ=FakeStageModel("organ", **kwargs),
        tumors=[FakeStageModel("tumor", **kwargs) for _ in range(n_tumor)],
    )


def abdomen_ct(shape=(24, 28, 32)) -> tuple[np.ndarray, np.ndarray]:
    """A canonical CT and its known label map: liver with a tumor, spleen, right kidney.

    Organs sit away from the borders so a small margin gives a box strictly inside the volume.
    """
    labels = np.zeros(shape, dtype=np.uint8)
    labels[8:16, 8:18, 6:14] = 1  # liver (patient right = low x)
    labels[10:13, 11:14, 8:11] = 14  # tumor inside the liver
    labels[9:14, 10:16, 20:25] = 3  # spleen (left = high x)
    labels[6:10, 16:20, 10:13] = 2  # right kidney
    ct = np.full(shape, AIR, dtype=np.float32)
    for lab in np.unique(labels)[1:]:
        ct[labels == lab] = hu(int(lab))
    return ct, labels


@pytest.fixture
def models():
    return make_models()


@pytest.fixture
def write_ct(tmp_path):
    """Write a canonical CT to a file stored in a chosen voxel order; returns (path, geometry)."""

    def write(name, ct, spacing=(2.0, 1.5, 1.0), transpose=(0, 1, 2), flip=(False,) * 3,
              folder: Path | None = None):
        folder = folder or tmp_path / "in"
        folder.mkdir(parents=True, exist_ok=True)
        geom = make_geometry(ct.shape, spacing, (10.0, -20.0, 30.0), transpose, flip)
        path = folder / name
        write_volume(ct, geom, path)
        return path, geom

    return write
