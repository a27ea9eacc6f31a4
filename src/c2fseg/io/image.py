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
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from c2fseg.io.errors import ImageReadError
from c2fseg.io.formats import DETACHED_HEADER_EXTENSIONS, image_extension

__all__ = [
    "Geometry",
    "ImageReadError",
    "Volume",
    "GEOMETRY_TOLERANCE",
    "canonical_to_sitk",
    "geometry_difference",
    "header_matches",
    "make_geometry",
    "read_geometry",
    "read_image",
    "read_labels",
    "write_labels",
    "write_volume",
]


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


def geometry_of(image: sitk.Image | sitk.ImageFileReader) -> Geometry:
    """Describe a 3D SimpleITK image (or a reader after ReadImageInformation) and the axis
    permutation/flips that make it canonical."""
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


def read_geometry(path: str | os.PathLike) -> Geometry:
    """The geometry :func:`read_image` would give ``path``, from the header alone when possible.

    Cheap for 3D scalar files (no voxel data read, no integrity checks); 2D/4D files and DICOM
    folders are fully read. Raises :class:`ImageReadError` if the header cannot be read.
    """
    path = Path(path)
    if path.is_file():
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            reader = None
        if reader is not None and reader.GetDimension() == 3 and reader.GetNumberOfComponents() == 1:
            return geometry_of(reader)
    from c2fseg.io.validate import read_scalar_3d

    return geometry_of(read_scalar_3d(path)[0])


def to_canonical(stored: np.ndarray, geom: Geometry, dtype: np.dtype | None = None) -> np.ndarray:
    """Stored numpy array (SimpleITK [z, y, x] index order) -> canonical array (one copy)."""
    arr = np.transpose(stored, geom.transpose)
    flips = tuple(a for a in range(3) if geom.flip[a])
    if flips:
        arr = np.flip(arr, axis=flips)
    out = np.empty(arr.shape, dtype=dtype or stored.dtype)
    out[...] = arr
    return out


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


def _read(path: str | os.PathLike, dtype: type) -> tuple[np.ndarray, Geometry, dict]:
    from c2fseg.io.validate import read_scalar_3d

    image, meta = read_scalar_3d(Path(path))
    geom = geometry_of(image)
    arr = to_canonical(sitk.GetArrayViewFromImage(image), geom, dtype)
    return arr, geom, meta


def read_image(path: str | os.PathLike) -> Volume:
    """Read a CT (NIfTI, NRRD, MHA or a DICOM series folder) as float32 HU in canonical form.

    Raises :class:`ImageReadError` for inputs that cannot be used (empty, truncated, corrupt,
    4D with several volumes, RGB/vector, NaN/inf, mixed or incomplete DICOM series).
    Suspicious but usable inputs (values not in HU, constant, one slice, qform/sform
    disagreement) are read, with messages in ``meta["warnings"]`` also sent to
    :func:`warnings.warn` (category :class:`c2fseg.io.validate.ImageValueWarning`).
    """
    from c2fseg.io.validate import check_ct_values, emit_warnings

    path = Path(path)
    arr, geom, meta = _read(path, np.float32)
    values = check_ct_values(arr, path)
    meta["warnings"] = meta["warnings"] + values.pop("warnings")
    meta.update(values)
    emit_warnings(meta["warnings"])
    return Volume(arr, geom, path, meta)


def read_labels(path: str | os.PathLike) -> Volume:
    """Read a label map (integer values 0-14) as uint8 in canonical form."""
    from c2fseg.io.validate import check_label_values

    path = Path(path)
    image_arr, geom, meta = _read(path, None)
    arr = check_label_values(image_arr, path)
    return Volume(arr, geom, path, meta)


def canonical_to_sitk(canonical: np.ndarray, geom: Geometry) -> sitk.Image:
    """Build a SimpleITK image with exactly the original header from a canonical array."""
    image = sitk.GetImageFromArray(from_canonical(canonical, geom))
    image.SetSpacing(geom.spacing)
    image.SetOrigin(geom.origin)
    image.SetDirection(geom.direction)
    return image


#: Default largest header difference treated as equal: spacing/origin in mm (relative above
#: 1 mm, so float32 NIfTI headers of large origins still match), direction cosines absolute.
GEOMETRY_TOLERANCE = 1e-4


