"""Slow: the tiny configuration learns the coarse stage on phantom CTs (c2fseg phantom --size small)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

#: large organs the tiny configuration (1000 iterations, no augmentation) learns reliably
LARGE_ORGANS = (1, 2, 3, 11, 13)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(a, b).sum() / s


def test_tiny_coarse_reaches_reasonable_dice_on_phantoms(tmp_path):
    from train_support import make_splits

    from c2fseg.data.phantom import generate_dataset
    from c2fseg.infer.stage_model import StageModel
    from c2fseg.io import read_image, read_labels
    from c2fseg.train.run import train_stage

    data = tmp_path / "phantoms"
    generate_dataset(data, cases=8, seed=3, size="small", test_cases=2,
                     group_fractions={"G6": 1.0}, progress=False)
    splits = make_splits(data, tmp_path / "splits.json")
    out = train_stage("coarse", data, splits, tmp_path / "work", tmp_path / "weights", config="tiny",
                      device="cpu")
    model = StageModel.load(out, device="cpu")
    scores = []
    for img in sorted((data / "imagesTs").glob("*_0000.nii.gz")):
        ct = read_image(img)
        gt = read_labels(data / "labelsTs" / img.name.replace("_0000", "")).array
        pred = model.predict(ct.array, ct.spacing).labels.cpu().numpy()
        scores += [_dice(pred == o, gt == o) for o in LARGE_ORGANS]
    assert np.mean(scores) > 0.7, f"mean Dice of large organs {np.mean(scores):.3f}"
