"""Image headers, the canonical voxel order and header comparison (pure: numpy only, no files).

Canonical form: a numpy array indexed ``[k, j, i]`` whose axes run toward patient Superior,
Posterior and Left (world LPS axes z, y, x), i.e. what SimpleITK would give for an image with an
identity direction matrix. Spacing is stored in the same (z, y, x) order. Getting there only
permutes and flips array axes (no resampling), so it is undone exactly on output: the written
file gets the input's own size, spacing, origin and direction, copied from its header.

Headers are compared with one tolerance, :data:`GEOMETRY_TOLERANCE`. Functions that compare
accept a :class:`Geometry` or anything with SimpleITK's header methods (``GetSize``,
``GetSpacing``, ``GetOrigin``, ``GetDirection``: an image, or a file reader after
``ReadImageInformation``), so this module never needs SimpleITK itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "GEOMETRY_TOLERANCE",
    "GRID_ORIGIN_VOXELS",
    "GRID_SPACING_RTOL",
    "Geometry",
    "from_canonical",
    "geometry_difference",
    "geometry_from_header",
    "grid_difference",
    "header_matches",
    "make_geometry",
    "orientation_of",
    "to_canonical",
]

#: The largest header difference treated as equal: spacing/origin in mm (relative above 1 mm,
#: so float32 NIfTI headers of large origins still match), direction cosines absolute. Enough
#: for headers stored in float32, far below what a real grid or orientation error produces.
GEOMETRY_TOLERANCE = 1e-4

#: :func:`grid_difference` rule, looser than header equality on purpose: it decides whether a
#: training label can be used voxel for voxel with its image after both are read in canonical
#: form (nothing is resampled; the target is written on the image's grid). What matters there
#: is that no label voxel lands on a neighbouring image voxel, so the origin may be off by a
#: fraction of a voxel and spacings by 0.1 % (headers rounded to 3 decimals by some exporters).
#: Spacings also get :data:`GEOMETRY_TOLERANCE` in mm as an absolute floor.
GRID_SPACING_RTOL = 1e-3
GRID_ORIGIN_VOXELS = 0.1


@dataclass(frozen=True)
class Geometry:
    """The original header of a file and how its array was reoriented to canonical form."""

    size: tuple[int, int, int]  # SimpleITK (x, y, z) order, as stored
    spacing: tuple[float, float, float]  # SimpleITK order
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 values, row-major, SimpleITK convention
    transpose: tuple[int, int, int]  # canonical = np.transpose(stored_array, transpose)
    flip: tuple[bool, bool, bool]  # then flipped along these canonical axes

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        stored = tuple(reversed(self.size))
        return tuple(stored[a] for a in self.transpose)  # type: ignore[return-value]

    @property
    def canonical_spacing(self) -> tuple[float, float, float]:
        stored = tuple(reversed(self.spacing))
        return tuple(stored[a] for a in self.transpose)  # type: ignore[return-value]

    @property
    def canonical_origin(self) -> tuple[float, float, float]:
        """World (LPS, x-y-z) position of canonical voxel [0, 0, 0]."""
        index = [0.0, 0.0, 0.0]  # SimpleITK (x, y, z) index of that voxel in the stored image
        for c in range(3):
            stored_np_axis = self.transpose[c]
            sitk_axis = 2 - stored_np_axis
            if self.flip[c]:
                index[sitk_axis] = self.size[sitk_axis] - 1
        d = np.array(self.direction).reshape(3, 3)
        pos = np.array(self.origin) + d @ (np.array(index) * np.array(self.spacing))
        return tuple(float(v) for v in pos)  # type: ignore[return-value]


def orientation_of(direction: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """For each SimpleITK index axis, the world axis it is closest to and the sign (+1/-1).

    Chooses the axis permutation maximising the summed |cosines|, so oblique and 45-degree
    directions still map to a proper permutation.
    """
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    best = max(itertools.permutations(range(3)),
               key=lambda p: sum(abs(d[p[i], i]) for i in range(3)))
    signs = tuple(1 if d[best[i], i] >= 0 else -1 for i in range(3))
    return tuple(best), signs  # type: ignore[return-value]


def geometry_from_header(size, spacing, origin, direction) -> Geometry:
    """The :class:`Geometry` of a 3D header (SimpleITK order) and the axis permutation/flips
    that make its array canonical."""
    world_axis, signs = orientation_of(np.array(direction, dtype=float))
    transpose = [0, 0, 0]
    flip = [False, False, False]
    for sitk_axis in range(3):
        canon_axis = 2 - world_axis[sitk_axis]
        transpose[canon_axis] = 2 - sitk_axis
        flip[canon_axis] = signs[sitk_axis] < 0
    return Geometry(
        size=tuple(int(s) for s in size),  # type: ignore[arg-type]
        spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        origin=tuple(float(s) for s in origin),  # type: ignore[arg-type]
        direction=tuple(float(s) for s in direction),
        transpose=tuple(transpose),  # type: ignore[arg-type]
        flip=tuple(flip),  # type: ignore[arg-type]
    )


def to_canonical(stored: np.ndarray, geom: Geometry, dtype: np.dtype | None = None) -> np.ndarray:
    """Stored numpy array (SimpleITK [z, y, x] index order) -> canonical array (one copy)."""
    arr = np.transpose(stored, geom.transpose)
    flips = tuple(a for a in range(3) if geom.flip[a])
    if flips:
        arr = np.flip(arr, axis=flips)
    out = np.empty(arr.shape, dtype=dtype or stored.dtype)
    out[...] = arr
    return out


def from_canonical(canonical: np.ndarray, geom: Geometry) -> np.ndarray:
    """Exact inverse of :func:`to_canonical`."""
    if tuple(canonical.shape) != geom.canonical_shape:
        raise ValueError(
            f"array shape {canonical.shape} does not match the image's canonical shape "
            f"{geom.canonical_shape}"
        )
    flips = tuple(a for a in range(3) if geom.flip[a])
    arr = np.flip(canonical, axis=flips) if flips else canonical
    return np.ascontiguousarray(np.transpose(arr, np.argsort(geom.transpose)))


def box_to_canonical(
    start: Sequence[int], stop: Sequence[int], geom: Geometry
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A box (start, stop exclusive) of the stored array as the same voxels' box in canonical order."""
    stored_shape = tuple(reversed(geom.size))
    lo, hi = [], []
    for c in range(3):
        a = geom.transpose[c]
        s0, s1 = int(start[a]), int(stop[a])
        if geom.flip[c]:
            s0, s1 = stored_shape[a] - s1, stored_shape[a] - s0
        lo.append(s0)
        hi.append(s1)
    return tuple(lo), tuple(hi)  # type: ignore[return-value]


