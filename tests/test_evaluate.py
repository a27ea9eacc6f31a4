"""Folder evaluation: case matching, geometry checks, missing/failed cases, JSON/CSV, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from c2fseg.cli import main
from c2fseg.evaluate import evaluate_folders, format_summary, score_files
from c2fseg.labels import ORGANS
from real_data import LABELS, real_path

SPACING_XYZ = (0.8, 0.9, 2.5)
LIVER, SPLEEN, TUMOR = 1, 3, 14


def write(path: Path, arr: np.ndarray, spacing=SPACING_XYZ, origin=(0.0, 0.0, 0.0), direction=None):
    """Write a [z, y, x] array as a label file with the given header."""
    image = sitk.GetImageFromArray(arr.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def labels_map() -> np.ndarray:
    arr = np.zeros((8, 10, 12), np.uint8)
    arr[1:5, 2:7, 1:5] = LIVER
    arr[2:6, 3:8, 7:11] = SPLEEN
    arr[3:5, 4:6, 2:4] = TUMOR
    return arr


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """gt: a, b, c, d; pred: a (perfect), b (spleen missed), c (wrong spacing), e (no gt)."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    truth = labels_map()
    for case in "abcd":
        write(gt_dir / f"{case}.nii.gz", truth)
    write(pred_dir / "a.nii.gz", truth)
    write(pred_dir / "b.nii.gz", np.where(truth == SPLEEN, 0, truth))
    write(pred_dir / "c.nii.gz", truth, spacing=(0.8, 0.9, 3.0))
    write(pred_dir / "e.nii.gz", truth)
    (pred_dir / "run.json").write_text("{}")  # not an image: ignored
    return pred_dir, gt_dir


def test_evaluate_folders_report(folders, tmp_path):
    pred_dir, gt_dir = folders
    out_json, out_csv = tmp_path / "out" / "metrics.json", tmp_path / "out" / "metrics.csv"
    report = evaluate_folders(pred_dir, gt_dir, out_json, out_csv, workers=1)

    assert json.loads(out_json.read_text()) == report
    assert report["missing"] == {"predictions": ["d"], "ground_truth": ["e"]}
    assert [f["case"] for f in report["failed"]] == ["c"]
    assert "spacing" in report["failed"][0]["reason"]
    assert report["failed"][0]["scored_as_empty"] is True
    assert sorted(report["cases"]) == ["a", "b", "c", "d"]  # wrong-grid c scored like missing d

    a, b, c, d = (report["cases"][k] for k in "abcd")
    assert c == d  # a prediction on the wrong grid scores exactly like no prediction
    assert a["liver"] == {"dsc": 1.0, "nsd": 1.0}
    assert a["gallbladder"] == {"dsc": 1.0, "nsd": 1.0}  # absent on both sides
    assert b["spleen"] == {"dsc": 0.0, "nsd": 0.0}
    assert d["liver"] == {"dsc": 0.0, "nsd": 0.0}  # missing prediction scored as empty
    assert d["duodenum"] == {"dsc": 1.0, "nsd": 1.0}

    spleen = report["per_label"]["spleen"]
    assert spleen["n"] == 4 and spleen["dsc"] == pytest.approx(1 / 4)
    organ_means = [report["per_label"][n]["dsc"] for n in report["per_label"] if n != "tumor"]
    assert len(organ_means) == len(ORGANS)
    assert report["means"]["organ_dsc"] == pytest.approx(np.mean(organ_means))
    assert report["means"]["tumor_dsc"] == pytest.approx(2 / 4)

    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 4 * 14
    d_liver = next(r for r in rows if r["case"] == "d" and r["label"] == "liver")
    assert d_liver["missing_prediction"] == "1" and float(d_liver["dsc"]) == 0.0
    c_liver = next(r for r in rows if r["case"] == "c" and r["label"] == "liver")
    assert c_liver["failed_prediction"] == "1" and c_liver["missing_prediction"] == "0"
    assert float(c_liver["dsc"]) == 0.0

    table = format_summary(report)
    assert "spleen" in table and "25.00" in table and "missing prediction: d" in table


def test_label_subset(folders, tmp_path):
    pred_dir, gt_dir = folders
    report = evaluate_folders(pred_dir, gt_dir, tmp_path / "m.json", workers=1, labels=[TUMOR])
    assert list(report["per_label"]) == ["tumor"]
    assert report["means"]["organ_dsc"] is None and report["means"]["organs_scored"] == 0
    with pytest.raises(ValueError):
        evaluate_folders(pred_dir, gt_dir, tmp_path / "m.json", labels=[0])