def _header_fields(header) -> dict[str, tuple]:
    """Size, spacing, origin and direction of a Geometry, SimpleITK image or header reader."""
    if isinstance(header, Geometry):
        return {"size": header.size, "spacing": header.spacing, "origin": header.origin,
                "direction": header.direction}
    return {"size": tuple(header.GetSize()), "spacing": header.GetSpacing(),
            "origin": header.GetOrigin(), "direction": header.GetDirection()}


def geometry_difference(a, b, tol: float = GEOMETRY_TOLERANCE) -> str | None:
    """How two headers differ (e.g. ``"origin (0, 0, 0) vs (0, 0, 1)"``), or None if they match.

    ``a`` and ``b`` may each be a :class:`Geometry`, a ``SimpleITK.Image`` or a
    ``SimpleITK.ImageFileReader`` after ``ReadImageInformation``. Sizes must be equal; spacing,
    origin and direction may differ by ``tol`` times max(1, |value|): enough for headers stored
    in float32, far below what a real grid or orientation error produces.
    """
    fa, fb = _header_fields(a), _header_fields(b)
    if tuple(fa["size"]) != tuple(fb["size"]):
        return f"size {tuple(fa['size'])} vs {tuple(fb['size'])}"
    for field_name in ("spacing", "origin", "direction"):
        va = np.asarray(fa[field_name], dtype=float)
        vb = np.asarray(fb[field_name], dtype=float)
        if va.shape != vb.shape or np.any(
            np.abs(va - vb) > tol * np.maximum(1.0, np.maximum(np.abs(va), np.abs(vb)))
        ):
            return f"{field_name} {_fmt(va)} vs {_fmt(vb)}"
    return None


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def header_matches(image: sitk.Image, geom: Geometry, tol_mm: float = GEOMETRY_TOLERANCE) -> bool:
    """Whether 3D ``image`` has ``geom``'s size, spacing, origin and direction (within
    ``tol_mm``, see :func:`geometry_difference`)."""
    return image.GetDimension() == 3 and geometry_difference(image, geom, tol_mm) is None


def _check_output_path(path: Path) -> str:
    ext = image_extension(path)
    if ext is None:
        raise ValueError(
            f"{path}: cannot write this file type; name it .nii.gz, .nii, .nrrd, .nhdr, .mha "
            "or .mhd"
        )
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give a file name such as case.nii.gz")
    return ext


def atomic_write(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``image`` beside ``path`` under a temporary name, then rename it into place.

    On any error nothing is left at ``path`` (an existing file there stays untouched).
    Detached-header formats (.nhdr, .mhd) are written into a temporary folder under their
    final names (the header names its data file), data file moved first, header last.
    """
    path = Path(path)
    ext = _check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext in DETACHED_HEADER_EXTENSIONS:
        return _atomic_write_detached(image, path, compress)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{ext}", dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, useCompression=compress)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _atomic_write_detached(image: sitk.Image, path: Path, compress: bool) -> Path:
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        sitk.WriteImage(image, str(tmp_dir / path.name), useCompression=compress)
        for part in sorted(tmp_dir.iterdir(), key=lambda p: p.name == path.name):
            os.replace(part, path.parent / part.name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def write_labels(labels: np.ndarray, geom: Geometry, path: str | os.PathLike) -> Path:
    """Write a canonical label map as uint8 with the input's exact geometry, atomically."""
    labels = np.asarray(labels)
    if labels.dtype != np.uint8:
        if labels.dtype.kind not in "biuf":
            raise ValueError(f"label map has dtype {labels.dtype}; expected integers 0-255")
        if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
            raise ValueError("label map holds non-integer values; round or argmax it first")
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise ValueError("label values must fit in uint8 (0-255)")
        labels = labels.astype(np.uint8)
    return atomic_write(canonical_to_sitk(labels, geom), path)


def write_volume(array: np.ndarray, geom: Geometry, path: str | os.PathLike) -> Path:
    """Write any canonical array (CT or labels) with ``geom``'s header, atomically."""
    return atomic_write(canonical_to_sitk(np.asarray(array), geom), path)


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
