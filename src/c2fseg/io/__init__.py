"""Geometry-safe CT and label-map I/O (SimpleITK): canonical form, checks, discovery, writing."""

from c2fseg.io.discover import CaseInput, check_output_dir, find_cases
from c2fseg.io.errors import FolderError, ImageReadError
from c2fseg.io.image import (
    Geometry,
    Volume,
    canonical_to_sitk,
    header_matches,
    make_geometry,
    read_geometry,
    read_image,
    read_labels,
    write_labels,
    write_volume,
)
from c2fseg.io.validate import ImageValueWarning, is_valid_output

__all__ = [
    "CaseInput",
    "FolderError",
    "Geometry",
    "ImageReadError",
    "ImageValueWarning",
    "Volume",
    "canonical_to_sitk",
    "check_output_dir",
    "find_cases",
    "header_matches",
    "is_valid_output",
    "make_geometry",
    "read_geometry",
    "read_image",
    "read_labels",
    "write_labels",
    "write_volume",
]
