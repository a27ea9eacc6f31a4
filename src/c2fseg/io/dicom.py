"""Read one DICOM series from a folder, refusing mixed series and gaps between slices.

ITK reads a series with a missing slice as if the slices were evenly spaced (wrong geometry,
only a warning on stderr), so the slice positions are checked before reading.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from c2fseg.io.errors import ImageReadError, itk_reason
from c2fseg.io.geometry import GEOMETRY_TOLERANCE

#: Allowed deviation of a slice gap from the typical gap: max(absolute mm, fraction of gap).
GAP_TOLERANCE_MM = 0.02
GAP_TOLERANCE_FRACTION = 0.1


def list_series(folder: Path) -> list[str]:
    """Series instance UIDs of the DICOM files directly inside ``folder``."""
    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> tuple[sitk.Image, dict]:
    """Read the single series in ``folder`` (or ``series_uid``); returns the image and facts."""
    folder = Path(folder)
    uids = list_series(folder)
    if not uids:
        raise ImageReadError(
            f"{folder}: the folder holds no readable DICOM series. Pass an image file "
            "(.nii.gz, .nrrd, .mha) or a folder that contains the DICOM slices of one series."
        )
    if series_uid is None:
        if len(uids) > 1:
            counts = ", ".join(f"{u} ({_count(folder, u)} files)" for u in uids)
            raise ImageReadError(
                f"{folder}: the folder mixes {len(uids)} DICOM series: {counts}. Pass one "
                "series: move each series into its own folder and give that folder."
            )
        series_uid = uids[0]
    elif series_uid not in uids:
        raise ImageReadError(f"{folder}: no DICOM series {series_uid}; found {', '.join(uids)}")
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid))
    check_slice_positions(files, folder, series_uid)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ImageReadError(
            f"{folder}: DICOM series {series_uid} cannot be read ({itk_reason(exc)}). Check that "
            "all its slices have the same size and pixel type, or re-export the series."
        ) from exc
    return image, {"series_uid": series_uid, "n_slices": len(files)}


def _count(folder: Path, uid: str) -> int:
    return len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))


def _slice_header(path: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(ImagePositionPatient, ImageOrientationPatient) of one file, None where missing."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()

    def floats(tag: str) -> np.ndarray | None:
        if not reader.HasMetaDataKey(tag):
            return None
        try:
            return np.array([float(v) for v in reader.GetMetaData(tag).split("\\")])
        except ValueError:
            return None

    return floats("0020|0032"), floats("0020|0037")


def check_slice_positions(files: list[str], folder: Path, uid: str) -> None:
    """Raise ImageReadError if slices are duplicated, missing or differently oriented."""
    if len(files) < 3:
        return
    headers = [_slice_header(f) for f in files]
    if any(p is None or o is None or p.size != 3 or o.size != 6 for p, o in headers):
        return  # no geometry tags: nothing to check against (ITK uses defaults)
    orients = np.array([o for _, o in headers])
    if np.abs(orients - orients[0]).max() > GEOMETRY_TOLERANCE:
        raise ImageReadError(
            f"{folder}: DICOM series {uid} mixes slice orientations. Pass a series whose "
            "slices all have the same orientation (re-export or split the series)."
        )
    normal = np.cross(orients[0][:3], orients[0][3:])
    pos = np.sort(np.array([p for p, _ in headers]) @ normal)
    gaps = np.diff(pos)
    typical = float(np.median(gaps))
    if gaps.min() <= GEOMETRY_TOLERANCE or typical <= 0:
        raise ImageReadError(
            f"{folder}: DICOM series {uid} has several slices at the same position "
            f"(e.g. {pos[int(np.argmin(gaps))]:.2f} mm): it probably mixes two acquisitions. "
            "Pass a folder with one complete acquisition."
        )
    tol = max(GAP_TOLERANCE_MM, GAP_TOLERANCE_FRACTION * typical)
    bad = np.flatnonzero(np.abs(gaps - typical) > tol)
    if bad.size:
        i = int(bad[0])
        raise ImageReadError(
            f"{folder}: DICOM series {uid} has non-uniform slice positions: a gap of "
            f"{gaps[i]:.3f} mm between slices at {pos[i]:.2f} and {pos[i + 1]:.2f} mm where the "
            f"typical spacing is {typical:.3f} mm ({bad.size} such gap(s); slices missing?). "
            "Re-export the complete series."
        )
