"""Read -> canonical -> write must reproduce the input's array and header exactly.

Inputs are built by tests/io/conftest.py independently of c2fseg.io: a canonical array is laid
out in each of the 48 voxel orders (and obliquely), stored in several formats and storage
variants, read, checked against the canonical array, written back and compared with the input.
"""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from c2fseg.io import make_geometry, read_image, read_labels, write_labels, write_volume

FORMATS = [".nii.gz", ".nii", ".nrrd", ".mha"]
SPACINGS = [(2.5, 0.8, 0.7), (5.0, 0.6, 0.6), (0.5, 0.5, 0.5), (1.0, 3.0, 0.5), (3.0, 1.5, 5.0)]


def _case(seed: int, kit, max_deg: float = 0.0, labels: bool = False):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(2, 8, size=3))
    canonical = (rng.integers(0, 15, shape).astype(np.uint8) if labels
                 else kit.random_ct(rng, shape))
    spacing = SPACINGS[seed % len(SPACINGS)]
    origin = tuple(rng.uniform(-300, 300, 3))
    rot = kit.rotation(rng, max_deg) if max_deg else None
    return canonical, spacing, origin, rot


def _check_read(vol, canonical, spacing, origin, rot):
    """The read volume is the canonical array with the canonical spacing and origin."""
    np.testing.assert_array_equal(vol.array, canonical)
    np.testing.assert_allclose(vol.spacing, spacing, rtol=1e-6)
    np.testing.assert_allclose(vol.geometry.canonical_origin, origin, atol=1e-3)
    if rot is None:  # axis-aligned: the canonical axes are exactly world z, y, x
        d = np.array(vol.geometry.direction).reshape(3, 3)
        assert np.allclose(np.abs(d).sum(axis=0), 1.0)


