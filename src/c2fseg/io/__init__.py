"""Geometry-safe CT and label-map I/O (SimpleITK): canonical form, checks, discovery, writing.

Modules: ``geometry`` (header model, canonical transforms, header comparison, the tolerance; no
file I/O), ``image`` (reading and atomic writing), ``validate``/``integrity``/``dicom`` (checks
while reading), ``discover`` (finding and naming cases in folders), ``formats``, ``errors``.
"""

from c2fseg.io.discover import CaseInput, check_output_dir, find_cases
from c2fseg.io.errors import FolderError, ImageReadError, LabelValueError
from c2fseg.io.geometry import (
    GEOMETRY_TOLERANCE,
    Geometry,
    geometry_difference,
    header_matches,
    make_geometry,
)
from c2fseg.io.image import (
    Volume,
    canonical_to_sitk,
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
    "LabelValueError",
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
