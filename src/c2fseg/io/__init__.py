"""Geometry-safe CT and label-map I/O (SimpleITK): canonical form, checks, discovery, writing."""

from c2fseg.io.discover import CaseInput, check_output_dir, find_cases
from c2fseg.io.errors import FolderError, ImageReadError
from c2fseg.io.image import (
    GEOMETRY_TOLERANCE,
    Geometry,
    Volume,
    canonical_to_sitk,
    geometry_difference,
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
    "GEOMETRY_TOLERANCE",
    "Geometry",
    "ImageReadError",
    "ImageValueWarning",
    "Volume",
    "canonical_to_sitk",
    "check_output_dir",
    "find_cases",
    "geometry_difference",
    "header_matches",
    "is_valid_output",
    "make_geometry",
    "read_geometry",
    "read_image",
    "read_labels",
    "write_labels",
    "write_volume",
]