@pytest.mark.parametrize(
    "header, problem",
    [
        ({"origin": (0.0, 0.0, 1.0)}, "origin"),
        ({"direction": (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)}, "direction"),
        ({"origin": (0.0, 0.0, 0.00005)}, None),  # within 1e-4: accepted
        ({"origin": (0.0, 0.0, 0.00009)}, None),  # just below c2fseg.io's tolerance
        ({"origin": (0.0, 0.0, 0.00011)}, "origin"),  # just above it
    ],
)
def test_geometry_check(tmp_path, header, problem):
    truth = labels_map()
    gt = write(tmp_path / "gt.nii.gz", truth)
    pred = write(tmp_path / "pred.nii.gz", truth, **header)
    if problem is None:
        assert score_files(pred, gt)[LIVER]["dsc"] == 1.0
    else:
        with pytest.raises(ValueError, match=problem):
            score_files(pred, gt)


def test_broken_predictions_score_like_missing_ones(tmp_path):
    """Wrong grid, out-of-range values, unreadable file, duplicate: 0 like a missing prediction,
    and listed as failed with the reason."""
    truth = labels_map()
    for case in ("a", "b", "c", "d", "e", "ok"):
        write(tmp_path / "gt" / f"{case}.nii.gz", truth)
    write(tmp_path / "pred" / "a.nii.gz", truth[:, :, :-1])  # wrong grid
    bad = truth.copy()
    bad[0, 0, 0] = 20
    write(tmp_path / "pred" / "b.nii.gz", bad)  # label value outside 0-14
    (tmp_path / "pred" / "c.nii.gz").write_bytes(b"not a nifti at all")  # unreadable
    write(tmp_path / "pred" / "d.nii.gz", truth)  # d twice: ambiguous
    write(tmp_path / "pred" / "d.nrrd", truth)
    write(tmp_path / "pred" / "ok.nii.gz", truth)
    # e: missing
    report = evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "m.json", workers=1)
    reasons = {f["case"]: f["reason"] for f in report["failed"]}
    assert sorted(reasons) == ["a", "b", "c", "d"]
    assert "size" in reasons["a"] and "b.nii.gz" in reasons["b"] and "c.nii.gz" in reasons["c"]
    assert "two files" in reasons["d"]
    assert all(f["scored_as_empty"] for f in report["failed"])
    assert report["missing"]["predictions"] == ["e"]
    assert report["n_scored"] == 6
    cases = report["cases"]
    for case in "abcd":
        assert cases[case] == cases["e"], case
        assert cases[case]["liver"] == {"dsc": 0.0, "nsd": 0.0}
    assert cases["ok"]["liver"] == {"dsc": 1.0, "nsd": 1.0}
    assert report["per_label"]["liver"]["dsc"] == pytest.approx(1 / 6)


def test_unreadable_ground_truth_is_failed_and_not_scored(tmp_path):
    truth = labels_map()
    write(tmp_path / "gt" / "a.nii.gz", truth)
    (tmp_path / "gt" / "b.nii.gz").write_bytes(b"\x1f\x8b broken")
    write(tmp_path / "pred" / "a.nii.gz", truth)
    write(tmp_path / "pred" / "b.nii.gz", truth)
    report = evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "m.json", workers=1)
    assert [(f["case"], f["scored_as_empty"]) for f in report["failed"]] == [("b", False)]
    assert "ground truth" in report["failed"][0]["reason"]
    assert sorted(report["cases"]) == ["a"]


def test_dead_worker_keeps_finished_results_and_reruns_the_rest(tmp_path, monkeypatch, make_breaking_pool):
    import c2fseg.parallel

    truth = labels_map()
    for case in ("a", "b", "c_poison", "d", "e"):
        write(tmp_path / "gt" / f"{case}.nii.gz", truth)
        write(tmp_path / "pred" / f"{case}.nii.gz", truth)
    monkeypatch.setattr(c2fseg.parallel, "ProcessPoolExecutor", make_breaking_pool("poison"))
    report = evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "m.json", workers=2)
    # a, b finished before the crash; d, e were cut off and re-run alone; the poison case fails
    assert sorted(report["cases"]) == ["a", "b", "d", "e"]
    assert all(report["cases"][c]["liver"]["dsc"] == 1.0 for c in report["cases"])
    assert [f["case"] for f in report["failed"]] == ["c_poison"]
    assert "worker process died" in report["failed"][0]["reason"]
    assert report["failed"][0]["scored_as_empty"] is False


