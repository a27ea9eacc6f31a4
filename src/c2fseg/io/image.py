"""Read images into one canonical in-memory form and write label maps back with exact geometry.

Canonical form: a numpy array indexed ``[k, j, i]`` whose axes run toward patient Superior,
Posterior and Left (world LPS axes z, y, x), i.e. what SimpleITK would give for an image with an
identity direction matrix. Spacing is stored in the same (z, y, x) order. Getting there only
permutes and flips array axes (no resampling), so it is undone exactly on output: the written
file gets the input's own size, spacing, origin and direction, copied from its header.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk


class ImageReadError(ValueError):
    """An input image cannot be used; the message names the file, the problem and the fix."""


@dataclass(frozen=True)
class Geometry:
    """The original header of a file and how its array was reoriented to canonical form."""

    size: tuple[int, int, int]  # SimpleITK (x, y, z) order, as stored
    spacing: tuple[float, float, float]  # SimpleITK order
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 values, row-major, SimpleITK convention
    transpose: tuple[int, int, int]  # canonical = np.transpose(stored_array, transpose)
    flip: tuple[bool, bool, bool]  # then flipped along these canonical axes

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        stored = tuple(reversed(self.size))
        return tuple(stored[a] for a in self.transpose)  # type: ignore[return-value]

    @property
    def canonical_spacing(self) -> tuple[float, float, float]:
        stored = tuple(reversed(self.spacing))
        return tuple(stored[a] for a in self.transpose)  # type: ignore[return-value]

    @property
    def canonical_origin(self) -> tuple[float, float, float]:
        """World (LPS, x-y-z) position of canonical voxel [0, 0, 0]."""
        index = [0.0, 0.0, 0.0]  # SimpleITK (x, y, z) index of that voxel in the stored image
        for c in range(3):
            stored_np_axis = self.transpose[c]
            sitk_axis = 2 - stored_np_axis
            if self.flip[c]:
                index[sitk_axis] = self.size[sitk_axis] - 1
        d = np.array(self.direction).reshape(3, 3)
        pos = np.array(self.origin) + d @ (np.array(index) * np.array(self.spacing))
        return tuple(float(v) for v in pos)  # type: ignore[return-value]


@dataclass
class Volume:
    """An image in canonical form plus the geometry needed to write results back exactly."""

    array: np.ndarray  # canonical [z, y, x]; float32 HU for CT, uint8 for labels
    geometry: Geometry
    path: Path | None = None
    meta: dict = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the canonical (z, y, x) axes."""
        return self.geometry.canonical_spacing

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


