"""Read images into canonical form (:mod:`c2fseg.io.geometry`) and write label maps back exactly.

Reading goes through the checks of :mod:`c2fseg.io.validate`; writing is atomic and gives the
output the input's own size, spacing, origin and direction.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from c2fseg.io.errors import ImageReadError
from c2fseg.io.formats import DETACHED_HEADER_EXTENSIONS, image_extension
from c2fseg.io.geometry import (
    Geometry,
    from_canonical,
    geometry_from_header,
    make_geometry,
    to_canonical,
)
from c2fseg.io.validate import (
    check_ct_values,
    check_label_values,
    emit_warnings,
    read_scalar_3d,
)

__all__ = [
    # the header model lives in c2fseg.io.geometry; these names stay importable from here
    "Geometry",
    "from_canonical",
    "make_geometry",
    "to_canonical",
    "ImageReadError",
    "Volume",
    "atomic_write",
    "canonical_to_sitk",
    "geometry_of",
    "read_geometry",
    "read_image",
    "read_labels",
    "write_labels",
    "write_volume",
]


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


def geometry_of(image: sitk.Image | sitk.ImageFileReader) -> Geometry:
    """The :class:`Geometry` of a 3D SimpleITK image (or a reader after ReadImageInformation)."""
    return geometry_from_header(image.GetSize(), image.GetSpacing(), image.GetOrigin(),
                                image.GetDirection())


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
    return geometry_of(read_scalar_3d(path)[0])


def _read(path: str | os.PathLike, dtype: type) -> tuple[np.ndarray, Geometry, dict]:
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
    path = Path(path)
    arr, geom, meta = _read(path, np.float32)
    values = check_ct_values(arr, path)
    meta["warnings"] = meta["warnings"] + values.pop("warnings")
    meta.update(values)
    emit_warnings(meta["warnings"])
    return Volume(arr, geom, path, meta)


def read_labels(path: str | os.PathLike) -> Volume:
    """Read a label map (integer values 0-14) as uint8 in canonical form."""
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
