"""Group assignment G1-G6, problem cases, k-fold properties and the splits file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from c2fseg.cli import main
from c2fseg.data.groups import (
    build_splits,
    groups_for,
    kfold,
    label_values,
    load_splits,
    scan_case,
    write_splits,
)
from c2fseg.labels import ORGANS, TUMOR
from real_data import CT, LABELS, real_dir

SHAPE = (8, 10, 12)  # z, y, x


def write(path: Path, arr: np.ndarray, spacing=(0.8, 0.8, 2.0), origin=(0.0, 0.0, 0.0)) -> Path:
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def label_with(values, dtype=np.uint8) -> np.ndarray:
    arr = np.zeros(SHAPE, dtype)
    flat = arr.reshape(-1)
    for i, v in enumerate(values):
        flat[i * 3] = v
    return arr


def add_case(root: Path, case: str, labels=None, **label_header) -> None:
    write(root / "imagesTr" / f"{case}_0000.nii.gz", np.full(SHAPE, -100, np.int16))
    if labels is not None:
        write(root / "labelsTr" / f"{case}.nii.gz", label_with(labels), **label_header)


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    add_case(root, "g1")
    add_case(root, "g4", [1, 2, TUMOR])
    add_case(root, "g5", [1, 3, 11])
    add_case(root, "g6", ORGANS)
    add_case(root, "g6b", ORGANS)
    add_case(root, "empty", [])  # label file with background only: G1 (nothing annotated)
    add_case(root, "values", [1, 15])
    add_case(root, "spacing", [1, 2], spacing=(0.8, 0.8, 2.5))
    add_case(root, "origin", [1, 2], origin=(0.0, 0.0, 5.0))
    write(root / "labelsTr" / "orphan.nii.gz", label_with([1]))
    (root / "labelsTr" / "broken.nii.gz").write_bytes(b"not an image")
    write(root / "imagesTr" / "broken_0000.nii.gz", np.zeros(SHAPE, np.int16))
    write(root / "imagesTr" / "g1_0001.nii.gz", np.zeros(SHAPE, np.int16))  # 2nd channel: ignored
    (root / "imagesTr" / "notes.txt").write_text("ignored")
    return root


@pytest.mark.parametrize(
    "present, expected",
    [
        (None, ["G1"]),
        ([0, 1, TUMOR], ["G2", "G4"]),
        ([0, *ORGANS, TUMOR], ["G2", "G4"]),
        ([0, *ORGANS], ["G2", "G3", "G6"]),
        ([0, *ORGANS[:-1]], ["G2", "G3", "G5"]),
        ([0], ["G1"]),  # background only: nothing annotated
        ([], ["G1"]),  # label file without voxels
    ],
)
def test_groups_for(present, expected):
    assert groups_for(present) == expected


def test_scan_case(dataset):
    info = scan_case(dataset / "imagesTr/g4_0000.nii.gz", dataset / "labelsTr/g4.nii.gz")
    assert (info.case, info.group, info.problem) == ("g4", "G4", None)
    assert info.labels_present == [0, 1, 2, TUMOR] and info.annotated == [1, 2]
    info = scan_case(dataset / "imagesTr/g1_0000.nii.gz", None)
    assert (info.case, info.groups, info.labels_present) == ("g1", ["G1"], [])


def test_scan_case_float_labels(tmp_path):
    img = write(tmp_path / "i.nii.gz", np.zeros(SHAPE, np.int16))
    whole = write(tmp_path / "whole.nii.gz", label_with([2.0, 14.0], np.float32))
    info = scan_case(img, whole)
    assert info.problem is None and info.labels_present == [0, 2, 14]
    half = write(tmp_path / "half.nii.gz", label_with([2.5], np.float32))
    info = scan_case(img, half)
    assert info.problem == "label_values" and "whole numbers" in info.reason


def test_label_values_in_chunks():
    arr = np.zeros((4, 5, 6), np.int16)
    arr[0, 0, 0], arr[3, 4, 5], arr[2, 2, 2] = 5, 14, 1
    assert label_values(arr, Path("l.nii"), chunk=7) == [0, 1, 5, 14]
    arr[1, 1, 1] = -1
    with pytest.raises(ValueError, match="outside 0-14: -1"):
        label_values(arr, Path("l.nii"), chunk=7)


def test_build_splits_groups_and_problems(dataset):
    splits = build_splits(dataset, folds=2, seed=0, workers=1)
    cases = splits["cases"]
    assert {c: cases[c]["group"] for c in cases} == {
        "g1": "G1", "g4": "G4", "g5": "G5", "g6": "G6", "g6b": "G6", "empty": "G1",
    }
    assert cases["empty"]["groups"] == ["G1"] and cases["empty"]["label"] is None
    assert cases["empty"]["labels_present"] == [0] and cases["empty"]["annotated"] == []
    assert "only background" in cases["empty"]["unlabelled_reason"]
    assert "empty.nii.gz" in cases["empty"]["unlabelled_reason"]
    assert cases["g1"]["unlabelled_reason"] is None and cases["g5"]["unlabelled_reason"] is None
    assert any("only background" in w and "empty" in w for w in splits["warnings"])
    assert cases["g5"]["annotated"] == [1, 3, 11]
    assert cases["g6"]["annotated"] == list(ORGANS)
    assert cases["g4"]["label"] == "labelsTr/g4.nii.gz" and cases["g1"]["label"] is None
    assert splits["counts"] == {"G1": 2, "G2": 4, "G3": 3, "G4": 1, "G5": 1, "G6": 2,
                                "cases": 6, "problems": 5}
    problems = {p["case"]: p["kind"] for p in splits["problems"]}
    assert problems == {
        "values": "label_values",
        "spacing": "geometry_mismatch",
        "origin": "geometry_mismatch",
        "orphan": "label_without_image",
        "broken": "unreadable_label",
    }
    reasons = {p["case"]: p["reason"] for p in splits["problems"]}
    assert "15" in reasons["values"] and "spacing" in reasons["spacing"]
    stages = splits["stages"]
    assert stages["coarse"]["cases"] == ["g6", "g6b"]
    assert stages["tumor"]["cases"] == ["g4"]
    assert sorted(stages["organ"]["cases"]) == sorted(cases)
    assert any("tumor" in w for w in splits["warnings"])  # 1 case < 2 folds
    assert splits["data_dir"] == str(dataset.resolve()) and splits["seed"] == 0


def test_bad_image_name_and_unreadable_image(tmp_path):
    root = tmp_path / "d"
    add_case(root, "ok", [1])
    write(root / "imagesTr" / "noschannel.nii.gz", np.zeros(SHAPE, np.int16))
    (root / "imagesTr" / "bad_0000.nii.gz").write_bytes(b"junk")
    splits = build_splits(root, folds=2, workers=1)
    kinds = {p["case"]: p["kind"] for p in splits["problems"]}
    assert kinds == {"noschannel": "bad_name", "bad": "unreadable_image"}
    assert list(splits["cases"]) == ["ok"]


def test_two_files_for_one_case_are_a_duplicate_problem(tmp_path):
    root = tmp_path / "d"
    add_case(root, "ok", [1])
    add_case(root, "twice", [1])
    write(root / "imagesTr" / "twice_0000.mha", np.zeros(SHAPE, np.int16))
    add_case(root, "twolabels", [1])
    write(root / "labelsTr" / "twolabels.nrrd", label_with([1]))
    splits = build_splits(root, folds=2, workers=1)
    problems = {p["case"]: (p["kind"], p["reason"]) for p in splits["problems"]}
    assert set(problems) == {"twice", "twolabels"} and list(splits["cases"]) == ["ok"]
    assert problems["twice"] == ("duplicate", f"twice_0000.nii.gz and twice_0000.mha in "
                                 f"{root.resolve() / 'imagesTr'} are the same case; keep one")
    assert problems["twolabels"][0] == "duplicate" and "twolabels.nrrd" in problems["twolabels"][1]


def test_truncated_label_file_is_unreadable_not_scanned(tmp_path):
    """Read through c2fseg.io: a label file cut short is refused (ITK alone reads such files)."""
    img = write(tmp_path / "i_0000.nii.gz", np.zeros(SHAPE, np.int16))
    lab = write(tmp_path / "i.nii", label_with(ORGANS))  # uncompressed: ITK fills the gap with 0
    lab.write_bytes(lab.read_bytes()[:-200])
    info = scan_case(img, lab)
    assert info.problem == "unreadable_label" and "truncated" in info.reason
    assert str(lab) in info.reason and info.groups == []


def test_label_in_another_axis_order_is_a_geometry_mismatch(tmp_path):
    """The split compares stored headers with the one tolerance; a transposed label differs."""
    img = write(tmp_path / "i_0000.nii.gz", np.zeros(SHAPE, np.int16))
    lab = write(tmp_path / "i.nii.gz", np.ascontiguousarray(label_with([1]).transpose(2, 1, 0)))
    info = scan_case(img, lab)
    assert info.problem == "geometry_mismatch" and "size (12, 10, 8) vs (8, 10, 12)" in info.reason


def test_parallel_scan_matches_serial(dataset):
    assert build_splits(dataset, folds=2, workers=2) == build_splits(dataset, folds=2, workers=1)


def test_dead_worker_fails_only_its_case(dataset, monkeypatch, make_breaking_pool):
    import c2fseg.parallel
    from c2fseg.data.groups import SCAN_FAILED

    serial = build_splits(dataset, folds=2, workers=1)
    monkeypatch.setattr(c2fseg.parallel, "ProcessPoolExecutor", make_breaking_pool("g5"))
    splits = build_splits(dataset, folds=2, workers=2)
    # cases after g5 were cut off and re-run alone: same records as a serial scan
    assert splits["cases"] == {c: r for c, r in serial["cases"].items() if c != "g5"}
    failed = [p for p in splits["problems"] if p["kind"] == SCAN_FAILED]
    assert [p["case"] for p in failed] == ["g5"]
    assert "g5.nii.gz" in failed[0]["reason"] and "worker process died" in failed[0]["reason"]


def names(n: int) -> list[str]:
    return [f"case{i:04d}" for i in range(n)]


@pytest.mark.parametrize("n, folds", [(23, 5), (5, 5), (3, 5), (40, 3)])
def test_kfold_partition_and_balance(n, folds):
    cases = names(n)
    strata = {c: "G1" for c in cases}
    split = kfold(cases, strata, folds, seed=0, stage="organ")
    assert len(split) == folds
    vals = [c for f in split for c in f["val"]]
    assert sorted(vals) == cases  # each case in exactly one val fold
    sizes = [len(f["val"]) for f in split]
    assert max(sizes) - min(sizes) <= 1
    for f in split:
        assert set(f["train"]) == set(cases) - set(f["val"])


def test_kfold_deterministic_and_seeded():
    cases = names(50)
    strata = {c: "G1" for c in cases}
    a = kfold(cases, strata, 5, seed=0, stage="organ")
    assert a == kfold(list(reversed(cases)), strata, 5, seed=0, stage="organ")
    assert a != kfold(cases, strata, 5, seed=1, stage="organ")


def test_kfold_spreads_each_group():
    cases = names(30)
    strata = {c: ("G1" if i < 20 else "G6") for i, c in enumerate(cases)}
    for fold in kfold(cases, strata, 5, seed=3, stage="organ"):
        assert Counter(strata[c] for c in fold["val"]) == {"G1": 4, "G6": 2}


def test_write_load_roundtrip_and_validation(dataset, tmp_path):
    splits = build_splits(dataset, folds=2, workers=1)
    path = write_splits(splits, tmp_path / "out" / "splits.json")
    assert load_splits(path) == splits
    assert not list(path.parent.glob(".*part"))  # no temp file left behind

    broken = json.loads(path.read_text())
    broken["stages"]["organ"]["folds"][0]["val"].append("g1")  # g1 now in two val folds
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="exactly once"):
        load_splits(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_splits(path)
    with pytest.raises(FileNotFoundError, match="c2fseg split"):
        load_splits(tmp_path / "nope.json")


def test_missing_images_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="imagesTr"):
        build_splits(tmp_path, workers=1)


def test_cli_split(dataset, tmp_path, capsys):
    out = tmp_path / "splits.json"
    code = main(["split", str(dataset), "-o", str(out), "--folds", "2", "--seed", "7",
                 "--workers", "1"])
    assert code == 3  # finished, but problem cases were found
    printed = capsys.readouterr().out
    assert "G6: 2" in printed and "problem: values: label_values" in printed
    assert load_splits(out)["seed"] == 7
    assert main(["split", str(dataset), "-o", str(dataset / "s.json")]) == 2
    assert not (dataset / "s.json").exists()
    with pytest.raises(SystemExit):
        main(["split", str(dataset), "-o", str(out), "--folds", "1"])


REAL = real_dir()


@pytest.mark.real_data(CT, LABELS)
def test_scan_real_case():
    info = scan_case(REAL / "ts_example_ct.nii.gz", REAL / "ts_example_ct_labels.nii.gz")
    assert info.problem is None, info.reason
    assert info.groups == ["G2", "G3", "G5"]  # no esophagus (10) in these labels
    assert info.annotated == [o for o in ORGANS if o != 10]
