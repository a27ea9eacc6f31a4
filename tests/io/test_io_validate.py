"""One test per robustness item on input files, shapes and values (robustness.md)."""

from __future__ import annotations

import gzip
import warnings

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from c2fseg.io import ImageReadError, ImageValueWarning, read_image, read_labels, write_labels

AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def _nifti(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _ct(shape=(6, 7, 8), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 1500, shape).astype(np.int16)


def _read_error(path, reader=read_image) -> str:
    with pytest.raises(ImageReadError) as info:
        reader(path)
    message = str(info.value)
    assert path.name in message  # every message names the file
    return message


# --- files -------------------------------------------------------------------------------

def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.nii.gz"
    path.touch()
    assert "empty (0 bytes)" in _read_error(path)


def test_missing_file(tmp_path):
    assert "no such file" in _read_error(tmp_path / "gone.nii.gz")


def test_text_file_named_nii_gz(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_text("this is not an image\n" * 30)
    assert "not a NIfTI" in _read_error(path)


def test_gzipped_text_named_nii_gz(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_bytes(gzip.compress(b"not an image at all\n" * 50))
    assert "not a NIfTI" in _read_error(path)


def test_text_file_named_mha(tmp_path):
    path = tmp_path / "notes.mha"
    path.write_text("hello\n")
    assert "cannot be read as an image" in _read_error(path)


@pytest.mark.parametrize("name", ["scan.img", "scan.npy", "scan.nii.bz2", "slice.dcm", "scan"])
def test_unsupported_extension(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\0" * 400)
    message = _read_error(path)
    assert "DICOM series" in message if name.endswith(".dcm") else "unsupported file type" in message


@pytest.mark.parametrize("cut", [1, 4, 8, 300])
def test_truncated_nii_gz_even_at_the_very_end(tmp_path, cut):
    """ITK reads these silently (zeros or stale data); the gzip stream check must not."""
    full = _nifti(tmp_path / "full.nii.gz", _ct((32, 32, 32)))
    data = full.read_bytes()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(data[:-cut])
    assert "truncated" in _read_error(path)
    read_image(full)  # the intact file is fine


def test_corrupt_crc_in_nii_gz(tmp_path):
    data = bytearray(_nifti(tmp_path / "full.nii.gz", _ct()).read_bytes())
    data[-6] ^= 0xFF  # inside the CRC32 trailer
    path = tmp_path / "crc.nii.gz"
    path.write_bytes(bytes(data))
    assert "corrupt" in _read_error(path)


def test_truncated_uncompressed_nii(tmp_path):
    data = _nifti(tmp_path / "full.nii", _ct()).read_bytes()
    path = tmp_path / "cut.nii"
    path.write_bytes(data[:-10])
    assert "truncated" in _read_error(path)


def test_complete_gzip_of_truncated_nii(tmp_path):
    data = _nifti(tmp_path / "full.nii", _ct()).read_bytes()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(gzip.compress(data[:-100]))
    assert "truncated" in _read_error(path)


@pytest.mark.parametrize("ext", [".mha", ".nrrd"])
def test_truncated_mha_and_nrrd(tmp_path, ext):
    full = tmp_path / f"full{ext}"
    sitk.WriteImage(sitk.GetImageFromArray(_ct((16, 16, 16))), str(full), useCompression=False)
    path = tmp_path / f"cut{ext}"
    path.write_bytes(full.read_bytes()[:-10])
    assert "cannot be read" in _read_error(path)


# --- shapes ------------------------------------------------------------------------------

def test_4d_with_trailing_axis_of_one_reads_as_3d(tmp_path):
    ct = _ct()
    vol3 = read_image(_nifti(tmp_path / "a.nii.gz", ct))
    vol4 = read_image(_nifti(tmp_path / "b.nii.gz", ct[..., None]))
    np.testing.assert_array_equal(vol4.array, vol3.array)
    assert vol4.geometry == vol3.geometry


def test_4d_mha_with_one_volume_reads_as_3d(tmp_path):
    ct = _ct()
    image = sitk.JoinSeries(sitk.GetImageFromArray(ct))
    assert image.GetDimension() == 4
    sitk.WriteImage(image, str(tmp_path / "b.mha"))
    vol = read_image(tmp_path / "b.mha")
    np.testing.assert_array_equal(vol.array, ct)


def test_4d_with_several_volumes_is_refused(tmp_path):
    path = _nifti(tmp_path / "multi.nii.gz", np.stack([_ct()] * 3, axis=-1))
    assert "3 volumes" in _read_error(path)


def test_2d_image_reads_as_one_slice_and_writes_back(tmp_path):
    affine = np.diag([0.7, 0.9, 1.0, 1.0])
    affine[:3, 3] = [5.0, -6.0, 0.0]
    path = _nifti(tmp_path / "flat.nii.gz", _ct((6, 7, 8))[:, :, 0], affine)
    with pytest.warns(ImageValueWarning) as record:
        vol = read_image(path)
    assert vol.shape == (1, 7, 6)
    assert any("2D image" in w for w in vol.meta["warnings"])
    assert any("single slice" in str(r.message) for r in record)
    out = write_labels(np.ones(vol.shape, np.uint8), vol.geometry, tmp_path / "seg.nii.gz")
    seg = nib.load(str(out))
    assert seg.shape[:2] == (6, 7)
    np.testing.assert_allclose(seg.affine[:2, :2], affine[:2, :2], atol=1e-6)
    np.testing.assert_allclose(seg.affine[:2, 3], affine[:2, 3], atol=1e-4)


def test_single_slice_3d_reads_with_warning(tmp_path):
    path = _nifti(tmp_path / "one.nii.gz", _ct((6, 7, 1)))
    with pytest.warns(ImageValueWarning, match="single slice"):
        vol = read_image(path)
    assert vol.shape == (1, 7, 6)


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 4, 5)])
def test_tiny_volumes_read(tmp_path, shape):
    ct = _ct(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageValueWarning)
        vol = read_image(_nifti(tmp_path / "tiny.nii.gz", ct))
    assert vol.shape == shape[::-1]
    np.testing.assert_array_equal(vol.array, np.flip(ct.T, (1, 2)))  # RAS file: x, y reversed
    lab = read_labels(_nifti(tmp_path / "tiny_lab.nii.gz", np.full(shape, 3, np.uint8)))
    assert lab.array.dtype == np.uint8 and lab.shape == shape[::-1]


# --- pixel types and values --------------------------------------------------------------

def test_rgb_nifti_is_refused(tmp_path):
    rgb = np.zeros((4, 5, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    assert "3 components" in _read_error(_nifti(tmp_path / "rgb.nii.gz", rgb))


def test_vector_mha_is_refused(tmp_path):
    path = tmp_path / "vec.mha"
    sitk.WriteImage(sitk.Image([4, 5, 6], sitk.sitkVectorFloat32, 2), str(path))
    assert "2 components" in _read_error(path)


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".mha"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_are_refused(tmp_path, bad, ext):
    """ITK turns NaN/inf in NIfTI into 0 silently; they must be refused for every format."""
    ct = _ct().astype(np.float32)
    ct[1, 2, 3] = bad
    ct[2, 2, 2] = bad
    path = tmp_path / f"nan{ext}"
    if ext == ".mha":
        sitk.WriteImage(sitk.GetImageFromArray(ct), str(path))
    else:
        _nifti(path, ct)
    message = _read_error(path)
    assert ("2 NaN" if np.isnan(bad) else "2 infinite") in message


@pytest.mark.parametrize(
    "values, expected",
    [((0.0, 1.0), "normalised"), ((0, 255), "8-bit"), ((0, 4000), "no negative values"),
     ((5, 5), "constant")],
)
def test_values_that_are_not_hu_warn(tmp_path, values, expected):
    rng = np.random.default_rng(1)
    ct = rng.uniform(*values, size=(6, 7, 8)).astype(np.float32) if values[0] != values[1] \
        else np.full((6, 7, 8), values[0], np.float32)
    with pytest.warns(ImageValueWarning, match=expected):
        vol = read_image(_nifti(tmp_path / "odd.nii.gz", ct))
    assert any(expected in w for w in vol.meta["warnings"])


def test_plain_hu_ct_gives_no_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vol = read_image(_nifti(tmp_path / "ct.nii.gz", _ct()))
    assert vol.meta["warnings"] == []
    assert vol.meta["value_range"] == (float(_ct().min()), float(_ct().max()))


def test_qform_sform_disagreement_warns(tmp_path):
    img = nib.Nifti1Image(_ct(), None)
    shifted = AFFINE.copy()
    shifted[:3, 3] = [40.0, 0.0, 0.0]
    img.set_qform(AFFINE, code=1)
    img.set_sform(shifted, code=2)
    nib.save(img, str(tmp_path / "qs.nii.gz"))
    with pytest.warns(ImageValueWarning, match="qform and sform disagree"):
        read_image(tmp_path / "qs.nii.gz")


# --- labels ------------------------------------------------------------------------------

def test_labels_with_non_integer_values_are_refused(tmp_path):
    lab = np.zeros((4, 5, 6), np.float32)
    lab[0, 0, 0] = 2.5
    assert "2.5" in _read_error(_nifti(tmp_path / "soft.nii.gz", lab), read_labels)


@pytest.mark.parametrize("value", [15, -1, 255])
def test_labels_outside_0_14_are_refused(tmp_path, value):
    lab = np.zeros((4, 5, 6), np.int16)
    lab[1, 1, 1] = value
    message = _read_error(_nifti(tmp_path / "lab.nii.gz", lab), read_labels)
    assert f"[{value}]" in message and "0-14" in message


def test_labels_stored_as_float_integers_read(tmp_path):
    lab = np.arange(4 * 5 * 6).reshape(4, 5, 6) % 15
    vol = read_labels(_nifti(tmp_path / "lab.nii.gz", lab.astype(np.float32)))
    assert vol.array.dtype == np.uint8
    np.testing.assert_array_equal(vol.array, np.flip(lab.T, (1, 2)))
