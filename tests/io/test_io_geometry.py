"""c2fseg.io.geometry: the header model without files, the one tolerance and its edges."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import numpy as np
import pytest

from c2fseg.io import geometry as geometry_module
from c2fseg.io.geometry import (
    GEOMETRY_TOLERANCE,
    GRID_ORIGIN_VOXELS,
    GRID_SPACING_RTOL,
    from_canonical,
    geometry_difference,
    geometry_from_header,
    grid_difference,
    header_matches,
    make_geometry,
    orientation_of,
    to_canonical,
)

SHAPE, SPACING = (4, 5, 6), (2.5, 0.8, 0.7)


def _geom(origin=(0.5, -0.25, 0.0), spacing=SPACING, transpose=(0, 1, 2), flip=(False,) * 3):
    return make_geometry(SHAPE, spacing, origin, transpose, flip)


def test_module_is_pure():
    """Only the standard library and numpy: no SimpleITK, nibabel or file access."""
    tree = ast.parse(Path(geometry_module.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported == {"__future__", "collections", "itertools", "dataclasses", "typing", "numpy"}
    calls = {node.func.id for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert "open" not in calls


@pytest.mark.parametrize("field, index", [("origin", 0), ("spacing", 1)])
def test_tolerance_edge_absolute_below_one_mm(field, index):
    """Values up to 1 mm: a difference just below the tolerance matches, just above does not."""
    ref = _geom()
    values = list(getattr(ref, field))
    assert abs(values[index]) <= 1.0
    for factor, matches in ((0.9, True), (1.1, False)):
        moved = list(values)
        moved[index] += factor * GEOMETRY_TOLERANCE
        other = geometry_from_header(ref.size, *(
            moved if f == field else getattr(ref, f) for f in ("spacing", "origin")),
            ref.direction)
        why = geometry_difference(ref, other)
        assert (why is None) == matches, (factor, why)
        if not matches:
            assert why.startswith(field)


def test_tolerance_edge_relative_above_one_mm():
    """At 300 mm the tolerance is 300 * 1e-4 = 0.03 mm."""
    ref = _geom(origin=(0.0, 0.0, 300.0))
    assert geometry_difference(ref, _geom(origin=(0.0, 0.0, 300.0 + 0.029))) is None
    assert geometry_difference(ref, _geom(origin=(0.0, 0.0, 300.0 + 0.031))).startswith("origin")


def test_tolerance_edge_direction_cosines():
    ref = _geom()
    for delta, matches in ((0.9e-4, True), (1.1e-4, False)):
        direction = list(ref.direction)
        direction[1] += delta
        other = geometry_from_header(ref.size, ref.spacing, ref.origin, direction)
        assert (geometry_difference(ref, other) is None) == matches
        assert header_matches(other, ref) == matches  # a Geometry is accepted as the header too


def test_size_must_be_equal():
    why = geometry_difference(_geom(), make_geometry((4, 5, 7), SPACING))
    assert why == "size (6, 5, 4) vs (7, 5, 4)"


@pytest.mark.parametrize("transpose, flip", [((0, 1, 2), (False, False, False)),
                                             ((2, 0, 1), (True, False, True)),
                                             ((1, 2, 0), (False, True, False))])
def test_canonical_round_trip(transpose, flip):
    geom = make_geometry(SHAPE, SPACING, (1.0, 2.0, 3.0), transpose, flip)
    canonical = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    stored = from_canonical(canonical, geom)
    assert stored.shape == tuple(reversed(geom.size))
    np.testing.assert_array_equal(to_canonical(stored, geom), canonical)
    assert geom.canonical_shape == SHAPE and geom.canonical_spacing == SPACING
    np.testing.assert_allclose(geom.canonical_origin, (1.0, 2.0, 3.0))
    assert to_canonical(stored, geom, np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="canonical shape"):
        from_canonical(canonical[:, :, :-1], geom)


def test_header_to_geometry_recovers_the_layout_of_every_orientation():
    """A header written by make_geometry in any of the 48 voxel orders reads back the same."""
    for transpose in itertools.permutations(range(3)):
        for flip in itertools.product((False, True), repeat=3):
            made = make_geometry(SHAPE, SPACING, (1.0, 2.0, 3.0), transpose, flip)
            back = geometry_from_header(made.size, made.spacing, made.origin, made.direction)
            assert back == made


def test_orientation_of_oblique_direction_picks_the_nearest_axes():
    tilt = np.deg2rad(30)
    c, s = np.cos(tilt), np.sin(tilt)
    direction = np.array([[0, 0, 1], [c, -s, 0], [s, c, 0]])
    assert orientation_of(direction) == ((1, 2, 0), (1, 1, 1))
    assert orientation_of(-np.eye(3)) == ((0, 1, 2), (-1, -1, -1))


def test_grid_difference_ignores_voxel_order_but_not_position():
    base = _geom(origin=(1.0, 2.0, 3.0))
    reordered = _geom(origin=(1.0, 2.0, 3.0), transpose=(1, 2, 0), flip=(True, False, True))
    assert grid_difference(base, reordered) is None
    assert geometry_difference(base, _geom(origin=(1.0, 2.0, 3.0), transpose=(1, 2, 0))).startswith("size")


def test_grid_difference_tolerance_edges():
    base = _geom(origin=(1.0, 2.0, 3.0))
    voxel_x = SPACING[2]  # canonical_origin is world (x, y, z); x is canonical axis 2
    for factor, matches in ((0.9, True), (1.1, False)):
        shifted = _geom(origin=(1.0 + factor * GRID_ORIGIN_VOXELS * voxel_x, 2.0, 3.0))
        assert (grid_difference(base, shifted) is None) == matches
        spacing = (SPACING[0] * (1 + factor * GRID_SPACING_RTOL), *SPACING[1:])
        stretched = _geom(origin=(1.0, 2.0, 3.0), spacing=spacing)
        assert (grid_difference(base, stretched) is None) == matches
    assert "shifted in space" in grid_difference(base, _geom(origin=(1.0, 2.0, 4.0)))
    assert grid_difference(base, make_geometry((4, 5, 7), SPACING)).startswith("canonical shape")