def orientation_of(direction: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """For each SimpleITK index axis, the world axis it is closest to and the sign (+1/-1).

    Chooses the axis permutation maximising the summed |cosines|, so oblique and 45-degree
    directions still map to a proper permutation.
    """
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    best = max(itertools.permutations(range(3)), key=lambda p: sum(abs(d[p[i], i]) for i in range(3)))
    signs = tuple(1 if d[best[i], i] >= 0 else -1 for i in range(3))
    return tuple(best), signs  # type: ignore[return-value]


def geometry_of(image: sitk.Image) -> Geometry:
    """Describe a 3D SimpleITK image and the axis permutation/flips that make it canonical."""
    world_axis, signs = orientation_of(np.array(image.GetDirection()))
    transpose = [0, 0, 0]
    flip = [False, False, False]
    for sitk_axis in range(3):
        canon_axis = 2 - world_axis[sitk_axis]
        transpose[canon_axis] = 2 - sitk_axis
        flip[canon_axis] = signs[sitk_axis] < 0
    return Geometry(
        size=tuple(int(s) for s in image.GetSize()),  # type: ignore[arg-type]
        spacing=tuple(float(s) for s in image.GetSpacing()),  # type: ignore[arg-type]
        origin=tuple(float(s) for s in image.GetOrigin()),  # type: ignore[arg-type]
        direction=tuple(float(s) for s in image.GetDirection()),
        transpose=tuple(transpose),  # type: ignore[arg-type]
        flip=tuple(flip),  # type: ignore[arg-type]
    )


def to_canonical(stored: np.ndarray, geom: Geometry) -> np.ndarray:
    """Stored numpy array (SimpleITK [z, y, x] index order) -> canonical array."""
    arr = np.transpose(stored, geom.transpose)
    flips = tuple(a for a in range(3) if geom.flip[a])
    if flips:
        arr = np.flip(arr, axis=flips)
    return np.ascontiguousarray(arr)


def from_canonical(canonical: np.ndarray, geom: Geometry) -> np.ndarray:
    """Exact inverse of :func:`to_canonical`."""
    if tuple(canonical.shape) != geom.canonical_shape:
        raise ValueError(
            f"array shape {canonical.shape} does not match the image's canonical shape "
            f"{geom.canonical_shape}"
        )
    flips = tuple(a for a in range(3) if geom.flip[a])
    arr = np.flip(canonical, axis=flips) if flips else canonical
    return np.ascontiguousarray(np.transpose(arr, np.argsort(geom.transpose)))


def _read_sitk(path: Path) -> sitk.Image:
    from c2fseg.io.validate import read_any  # local import: validation lives beside the reader

    return read_any(path)


def read_image(path: str | os.PathLike) -> Volume:
    """Read a CT (NIfTI, NRRD, MHA or a DICOM series folder) as float32 HU in canonical form."""
    from c2fseg.io.validate import check_ct_values

    path = Path(path)
    image = _read_sitk(path)
    geom = geometry_of(image)
    arr = to_canonical(sitk.GetArrayFromImage(image), geom).astype(np.float32, copy=False)
    meta = check_ct_values(arr, path)
    return Volume(arr, geom, path, meta)


def read_labels(path: str | os.PathLike) -> Volume:
    """Read a label map (values 0-14) as uint8 in canonical form."""
    from c2fseg.io.validate import check_label_values

    path = Path(path)
    image = _read_sitk(path)
    geom = geometry_of(image)
    arr = to_canonical(sitk.GetArrayFromImage(image), geom)
    arr = check_label_values(arr, path)
    return Volume(arr, geom, path)


def canonical_to_sitk(canonical: np.ndarray, geom: Geometry) -> sitk.Image:
    """Build a SimpleITK image with exactly the original header from a canonical array."""
    image = sitk.GetImageFromArray(from_canonical(canonical, geom))
    image.SetSpacing(geom.spacing)
    image.SetOrigin(geom.origin)
    image.SetDirection(geom.direction)
    return image


def atomic_write(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``image`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, useCompression=compress)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_labels(labels: np.ndarray, geom: Geometry, path: str | os.PathLike) -> Path:
    """Write a canonical uint8 label map with the input's exact geometry, atomically."""
    if labels.dtype != np.uint8:
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise ValueError("label values must fit in uint8")
        labels = labels.astype(np.uint8)
    return atomic_write(canonical_to_sitk(labels, geom), path)


def write_volume(array: np.ndarray, geom: Geometry, path: str | os.PathLike) -> Path:
    """Write any canonical array (CT or labels) with ``geom``'s header, atomically."""
    return atomic_write(canonical_to_sitk(array, geom), path)


def make_geometry(
    canonical_shape: tuple[int, int, int],
    canonical_spacing: tuple[float, float, float],
    canonical_origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    transpose: tuple[int, int, int] = (0, 1, 2),
    flip: tuple[bool, bool, bool] = (False, False, False),
    rotation: np.ndarray | None = None,
) -> Geometry:
    """Geometry that stores a canonical array in a chosen voxel order (and optional obliquity).

    ``transpose``/``flip`` follow :class:`Geometry`'s convention. ``rotation`` (3x3, a small
    rotation) tilts the direction cosines to make an oblique header; the stored layout stays the
    nearest one, so reading the file back gives the same canonical array.
    """
    inv = np.argsort(transpose)  # stored numpy axis -> canonical axis
    stored_shape = [canonical_shape[inv[a]] for a in range(3)]
    stored_spacing = [canonical_spacing[inv[a]] for a in range(3)]
    d = np.zeros((3, 3))
    for sitk_axis in range(3):
        canon_axis = int(inv[2 - sitk_axis])
        world_axis = 2 - canon_axis
        d[world_axis, sitk_axis] = -1.0 if flip[canon_axis] else 1.0
    corner = np.zeros(3)  # world offset (x, y, z) of stored voxel 0 from canonical voxel 0
    for c in range(3):
        if flip[c]:
            corner[2 - c] = (canonical_shape[c] - 1) * canonical_spacing[c]
    origin = np.asarray(canonical_origin, dtype=float) + corner
    if rotation is not None:
        rot = np.asarray(rotation, dtype=float)
        d = rot @ d
        origin = np.asarray(canonical_origin, dtype=float) + rot @ corner
    geom = Geometry(
        size=tuple(int(s) for s in reversed(stored_shape)),  # type: ignore[arg-type]
        spacing=tuple(float(s) for s in reversed(stored_spacing)),  # type: ignore[arg-type]
        origin=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in d.ravel()),
        transpose=tuple(int(t) for t in transpose),  # type: ignore[arg-type]
        flip=tuple(bool(f) for f in flip),  # type: ignore[arg-type]
    )
    return geom
