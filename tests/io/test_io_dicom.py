"""DICOM series folders: one series reads like a file; mixed series and gaps are refused."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from c2fseg.io import ImageReadError, find_cases, read_image

SPACING = (0.75, 0.8, 2.5)  # x, y, z mm
ORIGIN = (-100.0, -120.0, 50.0)


def write_series(folder, volume, uid, first_index=0, skip=(), z_step=SPACING[2], name="s"):
    """Write ``volume`` ([z, y, x] int16 HU) as CT slices with positions along +z (LPS)."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.shape[0]):
        if k in skip:
            continue
        image = sitk.GetImageFromArray(volume[k])
        image.SetSpacing(SPACING[:2])
        z = ORIGIN[2] + k * z_step
        tags = {
            "0008|0060": "CT",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{uid}.{first_index + k + 1}",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": uid,
            "0020|0013": str(k + 1),
            "0020|0032": f"{ORIGIN[0]}\\{ORIGIN[1]}\\{z}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{SPACING[1]}\\{SPACING[0]}",
            "0018|0050": str(SPACING[2]),
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{name}{k:03d}.dcm"))
        writer.Execute(image)
    return folder


def _volume(shape=(6, 5, 4), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 1200, shape).astype(np.int16)


def test_series_folder_reads_like_a_file(tmp_path):
    vol = _volume()
    folder = write_series(tmp_path / "case1", vol, "1.2.3.4.5")
    ct = read_image(folder)
    np.testing.assert_array_equal(ct.array, vol)  # identity direction: already canonical
    np.testing.assert_allclose(ct.spacing, SPACING[::-1], rtol=1e-5)
    np.testing.assert_allclose(ct.geometry.canonical_origin, ORIGIN, atol=1e-4)
    assert ct.meta["source"] == "dicom" and ct.meta["series_uid"] == "1.2.3.4.5"


def test_missing_slice_is_refused(tmp_path):
    folder = write_series(tmp_path / "gap", _volume(), "1.2.3.4.6", skip=(3,))
    with pytest.raises(ImageReadError, match="non-uniform slice positions") as info:
        read_image(folder)
    assert str(folder) in str(info.value)


def test_duplicate_slice_positions_are_refused(tmp_path):
    folder = write_series(tmp_path / "dup", _volume(), "1.2.3.4.8")
    write_series(folder, _volume(seed=1)[:2], "1.2.3.4.8", first_index=100, name="t")
    with pytest.raises(ImageReadError, match="same position"):
        read_image(folder)


def test_two_series_in_one_folder_are_refused_with_their_uids(tmp_path):
    folder = write_series(tmp_path / "mixed", _volume(), "1.2.3.4.10")
    write_series(folder, _volume(seed=2), "1.2.3.4.11", name="b")
    with pytest.raises(ImageReadError) as info:
        read_image(folder)
    message = str(info.value)
    assert "1.2.3.4.10" in message and "1.2.3.4.11" in message
    assert "own folder" in message


def test_folder_without_dicom_is_refused(tmp_path):
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "readme.txt").write_text("no images here")
    with pytest.raises(ImageReadError, match="no readable DICOM series"):
        read_image(tmp_path / "nothing")


def test_find_cases_lists_series_folders(tmp_path):
    write_series(tmp_path / "in" / "patient_b", _volume(), "1.2.3.4.12")
    write_series(tmp_path / "in" / "patient_a", _volume(), "1.2.3.4.13")
    (tmp_path / "in" / "notes").mkdir()
    cases = find_cases(tmp_path / "in")
    assert [(c.case_id, c.kind, c.ok) for c in cases] == [
        ("patient_a", "dicom", True), ("patient_b", "dicom", True)]
