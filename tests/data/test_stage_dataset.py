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
    case_sources,
    coarse_target,
    find_pseudo_label,
    geometry_mismatch,
    organ_target,
    pseudo_label_needed,
    skipped_reasons,
    tumor_target,
    zcrop_bounds,
)
from c2fseg.io import make_geometry, read_labels, write_volume

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
    assert set(np.unique(out).tolist()) == {0, 1, 2, 3, 14}  # nothing else appears


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


def test_pseudo_label_needed_only_where_the_ground_truth_is_incomplete():
    every = list(range(14))
    assert not pseudo_label_needed("organ", every) and not pseudo_label_needed("tumor", every)
    assert pseudo_label_needed("organ", every + [14])  # organ under the tumor is unknown
    assert not pseudo_label_needed("tumor", every + [14])
    assert pseudo_label_needed("tumor", [0, 1, 14]) and pseudo_label_needed("organ", [0, 1, 2])
    assert pseudo_label_needed("organ", None)  # no label file
    assert not pseudo_label_needed("coarse", None)


def test_complete_case_without_tumor_builds_without_a_pseudo_label(tmp_path):
    data, pseudo_dir = tmp_path / "data", tmp_path / "pseudo"
    pseudo_dir.mkdir()
    full = _full_labels()
    _case(data, "full", full)
    with_tumor = full.copy()
    with_tumor[13, 5, 5] = 14
    _case(data, "tumor", with_tumor)
    partial = full.copy()
    partial[partial == 7] = 0
    _case(data, "partial", partial)
    rec = build_stage_dataset("organ", data, ["full"], tmp_path / "organ", pseudo_dir=pseudo_dir,
                              margin=3, progress=False)
    seg = read_labels(tmp_path / "organ" / "labelsTr" / "full.nii.gz").array
    lo, hi = rec["cases"]["full"]["z_range"]
    assert np.array_equal(seg, full[lo:hi])
    # the tumor stage takes a fully annotated tumor case from its ground truth alone
    rec = build_stage_dataset("tumor", data, ["tumor"], tmp_path / "tumor", pseudo_dir=pseudo_dir,
                              margin=3, progress=False)
    seg = read_labels(tmp_path / "tumor" / "labelsTr" / "tumor.nii.gz").array
    lo, hi = rec["cases"]["tumor"]["z_range"]
    assert np.array_equal(seg, with_tumor[lo:hi])
    with pytest.raises(StageDatasetError) as err:
        build_stage_dataset("organ", data, ["full", "tumor", "partial"], tmp_path / "raw2",
                            pseudo_dir=pseudo_dir, progress=False)
    msg = str(err.value)
    assert "tumor: no pseudo label" in msg and "partial: no pseudo label" in msg and "full:" not in msg


def test_check_trusts_the_splits_and_the_build_catches_a_wrong_record(tmp_path):
    data, pseudo_dir = tmp_path / "data", tmp_path / "pseudo"
    pseudo_dir.mkdir()
    partial = _full_labels()
    partial[partial == 7] = 0
    _case(data, "p", partial)
    every = list(range(14))  # the splits claim the case is complete: it is not
    files = {"p": {"image": "imagesTr/p_0000.nii.gz", "label": "labelsTr/p.nii.gz", "labels_present": every}}
    with pytest.raises(StageDatasetError, match="rebuild it with `c2fseg split`"):
        build_stage_dataset("organ", data, ["p"], tmp_path / "raw", pseudo_dir=pseudo_dir,
                            case_files=files, progress=False)


def test_only_cases_that_need_one_are_pseudo_labelled():
    from c2fseg.train.run import cases_needing_pseudo

    every = list(range(14))
    splits = {"cases": {
        "g6": {"label": "labelsTr/g6.nii.gz", "labels_present": every},
        "g4": {"label": "labelsTr/g4.nii.gz", "labels_present": [0, 1, 14]},
        "full_tumor": {"label": "labelsTr/f.nii.gz", "labels_present": every + [14]},
        "g1": {"label": None, "labels_present": []},
    }}
    cases = ["g6", "g4", "full_tumor", "g1", "unknown"]
    assert cases_needing_pseudo(splits, cases, "organ") == ["g4", "full_tumor", "g1", "unknown"]
    assert cases_needing_pseudo(splits, cases, "tumor") == ["g4", "g1", "unknown"]


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


# ----------------------------------------------------------------------------- empty targets


def _organ_pseudo(organs=(3,)) -> np.ndarray:
    pseudo = np.zeros(SHAPE, np.uint8)
    for organ in organs:
        pseudo[14, organ % 12, organ % 10] = organ
    return pseudo