def test_api_refuses_output_inside_input_folders(folders, tmp_path):
    from c2fseg.io import FolderError

    pred_dir, gt_dir = folders
    for out_json, out_csv in ((pred_dir / "m.json", None), (gt_dir / "sub" / "m.json", None),
                              (tmp_path / "m.json", gt_dir / "m.csv")):
        with pytest.raises(FolderError, match="inside the input folder"):
            evaluate_folders(pred_dir, gt_dir, out_json, out_csv, workers=1)
        assert not out_json.exists() and (out_csv is None or not out_csv.exists())
    assert not (gt_dir / "sub").exists()


def test_cli_end_to_end(folders, tmp_path, capsys):
    pred_dir, gt_dir = folders
    out_json, out_csv = tmp_path / "m.json", tmp_path / "m.csv"
    code = main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "-o", str(out_json),
                 "--csv", str(out_csv), "--workers", "2", "--labels", "liver", "3", "tumor"])
    assert code == 3  # a case is missing and one failed
    printed = capsys.readouterr().out
    assert "liver" in printed and "spleen" in printed and "missing prediction: d" in printed
    report = json.loads(out_json.read_text())
    assert set(report["labels"].values()) == {"liver", "spleen", "tumor"}
    assert report["cases"]["a"]["spleen"]["dsc"] == 1.0
    assert out_csv.read_text().startswith("case,label_id,label,dsc,nsd")


def test_cli_all_good_exit_zero(tmp_path, capsys):
    truth = labels_map()
    write(tmp_path / "gt" / "a.nii.gz", truth)
    write(tmp_path / "pred" / "a.nii.gz", truth)
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "-o", str(tmp_path / "m.json")])
    assert code == 0
    assert "100.00" in capsys.readouterr().out


def test_cli_refuses_output_inside_input(folders, capsys):
    pred_dir, gt_dir = folders
    code = main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir),
                 "-o", str(pred_dir / "metrics.json")])
    assert code == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert not (pred_dir / "metrics.json").exists()


def test_cli_rejects_unknown_label(folders, capsys):
    pred_dir, gt_dir = folders
    with pytest.raises(SystemExit):
        main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "-o", "x.json",
              "--labels", "kidneys"])
    assert "not a FLARE23 label" in capsys.readouterr().err


REAL_LABELS = real_path(LABELS)


@pytest.mark.real_data(LABELS)
def test_real_labels_shifted_one_slice(tmp_path):
    """Real anatomy, RAS header, 3 mm voxels: a 1-slice axial shift is 3 mm."""
    from c2fseg.io import read_labels, write_labels

    vol = read_labels(REAL_LABELS)
    write_labels(vol.array, vol.geometry, tmp_path / "gt" / "ct.nii.gz")
    shifted = np.zeros_like(vol.array)
    shifted[1:] = vol.array[:-1]  # one slice toward superior, no wrap-around
    write_labels(shifted, vol.geometry, tmp_path / "pred" / "ct.nii.gz")
    report = evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "m.json", workers=1)
    scores = report["cases"]["ct"]
    assert report["failed"] == [] and report["missing"]["predictions"] == []
    assert scores["esophagus"] == {"dsc": 1.0, "nsd": 1.0}  # absent on both sides
    assert scores["liver"]["nsd"] == pytest.approx(1.0)  # 5 mm tolerance > 3 mm shift
    assert 0.9 < scores["liver"]["dsc"] < 1.0
    assert scores["aorta"]["nsd"] < 1.0  # 2 mm tolerance < 3 mm shift


@pytest.mark.parametrize("direction", [None, (1.0, 0, 0, 0, 1.0, 0, 0, 0, -1.0)])
def test_z_range_drops_last_stored_slice_whatever_the_orientation(tmp_path, direction):
    """Like the official scorer, the aorta range ends before the highest *stored* slice index,
    also when the file stores slices head-first (canonical order reversed)."""
    gt = np.zeros((8, 6, 6), np.uint8)
    gt[2:6, 2:4, 2:4] = 5  # aorta on stored slices 2-5
    gt_path = write(tmp_path / "gt.nii.gz", gt, direction=direction)
    miss_last, miss_first = gt.copy(), gt.copy()
    miss_last[5] = 0
    miss_first[2] = 0
    last = score_files(write(tmp_path / "l.nii.gz", miss_last, direction=direction), gt_path, [5])
    first = score_files(write(tmp_path / "f.nii.gz", miss_first, direction=direction), gt_path, [5])
    assert last[5]["dsc"] == 1.0
    assert first[5]["dsc"] == pytest.approx(2 * 8 / (8 + 12))
