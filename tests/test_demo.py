"""The demo's folder handling, tumor split, table and curves (fast), and one very short run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from c2fseg import demo
from c2fseg.io.image import make_geometry, write_volume
from c2fseg.labels import LABELS, ORGANS, TUMOR

SPACING = (3.0, 2.0, 2.0)  # one voxel = 12 mm^3


def _settings():
    return demo.demo_settings(10, 4, 0, None)


def test_prepare_folder_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(demo.DemoError, match="not a c2fseg demo folder"):
        demo.prepare_folder(tmp_path, _settings(), retrain=False)
    assert (tmp_path / "mine.txt").read_text() == "user data"


def test_prepare_folder_reuses_same_settings_and_restarts_other_ones(tmp_path):
    out = tmp_path / "demo"
    assert demo.prepare_folder(out, _settings(), retrain=False) is False  # new folder
    for name in demo.OWN_FOLDERS:
        (out / name).mkdir()
        (out / name / "f").write_text("x")
    (out / "notes.txt").write_text("kept")
    assert demo.prepare_folder(out, _settings(), retrain=False) is True
    assert (out / "weights" / "f").exists()
    other = {**_settings(), "train_cases": 11}
    assert demo.prepare_folder(out, other, retrain=False) is False
    assert not any((out / name).exists() for name in demo.OWN_FOLDERS)
    assert (out / "notes.txt").read_text() == "kept"  # only the demo's own folders go
    assert json.loads((out / demo.SETTINGS_FILE).read_text()) == other
    (out / "weights").mkdir()
    assert demo.prepare_folder(out, other, retrain=True) is False
    assert not (out / "weights").exists()


def _write(folder, case, labels):
    geom = make_geometry(labels.shape, SPACING, (0.0, 0.0, 0.0), (0, 1, 2), (False, False, False), None)
    write_volume(labels.astype(np.uint8), geom, folder / f"{case}.nii.gz")


def _cases(tmp_path):
    """Two test cases: one with a tumor (half found), one tumor-free with a 10-voxel false positive."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    base = np.zeros((12, 20, 20), np.uint8)
    for i, organ in enumerate(ORGANS):
        base[2:10, 1 + (i % 6) * 3: 3 + (i % 6) * 3, 1 + (i // 6) * 6: 5 + (i // 6) * 6] = organ
    with_tumor = base.copy()
    with_tumor[4:8, 16:20, 16:20] = TUMOR  # 64 voxels
    found = base.copy()
    found[4:6, 16:20, 16:20] = TUMOR  # 32 of them
    fp = base.copy()
    fp[0, 0, 10:20] = TUMOR  # 10 false-positive voxels = 120 mm^3
    _write(gt_dir, "a", with_tumor)
    _write(pred_dir, "a", found)
    _write(gt_dir, "b", base)
    _write(pred_dir, "b", fp)
    return gt_dir, pred_dir


def test_tumor_split_scores_tumor_cases_and_measures_false_positives(tmp_path):
    from c2fseg.evaluate import evaluate_folders

    gt_dir, pred_dir = _cases(tmp_path)
    metrics = evaluate_folders(pred_dir, gt_dir, tmp_path / "m.json")
    split = demo.tumor_split(metrics, pred_dir, gt_dir)
    assert split["tumor_cases"] == 1 and split["tumor_free_cases"] == 1
    assert split["tumor_dsc"] == pytest.approx(2 * 32 / (64 + 32))
    assert split["false_positive_ml"] == {"b": pytest.approx(0.12)}
    assert split["tumor_free_with_false_positive"] == 1
    # the plain FLARE mean over both cases: 0.667 and 0 (one empty side), the split keeps them apart
    assert metrics["per_label"][LABELS[TUMOR]]["dsc"] == pytest.approx(split["tumor_dsc"] / 2)

    result = demo.DemoResult(tmp_path, metrics, {"phantoms": 1.0, "total": 2.0}, tumor=split)
    table = demo.format_demo_table(result)
    assert "tumor, 1 tumor cases" in table and "66.7" in table
    assert "with a false-positive tumor: 1 (largest 0.1 ml)" in table
    met = demo.target_check(metrics, split)  # organs perfect, tumor 67 % >= 50 %
    assert met == {"organ_dsc_mean": True, "organ_dsc_min": True, "tumor_dsc_tumor_cases": True}
    assert table.splitlines()[-1].endswith(": met")
    split["tumor_dsc"] = 0.4
    assert demo.target_check(metrics, split)["tumor_dsc_tumor_cases"] is False
    assert "NOT met: tumor_dsc_tumor_cases" in demo.format_demo_table(result)


def test_curves_png_from_nnunet_logs(tmp_path):
    torch = pytest.importorskip("torch")
    from c2fseg.train.curves import epoch_seconds, plot_training_curves, training_log

    assert training_log(tmp_path) is None
    log = {"train_losses": [1.0, 0.5, 0.3], "val_losses": [0.9, 0.6, 0.4],
           "mean_fg_dice": [0.1, 0.5, 0.7], "ema_fg_dice": [0.1, 0.14, 0.2],
           "lrs": [0.01, 0.006, 0.002], "epoch_start_timestamps": [0.0, 10.0, 20.0],
           "epoch_end_timestamps": [9.5, 19.0, 29.25]}
    torch.save({"logging": log, "network_weights": {}}, tmp_path / "checkpoint_latest.pth")
    read = training_log(tmp_path)
    assert read["mean_fg_dice"] == [0.1, 0.5, 0.7] and epoch_seconds(read) == [9.5, 9.0, 9.25]
    png = plot_training_curves({"coarse": read, "organ": read}, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no training logs"):
        plot_training_curves({}, tmp_path / "none.png")


def test_a_very_short_demo_runs_end_to_end(tmp_path, capsys):
    """The whole demo wiring with a 2-iteration schedule (accuracy: tests/test_demo_slow.py)."""
    from c2fseg.cli import main

    out = tmp_path / "demo"
    code = main(["demo", "-o", str(out), "--train-cases", "8", "--test-cases", "2", "--epochs", "1",
                 "--iters-per-epoch", "2", "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "13 organs (mean)" in printed and "Time (s):" in printed and "Per case (s):" in printed
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["n_test_cases"] == 2 and set(summary["organs"]) == {LABELS[o] for o in ORGANS}
    assert all(summary["timings_s"][f"train_{s}"] > 0 for s in ("coarse", "tumor", "organ"))
    assert summary["tumor"]["tumor_cases"] + summary["tumor"]["tumor_free_cases"] == 2
    assert (out / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert list(out.glob("*_prediction.png"))
    # a second run reuses the weights: no training, same settings
    assert main(["demo", "-o", str(out), "--train-cases", "8", "--test-cases", "2", "--epochs", "1",
                 "--iters-per-epoch", "2", "--device", "cpu"]) == 0
    assert "reusing trained weights" in capsys.readouterr().out
