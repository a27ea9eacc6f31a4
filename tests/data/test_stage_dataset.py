"""Stage datasets: z-crop, pseudo-label merge rules, files written in canonical orientation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from c2fseg.data.stage_dataset import (
    StageDatasetError,
    annotated_organs,
    build_stage_dataset,
    coarse_target,
    organ_target,
    tumor_target,
    zcrop_bounds,
)
from c2fseg.io.image import make_geometry, read_labels, write_volume

# ----------------------------------------------------------------------------- z-crop


def test_zcrop_bounds_spans_labelled_slices_plus_margin():
    lab = np.zeros((40, 4, 4), np.uint8)
    lab[12, 1, 1] = 3
    lab[20, 2, 2] = 5
    assert zcrop_bounds(lab, margin=10) == (2, 31)
    assert zcrop_bounds(lab, margin=0) == (12, 21)


def test_zcrop_bounds_clipped_at_volume_edges_and_empty_keeps_all():
    lab = np.zeros((15, 3, 3), np.uint8)
    lab[1] = 1
    lab[13] = 2
    assert zcrop_bounds(lab, margin=10) == (0, 15)
    assert zcrop_bounds(np.zeros((7, 2, 2), np.uint8), margin=3) == (0, 7)


# ----------------------------------------------------------------------------- merge rules


def _maps():
    """GT annotates liver (1) and tumor (14); pseudo labels liver, spleen (3), kidney (2)."""
    gt = np.zeros((1, 4, 6), np.uint8)
    gt[0, 0, :3] = 1  # liver (annotated)
    gt[0, 1, 0] = 14  # tumor
    pseudo = np.zeros_like(gt)
    pseudo[0, 0, :] = 1  # liver, larger than GT
    pseudo[0, 1, :2] = 1  # liver under the tumor and beside it
    pseudo[0, 2, :] = 3  # spleen: not annotated
    pseudo[0, 3, 0] = 2  # right kidney: not annotated
    pseudo[0, 3, 1] = 14  # a tumor value in pseudo labels is never used
    return gt, pseudo


def test_annotated_organs_are_those_present():
    gt, _ = _maps()
    assert annotated_organs(gt) == {1}


def test_tumor_target_gt_wins_tumor_stays_only_unannotated_filled_on_background():
    gt, pseudo = _maps()
    out = tumor_target(gt, pseudo)
    assert out[0, 1, 0] == 14  # tumor stays tumor
    assert (out[0, 0, :3] == 1).all()  # GT liver kept
    assert (out[0, 0, 3:] == 0).all()  # liver is annotated: pseudo liver not added
    assert out[0, 1, 1] == 0  # pseudo liver (annotated organ) on GT background: not added
    assert (out[0, 2] == 3).all()  # unannotated spleen filled
    assert out[0, 3, 0] == 2 and out[0, 3, 1] == 0  # kidney filled, pseudo "tumor" ignored
    assert set(np.unique(out)) <= set(range(15))


def test_tumor_target_never_overwrites_gt_foreground():
    gt = np.full((2, 3, 3), 5, np.uint8)
    gt[0, 0, 0] = 14
    pseudo = np.full_like(gt, 3)
    assert np.array_equal(tumor_target(gt, pseudo), gt)


def test_organ_target_uses_pseudo_under_tumor_and_for_unannotated_organs():
    gt, pseudo = _maps()
    out = organ_target(gt, pseudo)
    assert 14 not in out
    assert out[0, 1, 0] == 1  # organ under the tumor from the pseudo label
    assert (out[0, 0, :3] == 1).all() and (out[0, 0, 3:] == 0).all()
    assert (out[0, 2] == 3).all() and out[0, 3, 0] == 2
    assert np.array_equal(organ_target(None, pseudo), np.where(pseudo == 14, 0, pseudo))


def test_coarse_target_drops_tumor():
    gt, _ = _maps()
    out = coarse_target(gt)
    assert 14 not in out and (out[gt == 1] == 1).all()


def test_merge_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        tumor_target(np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 3), np.uint8))


# ----------------------------------------------------------------------------- building


SHAPE = (30, 12, 10)
SPACING = (2.0, 1.0, 0.8)


def _case(root: Path, case: str, lab: np.ndarray, transpose=(2, 1, 0), flip=(True, False, True),
          label: bool = True, pseudo: np.ndarray | None = None, pseudo_dir: Path | None = None):
    geom = make_geometry(SHAPE, SPACING, (1.0, 2.0, 3.0), transpose=transpose, flip=flip)
    ct = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 1200 - 1000).astype(np.int16)
    write_volume(ct, geom, root / "imagesTr" / f"{case}_0000.nii.gz")
    if label:
        write_volume(lab, geom, root / "labelsTr" / f"{case}.nii.gz")
    if pseudo is not None:
        write_volume(pseudo, geom, pseudo_dir / f"{case}.nii.gz")
    return ct


def _full_labels():
    lab = np.zeros(SHAPE, np.uint8)
    for organ in range(1, 14):
        lab[12 + organ % 3, organ % 12, organ % 10] = organ
    return lab


def test_build_coarse_dataset_canonical_cropped(tmp_path):
    lab = _full_labels()
    lab[13, 0, 0] = 14  # tumor voxel -> background for coarse
    ct = _case(tmp_path / "data", "a", lab)
    out = tmp_path / "raw"
    rec = build_stage_dataset("coarse", tmp_path / "data", ["a"], out, margin=3, progress=False)
    assert rec["cases"]["a"]["z_range"] == [9, 18]
    img = sitk.ReadImage(str(out / "imagesTr" / "a_0000.nii.gz"))
    seg = sitk.ReadImage(str(out / "labelsTr" / "a.nii.gz"))
    assert img.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert img.GetSize() == (SHAPE[2], SHAPE[1], 9) and seg.GetSize() == img.GetSize()
    np.testing.assert_allclose(img.GetSpacing(), SPACING[::-1])
    np.testing.assert_allclose(img.GetOrigin()[2] - 3.0, 9 * SPACING[0])  # origin moved by the crop
    assert np.array_equal(sitk.GetArrayFromImage(img), ct[9:18])
    expected = lab[9:18].copy()
    expected[expected == 14] = 0
    assert np.array_equal(sitk.GetArrayFromImage(seg), expected)
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["labels"]["background"] == 0 and ds["labels"]["left_kidney"] == 13
    assert "tumor" not in ds["labels"] and ds["numTraining"] == 1
    assert ds["channel_names"] == {"0": "CT"}


def test_build_tumor_dataset_fills_missing_organs_from_pseudo(tmp_path):
    lab = np.zeros(SHAPE, np.uint8)
    lab[14, 2:4, 2:4] = 1
    lab[15, 2, 2] = 14
    pseudo = np.zeros(SHAPE, np.uint8)
    pseudo[14, 5:7, 5:7] = 3
    pseudo[15, 2, 2] = 1
    _case(tmp_path / "data", "t", lab, pseudo=pseudo, pseudo_dir=tmp_path / "pseudo")
    out = tmp_path / "raw"
    build_stage_dataset("tumor", tmp_path / "data", ["t"], out, pseudo_dir=tmp_path / "pseudo",
                        margin=10, progress=False)
    seg = read_labels(out / "labelsTr" / "t.nii.gz").array
    assert seg.shape == (22, *SHAPE[1:])  # slices 14-15 +- 10
    assert (seg == 14).sum() == 1 and (seg == 3).sum() == 4 and (seg == 1).sum() == 4
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["labels"]["tumor"] == 14


def test_build_reports_every_bad_case(tmp_path):
    data = tmp_path / "data"
    _case(data, "ok", _full_labels())
    _case(data, "nolabel", _full_labels(), label=False)
    geom = make_geometry((SHAPE[0], SHAPE[1], SHAPE[2] + 1), SPACING)
    _case(data, "badgeom", _full_labels())
    write_volume(np.zeros((SHAPE[0], SHAPE[1], SHAPE[2] + 1), np.uint8), geom, data / "labelsTr" / "badgeom.nii.gz")
    with pytest.raises(StageDatasetError) as err:
        build_stage_dataset("coarse", data, ["ok", "nolabel", "badgeom", "ghost"], tmp_path / "raw", progress=False)
    msg = str(err.value)
    assert "nolabel" in msg and "badgeom" in msg and "ghost" in msg and "ok:" not in msg


def test_build_organ_needs_pseudo_labels(tmp_path):
    _case(tmp_path / "data", "u", _full_labels(), label=False)
    (tmp_path / "pseudo").mkdir()
    with pytest.raises(StageDatasetError, match="u: no pseudo label"):
        build_stage_dataset("organ", tmp_path / "data", ["u"], tmp_path / "raw",
                            pseudo_dir=tmp_path / "pseudo", progress=False)


def test_build_is_resumable_and_drops_stale_cases(tmp_path):
    data = tmp_path / "data"
    _case(data, "a", _full_labels())
    _case(data, "b", _full_labels())
    out = tmp_path / "raw"
    first = build_stage_dataset("coarse", data, ["a", "b"], out, progress=False)
    mtime = (out / "imagesTr" / "a_0000.nii.gz").stat().st_mtime_ns
    second = build_stage_dataset("coarse", data, ["a"], out, progress=False)
    assert (out / "imagesTr" / "a_0000.nii.gz").stat().st_mtime_ns == mtime  # not rewritten
    assert not (out / "imagesTr" / "b_0000.nii.gz").exists()
    assert first["hash"] != second["hash"]
