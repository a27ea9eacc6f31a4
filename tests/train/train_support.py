"""Tiny synthetic FLARE-style datasets for the training tests (built in tmp folders)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from c2fseg.io.image import make_geometry, write_volume

SHAPE = (32, 48, 48)
SPACING = (2.5, 1.5, 1.5)


def organ_boxes(shape=SHAPE) -> dict[int, tuple[slice, slice, slice]]:
    """13 non-overlapping boxes (one per organ) inside the middle slices of ``shape``."""
    z0, z1 = shape[0] // 4, 3 * shape[0] // 4
    boxes = {}
    for i in range(13):
        r, c = divmod(i, 4)
        y = 4 + r * 10
        x = 4 + c * 10
        h = 4 + (i % 3) * 2
        boxes[i + 1] = (slice(z0 + (i % 2), z1 - (i % 3)), slice(y, y + h), slice(x, x + 8))
    return boxes


def make_case(seed: int, organs=range(1, 14), tumor: bool = False, shape=SHAPE):
    """A canonical CT (HU) and label map: organs as boxes of distinct HU, optional tumor."""
    rng = np.random.default_rng(seed)
    ct = np.full(shape, -900.0, dtype=np.float32)
    ct[:, 2:-2, 2:-2] = 0.0  # body
    lab = np.zeros(shape, dtype=np.uint8)
    for organ, box in organ_boxes(shape).items():
        ct[box] = 40.0 + 15.0 * organ
        if organ in organs:
            lab[box] = organ
    if tumor:
        box = organ_boxes(shape)[1]
        zc = (box[0].start + box[0].stop) // 2
        yc = box[1].start + 2
        xc = box[2].start + 2
        ct[zc - 2:zc + 2, yc:yc + 3, xc:xc + 3] = 20.0
        lab[zc - 2:zc + 2, yc:yc + 3, xc:xc + 3] = 14
    ct += rng.normal(0, 10, shape).astype(np.float32)
    return np.round(ct).astype(np.float32), lab


#: stored voxel orders used for the cases: canonical, transposed + flipped (like many scanners)
ORIENTATIONS = [((0, 1, 2), (False, False, False)), ((2, 1, 0), (False, True, True))]


def write_case(root: Path, case: str, ct, lab, k: int, label: bool = True) -> None:
    transpose, flip = ORIENTATIONS[k % len(ORIENTATIONS)]
    geom = make_geometry(ct.shape, SPACING, (10.0, -20.0, 5.0), transpose=transpose, flip=flip)
    write_volume(ct.astype(np.int16), geom, root / "imagesTr" / f"{case}_0000.nii.gz")
    if label:
        write_volume(lab, geom, root / "labelsTr" / f"{case}.nii.gz")


def make_dataset(root: Path, full: int = 6, tumor: int = 0, partial: int = 0, unlabelled: int = 0) -> Path:
    """Write a FLARE-style folder: fully labelled (G6), tumor (G4, partial organs), partial (G5)."""
    k = 0
    for i in range(full):
        ct, lab = make_case(k)
        write_case(root, f"full_{i:02d}", ct, lab, k)
        k += 1
    for i in range(tumor):
        ct, lab = make_case(k, organs=(1, 2, 3), tumor=True)
        write_case(root, f"tumor_{i:02d}", ct, lab, k)
        k += 1
    for i in range(partial):
        ct, lab = make_case(k, organs=(1, 5, 6))
        write_case(root, f"part_{i:02d}", ct, lab, k)
        k += 1
    for i in range(unlabelled):
        ct, lab = make_case(k)
        write_case(root, f"unlab_{i:02d}", ct, lab, k, label=False)
        k += 1
    (root / "dataset.json").write_text(json.dumps({"name": "synthetic"}))
    return root


def write_pseudo_labels(data: Path, out: Path) -> Path:
    """Perfect organ pseudo labels (organs 1-13, no tumor) for every image in ``data``."""
    out.mkdir(parents=True, exist_ok=True)
    for img in sorted((data / "imagesTr").glob("*_0000.nii.gz")):
        case = img.name[: -len("_0000.nii.gz")]
        image = sitk.ReadImage(str(img))
        from c2fseg.io.image import geometry_of

        geom = geometry_of(image)
        shape = geom.canonical_shape
        lab = np.zeros(shape, np.uint8)
        for organ, box in organ_boxes(shape).items():
            lab[box] = organ
        write_volume(lab, geom, out / f"{case}.nii.gz")
    return out


def make_splits(data: Path, path: Path) -> Path:
    from c2fseg.data.groups import build_splits, write_splits

    return write_splits(build_splits(data, folds=2, seed=0, workers=1), path)


@pytest.fixture
def tiny_data(tmp_path: Path) -> tuple[Path, Path]:
    """6 fully labelled cases of 32x48x48 and their splits.json."""
    data = make_dataset(tmp_path / "data", full=6)
    return data, make_splits(data, tmp_path / "splits.json")