def _check_written(src, out, atol=1e-4):
    """Written file has the source file's array and header (nibabel / raw SimpleITK view)."""
    if str(src).endswith((".nii", ".nii.gz")):
        a, aff_a = nib.load(str(src)), None
        data_a, aff_a = np.asarray(a.get_fdata()), a.affine
        b = nib.load(str(out))
        np.testing.assert_allclose(np.asarray(b.get_fdata()), data_a, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(b.affine, aff_a, atol=atol)
        assert b.shape == a.shape
        return
    a, b = sitk.ReadImage(str(src)), sitk.ReadImage(str(out))
    np.testing.assert_allclose(sitk.GetArrayFromImage(b), sitk.GetArrayFromImage(a), atol=1e-5)
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(b.GetSpacing(), a.GetSpacing(), rtol=1e-9)
    np.testing.assert_allclose(b.GetOrigin(), a.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(b.GetDirection(), a.GetDirection(), atol=1e-9)


@pytest.mark.parametrize("index", range(48))
def test_all_48_voxel_orders_round_trip(index, tmp_path, kit):
    """Every axis permutation/flip reads to the canonical array and writes back exactly."""
    perm, flips = kit.ORIENTATIONS[index]
    fmt = FORMATS[index % len(FORMATS)]
    labels = index % 3 == 2
    canonical, spacing, origin, _ = _case(index, kit, labels=labels)
    stored, ras = kit.store(canonical, spacing, origin, perm, flips)
    src = kit.save(stored, ras, tmp_path / f"in{fmt}")
    out = tmp_path / f"out{fmt}"
    if labels:
        vol = read_labels(src)
        write_labels(vol.array, vol.geometry, out)
    else:
        vol = read_image(src)
        write_volume(vol.array, vol.geometry, out)
    _check_read(vol, canonical, spacing, origin, None)
    _check_written(src, out)


@pytest.mark.parametrize("seed", range(24))
def test_oblique_anisotropic_round_trip(seed, tmp_path, kit):
    """Oblique directions up to 30 degrees, in any voxel order, thin and thick slices."""
    canonical, spacing, origin, rot = _case(100 + seed, kit, max_deg=30.0)
    perm, flips = kit.ORIENTATIONS[(seed * 7) % 48]
    dtype = [np.int16, np.float32][seed % 2]
    stored, ras = kit.store(canonical.astype(dtype), spacing, origin, perm, flips, rot)
    fmt = FORMATS[seed % len(FORMATS)]
    src = kit.save(stored, ras, tmp_path / f"in{fmt}")
    vol = read_image(src)
    _check_read(vol, canonical, spacing, origin, rot)
    out = write_volume(vol.array, vol.geometry, tmp_path / f"out{fmt}")
    _check_written(src, out)


@pytest.mark.parametrize("variant", ["plain", "qform", "both", "bigendian", "slope", "halfslope"])
def test_nifti_storage_variants_read_to_same_hu(variant, tmp_path, kit):
    """Integer+slope/intercept, big-endian, qform-only, sform-only, both: same HU and geometry."""
    rng = np.random.default_rng(7)
    canonical = kit.random_ct(rng, (4, 5, 6))
    rot = kit.rotation(rng, 20.0)
    perm, flips = kit.ORIENTATIONS[29]
    stored, ras = kit.store(canonical, (2.0, 0.75, 0.8), (10.0, -20.0, 30.0), perm, flips, rot)
    src = kit.save(stored, ras, tmp_path / "in.nii.gz", variant=variant)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these variants is suspicious
        vol = read_image(src)
    assert vol.array.dtype == np.float32
    _check_read(vol, canonical, (2.0, 0.75, 0.8), (10.0, -20.0, 30.0), rot)
    labels = (vol.array > 0).astype(np.uint8)
    out = write_labels(labels, vol.geometry, tmp_path / "seg.nii.gz")
    seg = nib.load(str(out))
    np.testing.assert_allclose(seg.affine, ras, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(seg.dataobj), (stored > 0).astype(np.uint8))
    assert seg.get_data_dtype() == np.uint8


def test_same_volume_in_every_voxel_order_reads_identically(tmp_path, kit):
    """One volume stored 48 ways (some oblique) gives one canonical array and origin."""
    rng = np.random.default_rng(3)
    canonical = kit.random_ct(rng, (3, 4, 5))
    rot = kit.rotation(rng, 15.0)
    arrays, origins = [], []
    for n, (perm, flips) in enumerate(kit.ORIENTATIONS):
        stored, ras = kit.store(canonical, (3.0, 0.9, 0.7), (-5.0, 7.0, 100.0), perm, flips,
                                rot if n % 2 else None)
        vol = read_image(kit.save(stored, ras, tmp_path / f"v{n}.nii.gz"))
        arrays.append(vol.array)
        origins.append(vol.geometry.canonical_origin)
    for arr in arrays:
        np.testing.assert_array_equal(arr, arrays[0])
    np.testing.assert_allclose(origins, [origins[0]] * 48, atol=1e-3)
    np.testing.assert_array_equal(arrays[0], canonical)


@pytest.mark.parametrize("index", range(0, 48, 5))
def test_make_geometry_stores_canonical_array(index, tmp_path, kit):
    """make_geometry + write_volume produce files that read back to the same canonical array."""
    perm, flips = kit.ORIENTATIONS[index]
    rng = np.random.default_rng(index)
    canonical = kit.random_ct(rng, (3, 4, 5)).astype(np.float32)
    rot = kit.rotation(rng, 25.0) if index % 2 else None
    transpose = tuple(int(a) for a in np.argsort(perm))  # any permutation will do
    geom = make_geometry((3, 4, 5), (2.0, 1.0, 0.5), (1.0, 2.0, 3.0), transpose, flips, rot)
    vol = read_image(write_volume(canonical, geom, tmp_path / "g.nrrd"))
    np.testing.assert_array_equal(vol.array, canonical)
    np.testing.assert_allclose(vol.spacing, (2.0, 1.0, 0.5))
    np.testing.assert_allclose(vol.geometry.canonical_origin, (1.0, 2.0, 3.0), atol=1e-9)
    assert vol.geometry.transpose == transpose and vol.geometry.flip == flips