def make_geometry(
    canonical_shape: tuple[int, int, int],
    canonical_spacing: tuple[float, float, float],
    canonical_origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    transpose: tuple[int, int, int] = (0, 1, 2),
    flip: tuple[bool, bool, bool] = (False, False, False),
    rotation: np.ndarray | None = None,
) -> Geometry:
    """Geometry that stores a canonical array in a chosen voxel order (and optional obliquity).

    ``transpose``/``flip`` follow :class:`Geometry`'s convention. ``rotation`` (3x3, a small
    rotation) tilts the direction cosines to make an oblique header; the stored layout stays the
    nearest one, so reading the file back gives the same canonical array.
    """
    inv = np.argsort(transpose)  # stored numpy axis -> canonical axis
    stored_shape = [canonical_shape[inv[a]] for a in range(3)]
    stored_spacing = [canonical_spacing[inv[a]] for a in range(3)]
    d = np.zeros((3, 3))
    for sitk_axis in range(3):
        canon_axis = int(inv[2 - sitk_axis])
        world_axis = 2 - canon_axis
        d[world_axis, sitk_axis] = -1.0 if flip[canon_axis] else 1.0
    corner = np.zeros(3)  # world offset (x, y, z) of stored voxel 0 from canonical voxel 0
    for c in range(3):
        if flip[c]:
            corner[2 - c] = (canonical_shape[c] - 1) * canonical_spacing[c]
    origin = np.asarray(canonical_origin, dtype=float) + corner
    if rotation is not None:
        rot = np.asarray(rotation, dtype=float)
        d = rot @ d
        origin = np.asarray(canonical_origin, dtype=float) + rot @ corner
    return Geometry(
        size=tuple(int(s) for s in reversed(stored_shape)),  # type: ignore[arg-type]
        spacing=tuple(float(s) for s in reversed(stored_spacing)),  # type: ignore[arg-type]
        origin=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in d.ravel()),
        transpose=tuple(int(t) for t in transpose),  # type: ignore[arg-type]
        flip=tuple(bool(f) for f in flip),  # type: ignore[arg-type]
    )