def test_build_skips_and_reports_case_with_empty_target(tmp_path):
    data, pseudo_dir = tmp_path / "data", tmp_path / "pseudo"
    _case(data, "good", _full_labels(), label=False, pseudo=_organ_pseudo(), pseudo_dir=pseudo_dir)
    # an unlabelled scan whose pseudo label found nothing: no organ-stage target at all
    _case(data, "empty", _full_labels(), label=False, pseudo=np.zeros(SHAPE, np.uint8), pseudo_dir=pseudo_dir)
    out = tmp_path / "raw"
    rec = build_stage_dataset("organ", data, ["good", "empty"], out, pseudo_dir=pseudo_dir, progress=False)
    assert sorted(rec["cases"]) == ["good"]
    assert set(skipped_reasons(rec)) == {"empty"} and "empty organ target" in skipped_reasons(rec)["empty"]
    assert not (out / "imagesTr" / "empty_0000.nii.gz").exists()
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 1
    on_disk = json.loads((out / "c2fseg_build.json").read_text())
    assert set(on_disk["skipped"]) == {"empty"}
    # a rebuild keeps the skip without reading the case again; new labels bring the case back
    again = build_stage_dataset("organ", data, ["good", "empty"], out, pseudo_dir=pseudo_dir, progress=False)
    assert again["hash"] == rec["hash"] and set(again["skipped"]) == {"empty"}
    _case(data, "empty", _full_labels(), label=False, pseudo=_organ_pseudo((1, 2)), pseudo_dir=pseudo_dir)
    third = build_stage_dataset("organ", data, ["good", "empty"], out, pseudo_dir=pseudo_dir, progress=False)
    assert sorted(third["cases"]) == ["empty", "good"] and not third["skipped"]


def test_build_fails_only_when_no_case_is_left(tmp_path):
    data, pseudo_dir = tmp_path / "data", tmp_path / "pseudo"
    for case in ("e1", "e2"):
        _case(data, case, _full_labels(), label=False, pseudo=np.zeros(SHAPE, np.uint8), pseudo_dir=pseudo_dir)
    with pytest.raises(StageDatasetError, match="no case is left for the organ stage"):
        build_stage_dataset("organ", data, ["e1", "e2"], tmp_path / "raw", pseudo_dir=pseudo_dir, progress=False)


def test_coarse_case_with_only_tumor_is_skipped(tmp_path):
    data = tmp_path / "data"
    _case(data, "ok", _full_labels())
    tumor_only = np.zeros(SHAPE, np.uint8)
    tumor_only[10, 2, 2] = 14  # tumor becomes background in the coarse target
    _case(data, "tumoronly", tumor_only)
    rec = build_stage_dataset("coarse", data, ["ok", "tumoronly"], tmp_path / "raw", progress=False)
    assert list(rec["cases"]) == ["ok"] and list(rec["skipped"]) == ["tumoronly"]


# ----------------------------------------------------------------------------- geometry checks


def test_pseudo_label_shifted_in_space_is_rejected(tmp_path):
    data, pseudo_dir = tmp_path / "data", tmp_path / "pseudo"
    _case(data, "a", _full_labels(), label=False)
    shifted = make_geometry(SHAPE, SPACING, (1.0, 2.0, 3.0 + 5 * SPACING[0]), transpose=(2, 1, 0),
                            flip=(True, False, True))  # same size, spacing and direction
    write_volume(_organ_pseudo(), shifted, pseudo_dir / "a.nii.gz")
    with pytest.raises(StageDatasetError, match="a: pseudo a.nii.gz does not match the image.*origin"):
        build_stage_dataset("organ", data, ["a"], tmp_path / "raw", pseudo_dir=pseudo_dir, progress=False)


def test_pseudo_label_stored_in_another_axis_order_is_accepted(tmp_path):
    data, pseudo_dir = tmp_path / "data", tmp_path / "pseudo"
    _case(data, "a", _full_labels(), label=False)  # image stored transposed + flipped
    pseudo = _organ_pseudo((3, 5))
    canonical = make_geometry(SHAPE, SPACING, (1.0, 2.0, 3.0))  # same grid, canonical voxel order
    write_volume(pseudo, canonical, pseudo_dir / "a.nii.gz")
    out = tmp_path / "raw"
    rec = build_stage_dataset("organ", data, ["a"], out, pseudo_dir=pseudo_dir, margin=30, progress=False)
    assert rec["cases"]["a"]["labels"] == [0, 3, 5]
    assert np.array_equal(read_labels(out / "labelsTr" / "a.nii.gz").array, pseudo)


def test_geometry_mismatch_names_the_difference():
    base = make_geometry(SHAPE, SPACING, (1.0, 2.0, 3.0))
    assert geometry_mismatch(base, make_geometry(SHAPE, SPACING, (1.0, 2.0, 3.0), transpose=(1, 2, 0))) is None
    assert "shape" in geometry_mismatch(base, make_geometry((30, 12, 11), SPACING, (1.0, 2.0, 3.0)))
    assert "spacing" in geometry_mismatch(base, make_geometry(SHAPE, (2.0, 1.0, 0.9), (1.0, 2.0, 3.0)))
    assert "origin" in geometry_mismatch(base, make_geometry(SHAPE, SPACING, (1.5, 2.0, 3.0)))
    assert geometry_mismatch(base, make_geometry(SHAPE, SPACING, (1.01, 2.0, 3.0))) is None  # < 0.1 voxel


# ----------------------------------------------------------------------------- input paths


