"""Tests of the synthetic CT phantoms: layout, labels, anatomy, HU, determinism, headers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from c2fseg.data import PhantomError, generate_case, generate_dataset
from c2fseg.data.phantom import allocate_groups, normalise_fractions
from c2fseg.io import read_image, read_labels
from c2fseg.labels import LABELS, ORGANS, TUMOR

SEED = 11


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms")
    summary = generate_dataset(out, 6, SEED, "small", test_cases=2, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def full_cases():
    """Fully labelled small cases (organs + sometimes tumours) from several indices."""
    return [generate_case(SEED, i, "small", tumor=i % 2 == 0) for i in range(20, 26)]


def centroid(labels: np.ndarray, label: int, spacing) -> np.ndarray:
    """Centroid in mm along canonical (z, y, x)."""
    return np.argwhere(labels == label).mean(axis=0) * np.asarray(spacing)


def test_layout_and_dataset_json(dataset):
    out, summary = dataset
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == {name: i for i, name in LABELS.items()}
    assert meta["numTraining"] == 6 and meta["file_ending"] == ".nii.gz"
    assert len(list((out / "imagesTr").glob("phantom_*_0000.nii.gz"))) == 6
    assert len(list((out / "imagesTs").glob("*_0000.nii.gz"))) == 2
    assert len(list((out / "labelsTs").glob("*.nii.gz"))) == 2
    records = json.loads((out / "phantoms.json").read_text())["cases"]
    assert sorted(records) == [f"phantom_{n:04d}" for n in range(1, 9)]
    for rec in records.values():
        assert {"group", "labelled_organs", "tumor", "spacing", "shape", "orientation", "seed"} <= set(rec)
    assert summary["generated"] == 8 and summary["skipped"] == 0


def test_groups_match_label_files(dataset):
    out, _ = dataset
    records = json.loads((out / "phantoms.json").read_text())["cases"]
    groups = {r["group"] for r in records.values() if r["split"] == "train"}
    assert groups == {"G1", "G4", "G5", "G6"}  # at least one of each with 6 cases
    for name, rec in records.items():
        label_file = out / ("labelsTr" if rec["split"] == "train" else "labelsTs") / f"{name}.nii.gz"
        if rec["group"] == "G1":
            assert not label_file.exists()
            continue
        present = set(np.unique(read_labels(label_file).array).tolist()) - {0}
        organs = present - {TUMOR}
        if rec["group"] == "G6":
            assert organs == set(ORGANS) and TUMOR not in present
        elif rec["group"] == "G5":
            assert organs < set(ORGANS) and TUMOR not in present
        elif rec["group"] == "G4":
            assert TUMOR in present
        else:  # test cases: all organs, tumour whenever the image has one
            assert organs == set(ORGANS)
            assert (TUMOR in present) == rec["tumor"]


def test_rerun_is_noop_and_other_settings_refused(dataset, tmp_path):
    out, _ = dataset
    again = generate_dataset(out, 6, SEED, "small", test_cases=2, progress=False)
    assert again["generated"] == 0 and again["skipped"] == 8
    with pytest.raises(PhantomError, match="other settings"):
        generate_dataset(out, 6, SEED + 1, "small", test_cases=2, progress=False)
    (tmp_path / "notes.txt").write_text("someone else's data")
    with pytest.raises(PhantomError, match="not empty"):
        generate_dataset(tmp_path, 1, SEED, progress=False)
    done = generate_dataset(tmp_path, 1, SEED, overwrite=True, progress=False)
    assert done["generated"] == 1 and (tmp_path / "notes.txt").exists()


def test_headers_vary_but_read_back_canonical(dataset):
    out, _ = dataset
    records = json.loads((out / "phantoms.json").read_text())["cases"]
    directions = set()
    for name in ("phantom_0007", "phantom_0008"):
        image = read_image(out / "imagesTs" / f"{name}_0000.nii.gz")
        labels = read_labels(out / "labelsTs" / f"{name}.nii.gz")
        directions.add(tuple(np.round(image.geometry.direction, 3)))
        case = generate_case(SEED, int(name[-4:]), "small", tumor=records[name]["tumor"])
        np.testing.assert_array_equal(image.array, case.image.astype(np.float32))
        np.testing.assert_array_equal(labels.array, case.labels)
        assert image.spacing == pytest.approx(tuple(records[name]["spacing"]))
    for rec in records.values():
        directions.add(rec["orientation"] + str(rec["oblique_deg"]))
    assert len(directions) > 2


def test_all_organs_with_plausible_positions(full_cases):
    for case in full_cases:
        lab, sp = case.labels, case.info["spacing"]
        counts = np.bincount(lab.ravel(), minlength=15)
        assert all(counts[o] >= 150 for o in ORGANS), counts  # learnable at small size
        assert counts[1] == max(counts[o] for o in ORGANS)  # liver is the largest organ
        c = {o: centroid(lab, o, sp) for o in ORGANS}
        z, y, x = 0, 1, 2
        assert c[1][x] < c[3][x]  # liver (patient right) at lower i than spleen
        assert c[2][x] < c[13][x] and c[7][x] < c[8][x] and c[6][x] < c[5][x]
        assert c[2][z] < c[13][z]  # right kidney lower than left
        assert c[2][y] > c[4][y] and c[13][y] > c[4][y]  # kidneys posterior to pancreas
        assert c[7][z] > c[2][z] and c[8][z] > c[13][z]  # adrenals above their kidneys
        assert c[11][y] < c[13][y] and c[11][x] > c[12][x]  # stomach anterior, left of duodenum
        assert c[9][y] < c[2][y] and c[9][x] < c[4][x]  # gallbladder right-anterior
        assert c[10][z] > c[11][z]  # esophagus enters the stomach from above
        # aorta close to the spine: vertebral bone (> 250 HU) lies within ~4.5 cm of its centre
        k = int(round(c[5][z] / sp[0]))
        near = []
        for kk in range(max(0, k - 2), min(lab.shape[0], k + 3)):
            aorta = np.argwhere(lab[kk] == 5)
            bone = np.argwhere(case.image[kk] > 250)
            if len(aorta) and len(bone):
                d = np.linalg.norm((bone - aorta.mean(axis=0)) * sp[1:], axis=1)
                near.append(d.min())
        assert near and min(near) < 45


def test_lungs_above_liver(full_cases):
    for case in full_cases:
        lung = case.image < -700
        body = ndimage.binary_fill_holes(case.image > -400, structure=np.ones((1, 3, 3)))
        lung_k = np.argwhere(lung & body)[:, 0]
        liver_k = np.argwhere(case.labels == 1)[:, 0]
        assert lung_k.size > 0 and np.median(lung_k) > np.median(liver_k)


#: anatomy.md HU ranges; checked with a margin for texture, noise and partial volume (small
#: structures at 5 mm voxels get a wider one). Stomach/duodenum mix wall and lumen: not checked.
HU_RANGE = {1: (100, 130), 2: (135, 200), 3: (110, 130), 4: (90, 110), 5: (170, 240), 6: (115, 150),
            7: (40, 60), 8: (40, 60), 9: (0, 20), 10: (40, 60), 13: (135, 200), 14: (30, 120)}
MARGIN = {7: 20, 8: 20, 9: 15, 10: 20}
HU_EXPECT = {k: (lo - MARGIN.get(k, 12), hi + MARGIN.get(k, 12)) for k, (lo, hi) in HU_RANGE.items()}


def test_hu_within_anatomy_ranges(full_cases):
    for case in full_cases:
        for label, (lo, hi) in HU_EXPECT.items():
            core = ndimage.binary_erosion(case.labels == label, np.ones((1, 3, 3)))
            if label == TUMOR and core.sum() <= 5:
                continue  # tiny lesions: only partial-volume voxels
            if core.sum() <= 5:  # a short esophagus stump: use the whole (small) organ
                core = case.labels == label
            assert core.any(), LABELS[label]
            mean = float(np.median(case.image[core]))
            assert lo <= mean <= hi, (LABELS[label], mean)
        fat = case.image[(case.image > -200) & (case.image < -40)]
        assert fat.size > 0
        noise = case.image[case.labels == 1].std()
        assert 5 < noise < 40  # textured, not flat


def test_tumours_inside_hosts():
    case = generate_case(SEED, 3, "small", tumor=True)
    assert case.info["tumor"] and np.any(case.labels == TUMOR)
    clean = generate_case(SEED, 3, "small", tumor=False)
    assert not np.any(clean.labels == TUMOR)
    hosts = clean.labels[case.labels == TUMOR]
    assert set(np.unique(hosts)) <= {1, 2, 4, 13}
    liver_mean = case.image[(case.labels == 1)].mean()
    for rec in case.info["tumors"]:
        if rec["host"] == 1:
            assert case.image[(case.labels == TUMOR) & (clean.labels == 1)].mean() < liver_mean - 20


def test_deterministic_and_seed_dependent():
    a = generate_case(5, 1, "small", tumor=True)
    b = generate_case(5, 1, "small", tumor=True)
    assert a.image.tobytes() == b.image.tobytes() and a.labels.tobytes() == b.labels.tobytes()
    assert a.geometry == b.geometry
    c = generate_case(6, 1, "small", tumor=True)
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)


def test_small_size_bounds():
    for i in range(1, 9):
        case = generate_case(2, i, "small")
        assert all(40 <= n <= 100 for n in case.image.shape), case.image.shape
        sz, sy, sx = case.info["spacing"]
        assert 4 <= sz <= 8 and 3.9 <= sy <= 6.2 and sy == sx
        assert case.image.dtype == np.int16 and case.labels.dtype == np.uint8


def test_group_allocation():
    for n in (4, 5, 9, 30):
        groups = allocate_groups(n, None, 0)
        assert len(groups) == n and set(groups) == {"G1", "G4", "G5", "G6"}
    many = allocate_groups(200, None, 0)
    assert abs(many.count("G1") / 200 - 0.45) < 0.02
    custom = allocate_groups(10, {"G6": 0.4, "G1": 0.6}, 3)
    assert custom.count("G6") == 4 and custom.count("G1") == 6
    assert allocate_groups(10, None, 1) != allocate_groups(10, None, 2)
    with pytest.raises(PhantomError):
        normalise_fractions({"G7": 1.0})


def test_cli_group_fractions_parser():
    import argparse

    from c2fseg.commands.phantom import group_fractions

    assert group_fractions("G6=0.4,g1=0.6") == {"G6": 0.4, "G1": 0.6}
    for bad in ("G6", "G2=0.5", "G1=x", "G1=0"):
        with pytest.raises(argparse.ArgumentTypeError):
            group_fractions(bad)


@pytest.mark.slow
def test_full_size_case():
    case = generate_case(1, 1, "full", tumor=True)
    assert case.image.shape[1:] == (512, 512) and 100 <= case.image.shape[0] <= 400
    assert 0.6 <= case.info["spacing"][1] <= 0.9
    counts = np.bincount(case.labels.ravel(), minlength=15)
    assert all(counts[o] > 0 for o in ORGANS)