def _header_fields(header: Any) -> dict[str, tuple]:
    """Size, spacing, origin and direction of a Geometry, SimpleITK image or header reader."""
    if isinstance(header, Geometry):
        return {"size": header.size, "spacing": header.spacing, "origin": header.origin,
                "direction": header.direction}
    return {"size": tuple(header.GetSize()), "spacing": header.GetSpacing(),
            "origin": header.GetOrigin(), "direction": header.GetDirection()}


def _beyond(va: np.ndarray, vb: np.ndarray, tol: float) -> bool:
    """Whether two header vectors differ by more than ``tol`` times max(1, |value|)."""
    if va.shape != vb.shape:
        return True
    scale = np.maximum(1.0, np.maximum(np.abs(va), np.abs(vb)))
    return bool(np.any(np.abs(va - vb) > tol * scale))


def geometry_difference(a: Any, b: Any, tol: float = GEOMETRY_TOLERANCE) -> str | None:
    """How two headers differ (e.g. ``"origin (0, 0, 0) vs (0, 0, 1)"``), or None if they match.

    ``a`` and ``b`` may each be a :class:`Geometry`, a ``SimpleITK.Image`` or a
    ``SimpleITK.ImageFileReader`` after ``ReadImageInformation``. Sizes must be equal; spacing,
    origin and direction may differ by ``tol`` times max(1, |value|).
    """
    fa, fb = _header_fields(a), _header_fields(b)
    if tuple(fa["size"]) != tuple(fb["size"]):
        return f"size {tuple(fa['size'])} vs {tuple(fb['size'])}"
    for field_name in ("spacing", "origin", "direction"):
        va = np.asarray(fa[field_name], dtype=float)
        vb = np.asarray(fb[field_name], dtype=float)
        if _beyond(va, vb, tol):
            return f"{field_name} {_fmt(va)} vs {_fmt(vb)}"
    return None


def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def header_matches(header: Any, geom: Geometry, tol: float = GEOMETRY_TOLERANCE) -> bool:
    """Whether a 3D image/reader (or Geometry) has ``geom``'s size, spacing, origin and
    direction within ``tol`` (see :func:`geometry_difference`)."""
    if not isinstance(header, Geometry) and header.GetDimension() != 3:
        return False
    return geometry_difference(header, geom, tol) is None


def grid_difference(image: Geometry, other: Geometry) -> str | None:
    """Why ``other``'s canonical voxel grid differs from ``image``'s, or None when they match.

    Compares canonical shape, spacing and origin, so a label stored in another but equivalent
    axis order matches its image, while one shifted in space does not. Tolerances:
    :data:`GRID_SPACING_RTOL` and :data:`GRID_ORIGIN_VOXELS` (see there why they differ from
    header equality).
    """
    shape, o_shape = tuple(image.canonical_shape), tuple(other.canonical_shape)
    if shape != o_shape:
        return f"canonical shape {o_shape} but the image has {shape}"
    spacing = np.array(image.canonical_spacing, dtype=float)
    o_spacing = np.array(other.canonical_spacing, dtype=float)
    if not np.allclose(o_spacing, spacing, rtol=GRID_SPACING_RTOL, atol=GEOMETRY_TOLERANCE):
        return (f"spacing {tuple(round(float(v), 4) for v in o_spacing)} but the image has "
                f"{tuple(round(float(v), 4) for v in spacing)}")
    origin = np.array(image.canonical_origin, dtype=float)
    o_origin = np.array(other.canonical_origin, dtype=float)
    tol = GRID_ORIGIN_VOXELS * spacing[::-1]  # canonical_origin is world x, y, z; spacing z, y, x
    if np.any(np.abs(o_origin - origin) > tol):
        return (f"origin {tuple(round(float(v), 3) for v in o_origin)} but the image has "
                f"{tuple(round(float(v), 3) for v in origin)} (shifted in space)")
    return None
