"""Checks on input images and their values; every error names the file, the problem and the fix.

Decisions (canonical form: :mod:`c2fseg.io.geometry`):

- 2D images are read as a 3D volume of one slice (spacing 1 mm along the added axis) and the
  label map is written back as that one-slice 3D volume; a warning says results on one slice
  are unreliable. 3D single-slice images are read as they are (same warning).
- 4D images with a trailing axis of 1 are read as 3D; several volumes are refused.
- Vector/RGB/complex pixels are refused. NaN/inf voxels are refused (never replaced silently).
- Values that do not look like Hounsfield units (0-1, 0-255, no negative values, absurd ranges)
  and constant images give a warning in ``Volume.meta["warnings"]`` and via ``warnings.warn``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from c2fseg.io.dicom import read_dicom_series
from c2fseg.io.errors import ImageReadError, LabelValueError, itk_reason
from c2fseg.io.formats import image_extension
from c2fseg.io.geometry import Geometry, header_matches
from c2fseg.io.integrity import check_file
from c2fseg.labels import MAX_LABEL

#: Above this many voxels, value percentiles are estimated on a strided sample.
_SAMPLE = 1_000_000


class ImageValueWarning(UserWarning):
    """An image was read but its values or geometry look wrong for an abdominal CT."""


def read_scalar_3d(path: Path) -> tuple[sitk.Image, dict]:
    """Read ``path`` as a 3D scalar image; returns it and meta facts (incl. ``warnings``)."""
    path = Path(path)
    check_file(path)
    meta: dict = {"warnings": []}
    if path.is_dir():
        image, facts = read_dicom_series(path)
        meta.update(facts, source="dicom")
    else:
        image = _read_file(path)
        meta["source"] = image_extension(path)
    _check_pixels(image, path)
    image = _to_3d(image, path, meta["warnings"])
    if meta["source"] in (".nii", ".nii.gz"):
        check_nifti_finite(path)
        note = nifti_xform_note(path, image)
        if note:
            meta["warnings"].append(note)
    if min(image.GetSize()) == 1:
        meta["warnings"].append(
            f"{path}: the image has a single slice (size {image.GetSize()}); a 3D model sees "
            "no context above or below it, so results are unreliable."
        )
    return image, meta


def _read_file(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ImageReadError(
            f"{path}: cannot be read as an image ({itk_reason(exc)}). Check that it is a valid "
            f"{image_extension(path)} file and not damaged; re-export it if needed."
        ) from exc


def _check_pixels(image: sitk.Image, path: Path) -> None:
    n = image.GetNumberOfComponentsPerPixel()
    if n != 1 or "complex" in image.GetPixelIDTypeAsString().lower():
        raise ImageReadError(
            f"{path}: pixels have {n} components ({image.GetPixelIDTypeAsString()}, e.g. RGB "
            "or vector data); a CT has one value per voxel. Export the image as grayscale "
            "(scalar) Hounsfield units."
        )


def _to_3d(image: sitk.Image, path: Path, notes: list[str]) -> sitk.Image:
    """Make a 3D image from 2D (one slice) or 4D-with-one-volume input; refuse the rest."""
    dim, size = image.GetDimension(), image.GetSize()
    if dim == 3:
        return image
    if dim == 2:
        notes.append(f"{path}: 2D image read as a 3D volume of one slice (1 mm thick).")
        return sitk.JoinSeries(image)
    if dim >= 4 and all(s == 1 for s in size[3:]):
        extractor = sitk.ExtractImageFilter()
        extractor.SetSize(list(size[:3]) + [0] * (dim - 3))
        extractor.SetIndex([0] * dim)
        extractor.SetDirectionCollapseToStrategy(extractor.DIRECTIONCOLLAPSETOSUBMATRIX)
        return extractor.Execute(image)
    if dim >= 4:
        n = int(np.prod(size[3:]))
        raise ImageReadError(
            f"{path}: {dim}D image with {n} volumes (size {size}); c2fseg segments one 3D CT "
            "and never picks a volume for you. Split the file and pass the volume to segment."
        )
    raise ImageReadError(f"{path}: {dim}D image; expected a 3D CT volume.")


def check_nifti_finite(path: Path) -> None:
    """Refuse NaN/inf in a float NIfTI: ITK silently turns them into 0 while reading."""
    import nibabel as nib

    proxy = nib.load(str(path)).dataobj
    if np.dtype(proxy.dtype).kind != "f":
        return
    raw = np.asarray(proxy.get_unscaled())
    _raise_non_finite(raw, path)


def _raise_non_finite(arr: np.ndarray, path: Path) -> None:
    finite = np.isfinite(arr)
    if finite.all():
        return
    n_nan = int(np.isnan(arr).sum())
    n_inf = int(arr.size - finite.sum()) - n_nan
    raise ImageReadError(
        f"{path}: {n_nan} NaN and {n_inf} infinite voxel values. A CT must hold finite "
        "Hounsfield units; replace them (for example with -1024, air) or re-export the CT."
    )


def nifti_xform_note(path: Path, image: sitk.Image) -> str | None:
    """A warning if a NIfTI's qform and sform both apply but disagree (tools differ on which)."""
    try:
        import nibabel as nib

        header = nib.load(str(path)).header
        qcode, scode = int(header["qform_code"]), int(header["sform_code"])
        if qcode <= 0 or scode <= 0:
            return None
        qform, sform = header.get_qform(), header.get_sform()
    except Exception:  # noqa: BLE001 - the check is advisory; ITK already read the file
        return None
    if np.allclose(qform, sform, atol=1e-3):
        return None
    used = "qform" if np.allclose(_itk_affine(image), qform, atol=1e-3) else "sform"
    return (
        f"{path}: the NIfTI qform and sform disagree (max difference "
        f"{np.abs(qform - sform).max():.3g}); c2fseg used the {used} (as ITK does) and writes "
        "outputs with it, but nibabel/FSL use the sform. Make them agree if that is not intended."
    )


