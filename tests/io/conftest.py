"""Builders for synthetic images with known geometry, constructed independently of c2fseg.io.

``store`` lays a canonical array ``C[k, j, i]`` (axes toward Superior, Posterior, Left) out in
an arbitrary voxel order by transposing/flipping it together with a grid of its canonical
indices, then derives the voxel-to-world affine from those index grids, so the expected
answer never comes from the code under test.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

#: All 48 voxel orders: (axis permutation, flips) of the stored (nibabel i, j, k) axes.
ORIENTATIONS = [
    (perm, flips)
    for perm in itertools.permutations(range(3))
    for flips in itertools.product((False, True), repeat=3)
]


def rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A random rotation of at most ``max_deg`` degrees about a random axis."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-max_deg, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def store(canonical, spacing_zyx, origin_lps, perm, flips, rot=None):
    """Stored array (nibabel i, j, k order) and its RAS affine for a canonical array.

    Stored axis ``a`` is canonical axis ``perm[a]`` (reversed if ``flips[a]``). World position
    of canonical voxel (k, j, i): origin + rot @ (i*sx, j*sy, k*sz) in LPS.
    """
    grids = np.indices(canonical.shape)  # canonical (k, j, i) of every voxel
    arr = np.transpose(canonical, perm)
    grids = np.stack([np.transpose(g, perm) for g in grids])
    for ax in range(3):
        if flips[ax]:
            arr = np.flip(arr, ax)
            grids = np.flip(grids, ax + 1)
    rot = np.eye(3) if rot is None else np.asarray(rot)
    sz, sy, sx = spacing_zyx

    def world(index):
        k, j, i = grids[(slice(None), *index)]
        return np.asarray(origin_lps, float) + rot @ np.array([i * sx, j * sy, k * sz])

    w0 = world((0, 0, 0))
    lps = np.eye(4)
    lps[:3, 3] = w0
    for a in range(3):
        unit = [0, 0, 0]
        unit[a] = 1
        lps[:3, a] = world(tuple(unit)) - w0
    ras = np.eye(4)
    ras[:3] = LPS_TO_RAS @ lps[:3]
    return np.ascontiguousarray(arr), ras


def ras_to_sitk(arr, ras, pixel=None):
    """A SimpleITK image for a nibabel-order array and RAS affine (for .nrrd/.mha files)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(arr, (2, 1, 0))))
    lps = LPS_TO_RAS @ ras[:3]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:, 3].tolist())
    return image


def save(arr, ras, path, variant="plain"):
    """Write ``arr`` with affine ``ras`` to ``path`` (.nii/.nii.gz via nibabel, else SimpleITK).

    NIfTI variants: plain (nibabel default: sform only), qform (qform only), both (qform and
    sform), bigendian, slope (uint16 with scl_inter -2048), halfslope (int16, scl_slope 0.5).
    """
    path = str(path)
    if not path.endswith((".nii", ".nii.gz")):
        sitk.WriteImage(ras_to_sitk(arr, ras), path, useCompression=True)
        return path
    header = nib.Nifti1Header(endianness=">" if variant == "bigendian" else "<")
    data = arr
    if variant == "bigendian":
        data = arr.astype(arr.dtype.newbyteorder(">"))
    img = nib.Nifti1Image(data, None, header=header)
    img.set_sform(ras, code=0 if variant == "qform" else 2)
    img.set_qform(ras, code=1 if variant in ("qform", "both") else 0)
    if variant == "slope":
        img = nib.Nifti1Image((arr + 2048).astype(np.uint16), None, header=img.header)
        img.header.set_slope_inter(1.0, -2048.0)
    elif variant == "halfslope":
        img = nib.Nifti1Image(np.round((arr + 1024) * 2).astype(np.int16), None, header=img.header)
        img.header.set_slope_inter(0.5, -1024.0)
    nib.save(img, path)
    return path


def load_nifti(path):
    """(scaled data, affine) of a NIfTI via nibabel."""
    img = nib.load(str(path))
    return np.asarray(img.get_fdata(dtype=np.float64)), img.affine


def random_ct(rng, shape, dtype=np.int16):
    """CT-like values: air, soft tissue and bone, in Hounsfield units."""
    values = rng.choice([-1024, -1000, -100, 0, 40, 60, 300, 1200], size=shape)
    return (values + rng.integers(-5, 6, size=shape)).astype(dtype)


@pytest.fixture
def kit():
    """The builders above, as one fixture (test modules have no package to import from)."""
    return SimpleNamespace(
        ORIENTATIONS=ORIENTATIONS,
        rotation=rotation,
        store=store,
        ras_to_sitk=ras_to_sitk,
        save=save,
        load_nifti=load_nifti,
        random_ct=random_ct,
    )
