"""Atomic label writing, output validity checks (for resume) and the real-CT golden test."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from c2fseg.io import image as image_module
from c2fseg.io import (
    is_valid_output,
    make_geometry,
    read_geometry,
    read_image,
    read_labels,
    write_labels,
    write_volume,
)
from real_data import CT, real_path

REAL_CT = real_path(CT)


def _geom(rot=None):
    return make_geometry((4, 5, 6), (2.5, 0.8, 0.7), (10.0, -20.0, 30.0), (2, 0, 1),
                         (True, False, True), rot)


def _labels(shape=(4, 5, 6)):
    return (np.arange(np.prod(shape)).reshape(shape) % 15).astype(np.uint8)


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"])
def test_write_labels_every_format(tmp_path, ext):
    out = write_labels(_labels(), _geom(), tmp_path / f"seg{ext}")
    vol = read_labels(out)
    np.testing.assert_array_equal(vol.array, _labels())
    assert sitk.ReadImage(str(out)).GetPixelID() == sitk.sitkUInt8
    assert is_valid_output(out, _geom())
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_failed_write_leaves_nothing_and_keeps_old_file(tmp_path, monkeypatch):
    out = tmp_path / "seg.nii.gz"
    out.write_bytes(b"previous result")

    def half_write(image, path, useCompression=True):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(image_module.sitk, "WriteImage", half_write)
    with pytest.raises(RuntimeError, match="disk full"):
        write_labels(_labels(), _geom(), out)
    assert out.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["seg.nii.gz"]


def test_failed_first_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(image_module.sitk, "WriteImage",
                        lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_labels(_labels(), _geom(), tmp_path / "seg.nii.gz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "labels, message",
    [(np.zeros((4, 5, 7), np.uint8), "shape"), (np.full((4, 5, 6), 1.5), "non-integer"),
     (np.full((4, 5, 6), 300), "uint8"), (np.full((4, 5, 6), -1), "uint8")],
)
def test_write_labels_rejects_bad_arrays(tmp_path, labels, message):
    with pytest.raises(ValueError, match=message):
        write_labels(labels, _geom(), tmp_path / "seg.nii.gz")
    assert not (tmp_path / "seg.nii.gz").exists()


def test_write_labels_rejects_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match="file type"):
        write_labels(_labels(), _geom(), tmp_path / "seg.png")


def test_is_valid_output_detects_wrong_or_damaged_outputs(tmp_path):
    geom = _geom()
    good = write_labels(_labels(), geom, tmp_path / "good.nii.gz")
    assert is_valid_output(good, geom)
    assert not is_valid_output(tmp_path / "missing.nii.gz", geom)
    other_origin = make_geometry((4, 5, 6), (2.5, 0.8, 0.7), (11.0, -20.0, 30.0), (2, 0, 1),
                                 (True, False, True))
    other_spacing = make_geometry((4, 5, 6), (2.5, 0.8, 0.8), (10.0, -20.0, 30.0), (2, 0, 1),
                                  (True, False, True))
    other_order = make_geometry((4, 5, 6), (2.5, 0.8, 0.7), (10.0, -20.0, 30.0), (2, 0, 1),
                                (True, True, True))
    for geom_b in (other_origin, other_spacing, other_order):
        assert not is_valid_output(write_labels(_labels(), geom_b, tmp_path / "b.nii.gz"), geom)
    tilted = np.array([[1.0, 0, 0], [0, np.cos(0.1), -np.sin(0.1)], [0, np.sin(0.1), np.cos(0.1)]])
    assert not is_valid_output(write_labels(_labels(), _geom(tilted), tmp_path / "t.nii.gz"), geom)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(good.read_bytes()[:-5])
    assert not is_valid_output(cut, geom)
    floats = write_volume(_labels().astype(np.float32), geom, tmp_path / "f.nii.gz")
    assert not is_valid_output(floats, geom)
    too_big = write_volume(np.full((4, 5, 6), 20, np.uint8), geom, tmp_path / "big.nii.gz")
    assert not is_valid_output(too_big, geom)


def test_oblique_output_is_valid_after_nifti_float32_header(tmp_path):
    rot = np.array([[np.cos(0.4), -np.sin(0.4), 0], [np.sin(0.4), np.cos(0.4), 0], [0, 0, 1]])
    out = write_labels(_labels(), _geom(rot), tmp_path / "o.nii.gz")
    assert is_valid_output(out, read_labels(out).geometry)
    assert is_valid_output(out, _geom(rot))


@pytest.mark.real_data(CT)
def test_golden_real_ct_labels_keep_input_header(tmp_path):
    ct = read_image(REAL_CT)
    assert ct.meta["warnings"] == []
    ref = nib.load(str(REAL_CT))
    assert ct.shape == ref.shape[::-1]
    labels = (ct.array > 200).astype(np.uint8)  # bone-ish, just a non-trivial map
    out = write_labels(labels, ct.geometry, tmp_path / "seg.nii.gz")
    seg = nib.load(str(out))
    assert seg.shape == ref.shape
    np.testing.assert_allclose(seg.affine, ref.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(seg.dataobj),
                                  (np.asarray(ref.dataobj) > 200).astype(np.uint8))
    src, dst = sitk.ReadImage(str(REAL_CT)), sitk.ReadImage(str(out))
    assert src.GetSize() == dst.GetSize()
    np.testing.assert_allclose(dst.GetSpacing(), src.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(dst.GetOrigin(), src.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(dst.GetDirection(), src.GetDirection(), atol=1e-6)
    assert is_valid_output(out, ct.geometry)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_read_geometry_matches_read_image(tmp_path, ext, kit):
    rng = np.random.default_rng(5)
    ct = kit.random_ct(rng, (4, 5, 6))
    stored, ras = kit.store(ct, (2.0, 0.9, 0.6), (1.0, 2.0, 3.0), (2, 0, 1), (True, False, True),
                            kit.rotation(rng, 20.0))
    path = kit.save(stored, ras, tmp_path / f"ct{ext}")
    assert read_geometry(path) == read_image(path).geometry
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(ct[:, :, 0], np.eye(4)), str(flat))
    with pytest.warns(UserWarning):
        assert read_geometry(flat) == read_image(flat).geometry