def _itk_affine(image: sitk.Image) -> np.ndarray:
    """RAS voxel-to-world affine of a 3D SimpleITK image (NIfTI convention)."""
    d = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    aff = np.eye(4)
    aff[:3, :3] = np.diag([-1, -1, 1]) @ d
    aff[:3, 3] = np.diag([-1, -1, 1]) @ np.array(image.GetOrigin())
    return aff


def check_ct_values(arr: np.ndarray, path: Path) -> dict:
    """Refuse empty/non-finite images; return facts incl. warnings for values that are not HU."""
    if arr.size == 0:
        raise ImageReadError(f"{path}: the image has no voxels (size {arr.shape}).")
    _raise_non_finite(arr, path)
    lo, hi = float(arr.min()), float(arr.max())
    return {"value_range": (lo, hi), "warnings": hu_warnings(arr, lo, hi, path)}


def hu_warnings(arr: np.ndarray, lo: float, hi: float, path: Path) -> list[str]:
    """Warnings for value ranges that do not look like a CT in Hounsfield units."""
    fix = ("c2fseg expects CT in Hounsfield units (air about -1000, soft tissue 0-100, bone "
           "above 300); results will likely be empty or wrong. Pass the original CT.")
    if lo == hi:
        return [f"{path}: constant image (every voxel is {lo:g}); the result will be empty."]
    if lo >= -1.0 and hi <= 1.0:
        return [f"{path}: values lie in [{lo:g}, {hi:g}], a normalised range, not HU. {fix}"]
    if lo >= 0 and hi <= 255:
        return [f"{path}: values lie in [{lo:g}, {hi:g}], like an 8-bit (0-255) image, not HU. {fix}"]
    if lo >= 0:
        return [
            f"{path}: no negative values (range [{lo:g}, {hi:g}]): this looks like MR, or a CT "
            "stored without its rescale intercept (check scl_inter / RescaleIntercept). " + fix
        ]
    sample = arr.ravel()[:: max(1, arr.size // _SAMPLE)]
    p1, p99 = np.percentile(sample, [1, 99])
    if hi > 1e5 or lo < -1e4 or (p99 - p1) < 50:
        return [f"{path}: values [{lo:g}, {hi:g}] (1-99% range [{p1:g}, {p99:g}]) are not "
                f"a plausible HU distribution. {fix}"]
    return []


def emit_warnings(notes: list[str]) -> None:
    """Send each note through :mod:`warnings` so callers and logs see it."""
    for note in notes:
        warnings.warn(note, ImageValueWarning, stacklevel=3)


def check_label_values(arr: np.ndarray, path: Path) -> np.ndarray:
    """Labels must be whole numbers 0-14; returns them as uint8 (``arr`` itself if it already is
    uint8; :class:`LabelValueError` lists the offending values)."""
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            raise LabelValueError(
                f"{path}: label values must be whole numbers 0-{MAX_LABEL}; found non-integer "
                f"values {_examples(arr[bad])} in {int(bad.sum())} voxels. Check that this is a "
                "label map (not a CT or a probability map) and was not resampled with "
                "interpolation."
            )
    if arr.size and (arr.min() < 0 or arr.max() > MAX_LABEL):
        bad = (arr < 0) | (arr > MAX_LABEL)
        raise LabelValueError(
            f"{path}: label values must be 0-{MAX_LABEL} (FLARE23 labels); found "
            f"{_examples(arr[bad])} in {int(bad.sum())} voxels. Remap the labels to FLARE23 ids."
        )
    return arr.astype(np.uint8, copy=False)


def _examples(values: np.ndarray, n: int = 10) -> str:
    uniq = np.unique(values)
    shown = ", ".join(f"{v:g}" for v in uniq[:n].tolist())
    return f"[{shown}{', ...' if uniq.size > n else ''}]"


def is_valid_output(path: str | Path, geometry: Geometry) -> bool:
    """Whether ``path`` is a complete, readable label map with exactly ``geometry``'s header.

    Used to decide whether a previous run's output can be kept: the file is fully read (gzip
    stream verified), must be a 3D scalar integer image with values 0-14 and the expected
    size, spacing, origin and direction.
    """
    path = Path(path)
    try:
        check_file(path)
        if not path.is_file():
            return False
        image = sitk.ReadImage(str(path))
    except (ImageReadError, RuntimeError, OSError):
        return False
    if image.GetNumberOfComponentsPerPixel() != 1 or not header_matches(image, geometry):
        return False
    arr = sitk.GetArrayViewFromImage(image)
    if arr.dtype.kind not in "iu":
        return False
    return bool(arr.size == 0 or (arr.min() >= 0 and arr.max() <= MAX_LABEL))
