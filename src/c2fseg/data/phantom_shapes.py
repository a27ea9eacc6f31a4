"""Geometric building blocks of the phantom: implicit shapes, smooth random fields, slab windows.

Every shape is an implicit "level" function of world coordinates (mm): below 1 inside, 1 on the
surface, growing outside. Levels of tubes and ellipsoids are normalised by the local radius, so a
threshold such as 0.6 selects a lumen or a core whatever the size. Shapes are evaluated only on
the window of a slab that can contain them, which keeps full-size (512 x 512 x 400) drawing cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rotation(deg_x: float = 0.0, deg_y: float = 0.0, deg_z: float = 0.0) -> np.ndarray:
    """Rotation matrix (about x, then y, then z; degrees) used to tilt organ shapes."""
    ax, ay, az = np.deg2rad([deg_x, deg_y, deg_z])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def ellipsoid_level(x, y, z, center, radii, rot: np.ndarray | None = None) -> np.ndarray:
    """Normalised radius of a (rotated) ellipsoid: < 1 inside."""
    d = [x - np.float32(center[0]), y - np.float32(center[1]), z - np.float32(center[2])]
    if rot is not None:  # express the offset in the ellipsoid's own axes: u = R^T d
        r = np.asarray(rot, dtype=np.float32)
        d = [r[0, a] * d[0] + r[1, a] * d[1] + r[2, a] * d[2] for a in range(3)]
    s = (d[0] / np.float32(radii[0])) ** 2
    s += (d[1] / np.float32(radii[1])) ** 2
    s += (d[2] / np.float32(radii[2])) ** 2
    return np.sqrt(s, out=s)


def tube_level(x, y, z, points, radii) -> np.ndarray:
    """Distance to a polyline divided by the (linearly varying) radius: < 1 inside the tube."""
    pts = np.asarray(points, dtype=np.float32)
    rad = np.asarray(radii, dtype=np.float32)
    best = None
    for a, b, ra, rb in zip(pts[:-1], pts[1:], rad[:-1], rad[1:], strict=True):
        ab = b - a
        denom = np.float32(max(float(ab @ ab), 1e-6))
        px, py, pz = x - a[0], y - a[1], z - a[2]
        t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / denom, 0.0, 1.0)
        d2 = (px - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (pz - t * ab[2]) ** 2
        level = np.sqrt(d2) / (ra + t * (rb - ra))
        best = level if best is None else np.minimum(best, level, out=best)
    return best


def tube_box(points, radii, pad: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """World bounding box (x, y, z) of a tube."""
    pts = np.asarray(points, dtype=float)
    r = float(np.max(radii)) + pad
    return pts.min(axis=0) - r, pts.max(axis=0) + r


def ellipsoid_box(center, radii, pad: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """World bounding box of an ellipsoid (rotation-safe: uses the largest radius)."""
    r = float(np.max(radii)) + pad
    c = np.asarray(center, dtype=float)
    return c - r, c + r


class SmoothField:
    """A smooth random scalar field: Gaussian bumps on a coarse node grid, separable to evaluate.

    Evaluating on a grid is three small matrix products, so a 512 x 512 slab costs milliseconds
    and the field is identical whatever the voxel grid (same anatomy at small and full size).
    """

    def __init__(self, rng: np.random.Generator, lo, hi, node_mm: float, amplitude: float):
        self.nodes = [np.arange(lo[a] - 2 * node_mm, hi[a] + 2 * node_mm + 1e-3, node_mm)
                      for a in range(3)]  # x, y, z node positions
        shape = tuple(len(n) for n in reversed(self.nodes))  # (z, y, x)
        self.coef = rng.standard_normal(shape).astype(np.float32)
        self.sigma = node_mm
        norm = 1.0
        for n in self.nodes:  # typical sqrt(sum of squared weights) along each axis
            w = self._weights(np.linspace(n[2], n[-3], 64), n)
            norm *= float(np.sqrt(np.mean(np.sum(w * w, axis=1))))
        self.coef *= np.float32(amplitude / norm)

    def _weights(self, coords: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        d = (np.asarray(coords, dtype=np.float64)[:, None] - nodes[None, :]) / self.sigma
        return np.exp(-0.5 * d * d).astype(np.float32)

    def on_grid(self, zs, ys, xs) -> np.ndarray:
        """Field values on the grid spanned by 1D world coordinates (z, y, x) -> (nz, ny, nx)."""
        sel = []
        for coords, nodes in ((zs, self.nodes[2]), (ys, self.nodes[1]), (xs, self.nodes[0])):
            near = (nodes > float(np.min(coords)) - 4 * self.sigma) & (nodes < float(np.max(coords)) + 4 * self.sigma)
            sel.append(np.flatnonzero(near))  # nodes further away contribute < exp(-8)
        coef = self.coef[np.ix_(*sel)]
        wz = self._weights(zs, self.nodes[2][sel[0]])
        wy = self._weights(ys, self.nodes[1][sel[1]])
        wx = self._weights(xs, self.nodes[0][sel[2]])
        t = np.tensordot(wz, coef, axes=(1, 0)) @ wx.T  # (nz, Ny, nx): still small
        nz, n_nodes, nx = t.shape
        flat = wy @ t.transpose(1, 0, 2).reshape(n_nodes, nz * nx)  # one GEMM for the big axis
        out = flat.reshape(len(ys), nz, nx).transpose(1, 0, 2)
        return np.ascontiguousarray(out, dtype=np.float32)


@dataclass
class Window:
    """A box inside a slab: deformed world coordinates and views of the output arrays."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    hu: np.ndarray
    lab: np.ndarray
    cavity: np.ndarray  # inside the abdominal/thoracic wall
    zdia: np.ndarray  # height above the diaphragm (mm; > 0 in the chest)

    def put(self, mask: np.ndarray, hu, label: int | None = None) -> None:
        """Paint ``mask`` with an HU value (scalar or array over the window) and a label."""
        if np.ndim(hu):
            self.hu[mask] = hu[mask]
        else:
            self.hu[mask] = hu
        if label is not None:
            self.lab[mask] = label


@dataclass
class Slab:
    """A run of slices being drawn: coordinates on the slab's grid and the outputs to fill."""

    xr: np.ndarray  # raw 1D world coordinates (grid positions), x/y/z
    yr: np.ndarray
    zr: np.ndarray
    x: np.ndarray  # deformed world coordinates, (nz, ny, nx)
    y: np.ndarray
    z: np.ndarray
    hu: np.ndarray
    lab: np.ndarray
    cavity: np.ndarray
    zdia: np.ndarray
    margin: float  # largest displacement: pad for bounding boxes

    def window(self, lo, hi) -> Window | None:
        """The part of the slab whose voxels can map into the world box [lo, hi], or None."""
        sl = []
        for axis, coords in ((2, self.zr), (1, self.yr), (0, self.xr)):
            a = lo[axis] - self.margin
            b = hi[axis] + self.margin
            step = coords[1] - coords[0] if len(coords) > 1 else 1.0
            i0 = int(np.clip(np.ceil((a - coords[0]) / step), 0, len(coords)))
            i1 = int(np.clip(np.floor((b - coords[0]) / step) + 1, 0, len(coords)))
            if i1 <= i0:
                return None
            sl.append(slice(i0, i1))
        s = tuple(sl)
        return Window(self.x[s], self.y[s], self.z[s], self.hu[s], self.lab[s],
                      self.cavity[s], self.zdia[s])
