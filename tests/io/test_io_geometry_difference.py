"""geometry_difference: one header comparison for Geometry objects, images and header readers."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from c2fseg.io import geometry_difference, header_matches, make_geometry, read_geometry


def _geom(origin=(10.0, -20.0, 300.0), spacing=(2.5, 0.8, 0.7), shape=(4, 5, 6), rot=None):
    return make_geometry(shape, spacing, origin, (0, 1, 2), (False, False, False), rot)


def _image(geom) -> sitk.Image:
    image = sitk.Image(list(geom.size), sitk.sitkUInt8)
    image.SetSpacing(geom.spacing)
    image.SetOrigin(geom.origin)
    image.SetDirection(geom.direction)
    return image


@pytest.mark.parametrize(
    "other, field",
    [
        (_geom(shape=(4, 5, 7)), "size"),
        (_geom(spacing=(2.5, 0.8, 0.71)), "spacing"),
        (_geom(origin=(10.0, -20.0, 301.0)), "origin"),
        (_geom(rot=np.array([[1, 0, 0], [0, np.cos(0.01), -np.sin(0.01)],
                             [0, np.sin(0.01), np.cos(0.01)]])), "direction"),
    ],
)
def test_names_the_field_that_differs(other, field):
    why = geometry_difference(_geom(), other)
    assert why is not None and why.startswith(field)
    assert geometry_difference(_image(_geom()), _image(other)).startswith(field)  # sitk images
    assert not header_matches(_image(other), _geom())


def test_float32_header_noise_is_tolerated_and_relative_for_large_values():
    ref = _geom()
    noisy = _geom(origin=(10.0, -20.0, float(np.float32(300.0 + 1e-5))))
    assert geometry_difference(ref, noisy) is None
    assert geometry_difference(ref, _geom(origin=(10.0, -20.0, 300.02))) is None  # 1e-4 * 300
    assert geometry_difference(ref, _geom(origin=(10.0, -20.0, 300.05))) is not None
    assert geometry_difference(ref, _geom(origin=(10.0, -20.0, 300.05)), tol=1e-3) is None
    assert header_matches(_image(noisy), ref)


def test_mixes_geometry_image_and_reader(tmp_path):
    geom = _geom()
    path = tmp_path / "x.nii.gz"
    sitk.WriteImage(_image(geom), str(path))
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    assert geometry_difference(reader, geom) is None
    assert geometry_difference(read_geometry(path), _image(geom)) is None
    assert "origin" in geometry_difference(reader, _geom(origin=(0.0, 0.0, 0.0)))


def test_header_matches_rejects_2d():
    assert not header_matches(sitk.Image([4, 5], sitk.sitkUInt8), _geom())
