"""Geometry-safe CT and label-map I/O (SimpleITK)."""

from c2fseg.io.image import (
    Geometry,
    ImageReadError,
    Volume,
    canonical_to_sitk,
    read_image,
    read_labels,
    write_labels,
    write_volume,
)

__all__ = [
    "Geometry",
    "ImageReadError",
    "Volume",
    "canonical_to_sitk",
    "read_image",
    "read_labels",
    "write_labels",
    "write_volume",
]