def test_build_takes_paths_from_splits_and_reads_any_format(tmp_path):
    data = tmp_path / "data"
    lab = _full_labels()
    geom = make_geometry(SHAPE, SPACING, (1.0, 2.0, 3.0))
    ct = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 1200 - 1000).astype(np.int16)
    write_volume(ct, geom, data / "imagesTr" / "m_0000.mha")
    write_volume(lab, geom, data / "labelsTr" / "m.nrrd")
    write_volume(ct, geom, data / "scans" / "other_0000.nii")  # a layout only splits.json knows
    write_volume(lab, geom, data / "masks" / "other.nii.gz")
    files = {"other": {"image": "scans/other_0000.nii", "label": "masks/other.nii.gz"}}
    out = tmp_path / "raw"
    rec = build_stage_dataset("coarse", data, ["m", "other"], out, progress=False, case_files=files)
    assert sorted(rec["cases"]) == ["m", "other"]
    assert rec["cases"]["m"]["sources"]["image"][0].endswith("m_0000.mha")
    for case in ("m", "other"):  # the stage dataset itself is always .nii.gz
        lo, hi = rec["cases"][case]["z_range"]
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "imagesTr" / f"{case}_0000.nii.gz")))
        assert np.array_equal(written, ct[lo:hi])
        assert (out / "labelsTr" / f"{case}.nii.gz").is_file()


def test_splits_from_c2fseg_split_feed_the_build(tmp_path):
    from c2fseg.data.groups import build_splits

    data = tmp_path / "data"
    geom = make_geometry(SHAPE, SPACING)
    ct = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 1200 - 1000).astype(np.int16)
    write_volume(ct, geom, data / "imagesTr" / "n_0000.nrrd")
    write_volume(_full_labels(), geom, data / "labelsTr" / "n.nrrd")
    splits = build_splits(data, folds=2, workers=1)
    assert splits["stages"]["coarse"]["cases"] == ["n"]  # split accepts it ...
    rec = build_stage_dataset("coarse", data, ["n"], tmp_path / "raw", progress=False,
                              case_files=splits["cases"])  # ... and so does the stage build
    assert list(rec["cases"]) == ["n"]


def test_find_pseudo_label_any_extension_and_channel_name(tmp_path):
    (tmp_path / "a.mha").write_bytes(b"x")
    (tmp_path / "b_0000.nii.gz").write_bytes(b"x")
    assert find_pseudo_label(tmp_path, "a") == tmp_path / "a.mha"
    assert find_pseudo_label(tmp_path, "b") == tmp_path / "b_0000.nii.gz"
    assert find_pseudo_label(tmp_path, "c") is None


def test_find_pseudo_label_prefers_nii_gz_and_the_plain_case_name(tmp_path):
    for name in ("a.mha", "a.nii.gz", "a_0000.nii", "b_0000.nrrd", "b_0000.nii.gz"):
        (tmp_path / name).write_bytes(b"x")
    assert find_pseudo_label(tmp_path, "a") == tmp_path / "a.nii.gz"
    assert find_pseudo_label(tmp_path, "b") == tmp_path / "b_0000.nii.gz"
    assert find_pseudo_label(tmp_path / "missing", "a") is None


def test_case_sources_without_splits_find_any_extension(tmp_path):
    data = tmp_path / "data"
    for name in ("imagesTr/m_0000.mha", "imagesTr/m_0001.nii.gz", "labelsTr/m.nrrd",
                 "imagesTr/n_0000.nii.gz", "pseudo/n.nii"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(b"x")
    m, n, ghost = case_sources(data, ["m", "n", "ghost"], data / "pseudo")
    assert (m.image, m.label, m.pseudo) == (data / "imagesTr/m_0000.mha",
                                            data / "labelsTr/m.nrrd", None)
    assert (n.image, n.label, n.pseudo) == (data / "imagesTr/n_0000.nii.gz", None,
                                            data / "pseudo/n.nii")
    assert ghost.image == data / "imagesTr" / "ghost_0000.nii.gz" and not ghost.image.exists()


def test_ct_clip_is_written_recorded_and_rebuilds(tmp_path):
    ct = _case(tmp_path / "data", "a", _full_labels())
    assert ct.min() < -325 and ct.max() > 100
    out = tmp_path / "raw"
    plain = build_stage_dataset("coarse", tmp_path / "data", ["a"], out, margin=3, progress=False)
    clipped = build_stage_dataset("coarse", tmp_path / "data", ["a"], out, margin=3, progress=False,
                                  ct_clip=[-325, 100])
    img = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "imagesTr" / "a_0000.nii.gz")))
    assert np.array_equal(img, np.clip(ct[9:18], -325, 100))  # rewritten with the clip
    assert clipped["ct_clip"] == [-325.0, 100.0] and plain["ct_clip"] is None
    assert clipped["hash"] != plain["hash"]  # plans and preprocessing are redone
    again = build_stage_dataset("coarse", tmp_path / "data", ["a"], out, margin=3, progress=False)
    assert again["hash"] == plain["hash"]
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "imagesTr" / "a_0000.nii.gz"))),
                          ct[9:18])
    with pytest.raises(ValueError, match="low < high"):
        build_stage_dataset("coarse", tmp_path / "data", ["a"], out, progress=False, ct_clip=[5, 5])
