"""Render one synthetic CT case: choose a scan grid, draw the anatomy slab by slab, add tumours,
blur and noise. Deterministic: the same (seed, index, size, tumor) gives the same bytes.

Memory stays bounded at full size (512 x 512 x 400): shapes are drawn in slabs of a few million
voxels and only on the window each shape can reach; the whole-volume arrays are the float32 HU
image (~420 MB) and the uint8 labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from c2fseg.data.phantom_anatomy import TUMOR_HOSTS, Anatomy, sample_anatomy
from c2fseg.data.phantom_shapes import Slab
from c2fseg.io.image import Geometry, make_geometry

SIZES = ("small", "full")
#: Minimum radius scale of thin structures per size (about the in-plane voxel size; 0 = real size).
THIN_MM = {"small": 5.0, "full": 0.0}
#: Minimum lesion radius per size, in voxels of the coarser of in-plane and (at most 2x in-plane)
#: z spacing. At ``small`` (4-6 mm voxels) a lesion of real minimum size (6 mm) would be a few
#: voxels that no model at that resolution can delineate; 2.5 voxels keeps it a 15 mm nodule.
TUMOR_MIN_RADIUS_VOXELS = {"small": 2.5, "full": 1.4}

#: Header layouts used across cases: name, canonical->stored transpose, flips (see make_geometry).
ORIENTATIONS: tuple[tuple[tuple[int, int, int], tuple[bool, bool, bool]], ...] = (
    ((0, 1, 2), (False, False, False)),  # LPS (DICOM-like)
    ((0, 1, 2), (False, True, True)),  # RAS (nibabel-like)
    ((0, 1, 2), (False, True, False)),  # LAS (radiological NIfTI)
    ((0, 1, 2), (True, True, True)),  # RAI (head-first slice order)
    ((1, 0, 2), (False, False, False)),  # coronal slices stored first
    ((2, 1, 0), (False, True, True)),  # sagittal slices stored first
)

#: Field-of-view kinds: name, probability, z range (mm, before the case's z scale).
FOV_KINDS: tuple[tuple[str, float, tuple[float, float], tuple[float, float]], ...] = (
    ("upper_abdomen", 0.3, (-125, -95), (185, 215)),
    ("abdomen", 0.3, (-230, -190), (185, 225)),
    ("abdomen_pelvis", 0.2, (-310, -280), (185, 215)),
    ("chest_abdomen_pelvis", 0.2, (-310, -280), (300, 330)),
)


@dataclass
class Grid:
    """The scan grid in canonical order: shape and spacing (z, y, x), world position of voxel 0."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]  # patient-frame (z, y, x) mm of canonical voxel [0,0,0]
    fov: str

    def axis(self, a: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """World coordinates (mm) along canonical axis ``a`` (0 z, 1 y, 2 x)."""
        stop = self.shape[a] if stop is None else stop
        return (self.origin[a] + self.spacing[a] * np.arange(start, stop)).astype(np.float32)


@dataclass
class PhantomCase:
    """One generated case in canonical form (``image`` float32 HU, ``labels`` uint8 0-14)."""

    image: np.ndarray
    labels: np.ndarray
    geometry: Geometry
    info: dict


def case_streams(seed: int, index: int) -> list[np.random.Generator]:
    """Independent random streams of one case: grid, anatomy, tumours, noise, labelling."""
    seqs = np.random.SeedSequence([int(seed), int(index)]).spawn(5)
    return [np.random.default_rng(s) for s in seqs]


def sample_grid(rng: np.random.Generator, anat: Anatomy, size: str) -> Grid:
    """Field of view and spacing: upper abdomen to chest-abdomen-pelvis, anisotropic voxels."""
    kinds = [k[0] for k in FOV_KINDS]
    probs = np.array([k[1] for k in FOV_KINDS])
    kind = FOV_KINDS[int(rng.choice(len(kinds), p=probs / probs.sum()))]
    sz = anat.body["sz"]
    z0, z1 = rng.uniform(*kind[2]) * sz, rng.uniform(*kind[3]) * sz
    a_max = anat.body["a"] * 1.09
    width = 2 * a_max + rng.uniform(60, 100)  # room for deformation and off-centre patients
    if size == "small":
        sxy = max(rng.uniform(4.0, 5.0), width / 96)
        nxy = int(round(width / sxy))
        szz = float(np.clip((z1 - z0) / rng.uniform(64, 96), 4.0, 8.0))
    elif size == "full":
        sxy = float(np.clip(max(rng.uniform(0.66, 0.9), width / 512), 0.6, 0.9))
        nxy = 512
        options = [s for s in (0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0) if 100 <= (z1 - z0) / s <= 400]
        szz = float(rng.choice(options)) if options else float(np.clip((z1 - z0) / 250, 1.0, 5.0))
    else:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    nz = int(round((z1 - z0) / szz)) + 1
    y_mid = 0.5 * (-anat.body["b_ant"] + anat.body["b_post"] + 50) + rng.uniform(-10, 10)
    x_mid = rng.uniform(-12, 12)
    origin = (z0, y_mid - 0.5 * (nxy - 1) * sxy, x_mid - 0.5 * (nxy - 1) * sxy)
    return Grid((nz, nxy, nxy), (round(szz, 4), round(sxy, 4), round(sxy, 4)), origin, kind[0])


def _paint_background(slab: Slab, anat: Anatomy) -> None:
    """Air, table, body wall layers, lungs, mediastinum and diaphragm for one slab."""
    h = anat.hu
    x2, y2 = slab.xr[None, :], slab.yr[:, None]
    y_top = anat.body["b_post"] + 2 - 45.0 * (x2 / 210.0) ** 2  # curved table top under the back
    on_table = np.abs(x2) < 215
    t = max(4.0, 1.1 * float(slab.yr[1] - slab.yr[0]))  # shells at least one voxel thick
    shell = on_table & (((y2 > y_top) & (y2 < y_top + t)) | ((y2 > y_top + 40) & (y2 < y_top + 40 + t)))
    core = on_table & (y2 >= y_top + t) & (y2 <= y_top + 40)
    slab.hu[:, core] = h["table_core"]
    slab.hu[:, shell] = h["table_shell"]

    lev = anat.body_level(slab.x, slab.y, slab.zr[:, None, None])  # outline varies slowly in z
    f_in, c_in = anat.wall_levels()
    slab.hu[lev < 1] = h["fat"]
    slab.hu[(lev < f_in) & (lev >= c_in)] = h["muscle"]
    yc = anat.spine_y(slab.z)
    back = ((np.abs(slab.x) - 38) / 30) ** 2 + ((slab.y - yc - 45) / 24) ** 2
    slab.hu[(back < 1) & (lev < f_in)] = h["muscle"]  # paraspinal muscles
    np.less(lev, c_in, out=slab.cavity)
    slab.cavity &= back >= 1
    slab.hu[slab.cavity] = h["fat"] + 15  # visceral fat

    slab.zdia[...] = slab.z - anat.diaphragm(slab.x, slab.y)
    chest = slab.cavity & (slab.zdia > 0) & (slab.z < 340 * anat.body["sz"])
    mediastinum = (np.abs(slab.x - 8) < 40) & (slab.y < yc + 22)
    slab.hu[chest & ~mediastinum] = h["lung"]
    slab.hu[chest & mediastinum] = h["fat"] + 25
    slab.hu[slab.cavity & (slab.zdia <= 0) & (slab.zdia > -6)] = h["muscle"]  # diaphragm


def draw(grid: Grid, anat: Anatomy, slab_voxels: int = 4_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise the anatomy on the grid: float32 HU (before blur/noise) and uint8 labels."""
    nz, ny, nx = grid.shape
    hu = np.full(grid.shape, -1000.0, dtype=np.float32)
    lab = np.zeros(grid.shape, dtype=np.uint8)
    xr, yr = grid.axis(2), grid.axis(1)
    step = max(1, slab_voxels // (ny * nx))
    margin = anat.body["deform_margin"]
    for k0 in range(0, nz, step):
        k1 = min(nz, k0 + step)
        zr = grid.axis(0, k0, k1)
        shape = (k1 - k0, ny, nx)
        disp = [np.clip(f.on_grid(zr, yr, xr), -margin, margin) for f in anat.deform]
        slab = Slab(xr, yr, zr,
                    x=disp[0] + xr[None, None, :], y=disp[1] + yr[None, :, None],
                    z=disp[2] + zr[:, None, None], hu=hu[k0:k1], lab=lab[k0:k1],
                    cavity=np.zeros(shape, dtype=bool), zdia=np.zeros(shape, dtype=np.float32),
                    margin=margin)
        del disp
        _paint_background(slab, anat)
        for s in anat.structures:
            win = slab.window(s.lo, s.hi)
            if win is not None:
                s.paint(win)
        soft = slab.hu > -300  # gentle low-frequency texture in soft tissue
        slab.hu[soft] += 4.0 * anat.texture.on_grid(zr, yr, xr)[soft]
    return hu, lab


def add_tumors(hu: np.ndarray, lab: np.ndarray, grid: Grid, anat: Anatomy,
               rng: np.random.Generator, min_radius_voxels: float = 1.4) -> list[dict]:
    """Paint 1-3 lesions (label 14) inside liver, kidneys or pancreas; returns their records.

    Radii are log-uniform in 6-30 mm (capped per host), at least ``min_radius_voxels`` voxels.
    """
    hosts = list(TUMOR_HOSTS)
    probs = np.array([TUMOR_HOSTS[k] for k in hosts])
    min_r = min_radius_voxels * max(grid.spacing[1], min(grid.spacing[0], 2 * grid.spacing[1]))
    records = []
    for _ in range(int(rng.choice([1, 1, 1, 2, 2, 3]))):
        host = int(rng.choice(hosts, p=probs / probs.sum()))
        flat = np.flatnonzero(lab == host)
        if flat.size < 50:
            continue
        cap = {1: 32.0, 2: 22.0, 13: 22.0, 4: 14.0}[host]
        radius = float(np.clip(np.exp(rng.uniform(np.log(6.0), np.log(30.0))), min_r, max(cap, min_r)))
        center = _deep_voxel(lab, host, flat, rng, radius, grid.spacing)
        rec = _paint_tumor(hu, lab, grid, anat, rng, host, center, radius)
        if rec["voxels"]:
            records.append(rec)
    return records


def _deep_voxel(lab, host, flat, rng, radius, spacing) -> np.ndarray:
    """A voxel of ``host`` with as much of the organ around it as possible (best of 16 tries)."""
    best, best_score = None, -1.0
    reach = [max(1, int(round(0.6 * radius / s))) for s in spacing]
    for idx in rng.choice(flat, size=min(16, flat.size), replace=False):
        c = np.array(np.unravel_index(idx, lab.shape))
        box = tuple(slice(max(0, c[a] - reach[a]), c[a] + reach[a] + 1) for a in range(3))
        score = float(np.mean(lab[box] == host))
        if score > best_score:
            best, best_score = c, score
    return best


def _paint_tumor(hu, lab, grid, anat, rng, host, center, radius) -> dict:
    """Lobulated lesion around ``center`` (voxel index), confined to its host organ."""
    ext = [int(np.ceil(1.4 * radius / s)) + 1 for s in grid.spacing]
    box = tuple(slice(max(0, center[a] - ext[a]), min(grid.shape[a], center[a] + ext[a] + 1))
                for a in range(3))
    dz, dy, dx = (((np.arange(grid.shape[a])[box[a]] - center[a]) * grid.spacing[a])
                  .astype(np.float32) for a in range(3))
    dz, dy, dx = dz[:, None, None], dy[None, :, None], dx[None, None, :]
    radii = radius * rng.uniform(0.75, 1.25, 3)
    r = np.sqrt((dz / radii[0]) ** 2 + (dy / radii[1]) ** 2 + (dx / radii[2]) ** 2)
    phase = rng.uniform(0, 2 * np.pi, 3)
    lobes = 0.13 * np.sin(3 * np.arctan2(dy, dx) + phase[0]) * np.cos(2 * np.arctan2(dz, dx) + phase[1])
    mask = (r * (1 + lobes) < 1) & (lab[box] == host)
    if host in (2, 13):  # renal lesions: heterogeneous
        base = rng.uniform(50, 100)
        pattern = 20.0 * np.sin(dx / 4.0 + phase[0]) * np.sin(dy / 5.0 + phase[1]) * np.sin(dz / 4.5 + phase[2])
        values = np.broadcast_to(base + pattern, mask.shape)
    else:  # hepatic and pancreatic lesions: hypodense, slightly darker core
        base = rng.uniform(38.0, 68.0)
        values = np.broadcast_to(base - 8.0 * (1 - np.clip(r, 0, 1)), mask.shape)
    hu[box][mask] = values[mask]
    lab[box][mask] = 14
    return {"host": host, "radius_mm": round(radius, 1), "voxels": int(mask.sum()),
            "center_voxel": [int(c) for c in center]}


def finish_image(hu: np.ndarray, grid: Grid, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Scanner blur (~1-2 mm FWHM) and Gaussian noise (10-20 HU); returns int16 HU."""
    sigma_mm = rng.uniform(0.6, 0.85)
    sigma = [max(sigma_mm / s, 0.35) for s in grid.spacing]
    ndimage.gaussian_filter(hu, sigma, output=hu, mode="nearest", truncate=3.0)
    noise_sd = float(rng.uniform(10, 20))
    out = np.empty(hu.shape, dtype=np.int16)
    step = max(1, 4_000_000 // (hu.shape[1] * hu.shape[2]))
    for k0 in range(0, hu.shape[0], step):  # noise in slabs keeps float64 temporaries small
        chunk = hu[k0:k0 + step]
        chunk += rng.standard_normal(chunk.shape, dtype=np.float32) * np.float32(noise_sd)
        np.clip(np.rint(chunk), -1024, 3071, out=chunk)
        out[k0:k0 + step] = chunk
    return out, {"blur_sigma_mm": round(sigma_mm, 3), "noise_sd": round(noise_sd, 1)}


def sample_header(rng: np.random.Generator, grid: Grid) -> tuple[Geometry, str, float]:
    """Header layout: one of several axis orders/flips, sometimes slightly oblique (2-8 degrees)."""
    transpose, flip = ORIENTATIONS[int(rng.integers(len(ORIENTATIONS)))]
    rot, angle = None, 0.0
    if rng.random() < 0.3:
        from c2fseg.data.phantom_shapes import rotation

        angle = float(rng.uniform(2, 8)) * (1 if rng.random() < 0.5 else -1)
        rot = rotation(deg_x=angle) if rng.random() < 0.5 else rotation(deg_z=angle)
    table_shift = rng.uniform(-400, 100)  # world z of the patient frame differs per scan
    origin_xyz = (grid.origin[2], grid.origin[1], grid.origin[0] + table_shift)
    geom = make_geometry(grid.shape, grid.spacing, origin_xyz, transpose, flip, rot)
    return geom, orientation_code(geom), angle


def orientation_code(geom: Geometry) -> str:
    """Three-letter orientation (ITK/DICOM convention, e.g. 'LPS', 'RAS') of the stored axes."""
    import SimpleITK as sitk

    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(geom.direction)


def generate_case(seed: int, index: int, size: str = "small", tumor: bool = False) -> PhantomCase:
    """Generate case ``index`` of a dataset seeded with ``seed`` (canonical arrays + header).

    The anatomy, grid and header depend only on (seed, index, size); ``tumor`` adds lesions.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    r_grid, r_anat, r_tumor, r_noise, _ = case_streams(seed, index)
    anat = sample_anatomy(r_anat, thin_mm=THIN_MM[size])
    grid = sample_grid(r_grid, anat, size)
    anat.body["voxel_z"] = grid.spacing[0]
    hu, lab = draw(grid, anat)
    tumors = add_tumors(hu, lab, grid, anat, r_tumor, TUMOR_MIN_RADIUS_VOXELS[size]) if tumor else []
    image, imaging = finish_image(hu, grid, r_noise)
    del hu
    geom, code, angle = sample_header(r_grid, grid)
    info = {
        "seed": [int(seed), int(index)], "size": size, "fov": grid.fov,
        "shape": list(grid.shape), "spacing": [float(s) for s in grid.spacing],
        "orientation": code, "oblique_deg": round(angle, 2),
        "tumor": bool(tumors), "tumors": tumors, **imaging,
    }
    return PhantomCase(image, lab, geom, info)
