"""Which cases the coarse model pseudo-labels, how its folder is named, and warm-start label order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from c2fseg.train import run as train_run

EVERY = list(range(14))


def _splits(data: Path) -> dict:
    """Four cases: complete (G6), partial + tumor (G4), complete + tumor, unlabelled (G1)."""
    present = {"g6": EVERY, "g4": [0, 1, 14], "full_tumor": EVERY + [14], "g1": None}
    cases = {}
    for case, labels in present.items():
        image = data / "imagesTr" / f"{case}_0000.nii.gz"
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(b"not read: pseudolabel_folder is replaced in these tests")
        cases[case] = {"image": f"imagesTr/{case}_0000.nii.gz",
                       "label": f"labelsTr/{case}.nii.gz" if labels is not None else None,
                       "labels_present": labels or []}
    return {"cases": cases}


def _coarse(weights: Path, inference: dict) -> None:
    (weights / "coarse").mkdir(parents=True, exist_ok=True)
    (weights / "coarse" / "checkpoint_final.pth").write_bytes(b"weights")
    (weights / "coarse" / "manifest.json").write_text(json.dumps({"inference": inference}))


@pytest.fixture()
def seen(monkeypatch):
    """Replace the pseudo labelling: record the cases of each call's input folder."""
    import c2fseg.infer.pseudolabel as pseudolabel

    calls: list[list[str]] = []

    def fake(stage, weights_dir, in_dir, out_dir, **kwargs):
        calls.append(sorted(p.name.replace("_0000.nii.gz", "") for p in Path(in_dir).iterdir()))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        return {"failed": {}}

    monkeypatch.setattr(pseudolabel, "pseudolabel_folder", fake)
    return calls


def test_both_stages_pseudo_label_the_same_cases_whichever_runs_first(tmp_path, seen):
    data, weights, work = tmp_path / "data", tmp_path / "weights", tmp_path / "work"
    splits = _splits(data)
    _coarse(weights, {"step": 0.5})
    out_t = train_run.coarse_pseudo_labels("tumor", data, ["g4", "full_tumor"], splits, work, weights, "cpu")
    out_o = train_run.coarse_pseudo_labels("organ", data, sorted(splits["cases"]), splits, work, weights, "cpu")
    assert out_t == out_o
    # the tumor stage alone would not need full_tumor's, but the organ stage does: made either way
    assert seen == [["full_tumor", "g4"], ["full_tumor", "g1", "g4"]]


def test_no_case_needing_pseudo_labels_gives_an_empty_folder(tmp_path, seen):
    data, weights, work = tmp_path / "data", tmp_path / "weights", tmp_path / "work"
    splits = _splits(data)
    _coarse(weights, {})
    stale = work / "pseudo_inputs" / "organ"
    stale.mkdir(parents=True)
    (stale / "old_0000.nii.gz").write_text("x")
    out = train_run.coarse_pseudo_labels("organ", data, ["g6"], splits, work, weights, "cpu")
    assert out.is_dir() and not any(out.iterdir()) and not seen
    assert not stale.exists()


def test_pseudo_label_folder_changes_with_the_coarse_inference_settings(tmp_path, seen):
    data, weights, work = tmp_path / "data", tmp_path / "weights", tmp_path / "work"
    splits = _splits(data)
    _coarse(weights, {"step": 1.0, "weighting": "uniform"})
    first = train_run.coarse_pseudo_labels("organ", data, ["g4"], splits, work, weights, "cpu")
    assert train_run.coarse_pseudo_labels("organ", data, ["g4"], splits, work, weights, "cpu") == first
    _coarse(weights, {"step": 0.5, "weighting": "gaussian"})
    assert train_run.coarse_pseudo_labels("organ", data, ["g4"], splits, work, weights, "cpu") != first


def test_warm_start_refuses_a_source_with_another_label_order(tmp_path):
    weights = tmp_path / "weights"
    (weights / "coarse").mkdir(parents=True)
    (weights / "coarse" / "checkpoint_final.pth").write_bytes(b"weights")
    manifest = weights / "coarse" / "manifest.json"
    manifest.write_text(json.dumps({"channel_labels": EVERY}))
    got = train_run._init_checkpoint({"init_from": "coarse"}, weights, "tumor", "tumor")
    assert got == str((weights / "coarse" / "checkpoint_final.pth").resolve())
    manifest.write_text(json.dumps({"channel_labels": [0, 2, 1, *range(3, 14)]}))
    with pytest.raises(train_run.TrainingInputError, match="label order"):
        train_run._init_checkpoint({"init_from": "coarse"}, weights, "tumor", "tumor")
