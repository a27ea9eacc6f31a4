"""Benchmark cases: one cached full-size phantom, the real example CT, or user paths.

The phantom is generated once (``--size full``, the first case of seed 0 with about 300
slices) and reused from the cache folder; its labels are written beside it so a fixed ROI can be
taken from them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2fseg.infer.roi import RoiBox

#: The real example CT, relative to the repository root (never copied into the repo).
REAL_CT = Path("../shared/data/real/ts_example_ct.nii.gz")
REAL_LABELS = Path("../shared/data/real/ts_example_ct_labels.nii.gz")
DEFAULT_CACHE = Path("c2fseg_work/bench")
PHANTOM_SEED = 0
TARGET_SLICES = 300
#: "tiny" phantoms (the GPU script's CPU dry run): the centre of a small phantom, relabelled to
#: the thin stages' own spacing so no stage resamples it up (the dry run checks code, not speed).
TINY_SHAPE = (24, 48, 48)
TINY_SPACING = (2.5, 1.5, 1.5)
SIZES = ("full", "small", "tiny")


@dataclass
class BenchCase:
    """One CT to time; ``labels`` (optional) gives the ground-truth ROI."""

    name: str
    image: Path
    labels: Path | None = None


def phantom_indices(seed: int = PHANTOM_SEED, target_slices: int = TARGET_SLICES, count: int = 1,
                    tries: int = 40) -> list[int]:
    """The ``count`` full-size phantom indices of ``seed`` whose slice counts are closest to the
    target (closest first; ties by index). Only the scan grid is sampled (cheap); no volume is drawn.
    """
    from c2fseg.data.phantom_anatomy import sample_anatomy
    from c2fseg.data.phantom_case import THIN_MM, case_streams, sample_grid

    gaps = []
    for index in range(max(tries, count)):
        r_grid, r_anat, *_ = case_streams(seed, index)
        grid = sample_grid(r_grid, sample_anatomy(r_anat, thin_mm=THIN_MM["full"]), "full")
        gaps.append((abs(grid.shape[0] - target_slices), index))
    return [index for _, index in sorted(gaps)[:count]]


def phantom_index(seed: int = PHANTOM_SEED, target_slices: int = TARGET_SLICES, tries: int = 40) -> int:
    """Index of the full-size phantom of ``seed`` whose slice count is closest to the target."""
    return phantom_indices(seed, target_slices, 1, tries)[0]


def phantom_case(cache_dir: str | os.PathLike, seed: int, index: int, size: str = "full") -> BenchCase:
    """The cached phantom (seed, index, size) with its labels; generated and written if missing."""
    from c2fseg.io import write_labels, write_volume

    cache = Path(cache_dir)
    name = f"phantom_{size}_s{seed}_i{index}"
    image, labels = cache / f"{name}_0000.nii.gz", cache / f"{name}_labels.nii.gz"
    if not (image.is_file() and labels.is_file()):
        cache.mkdir(parents=True, exist_ok=True)
        print(f"c2fseg bench: generating the {size}-size phantom {name} in {cache} (once, ~20 s)",
              flush=True)
        ct, lab, geometry = phantom_arrays(seed, index, size)
        write_labels(lab, geometry, labels)
        write_volume(np.round(ct).astype(np.int16), geometry, image)
    return BenchCase(name, image, labels)


def phantom_arrays(seed: int, index: int, size: str):
    """(CT, labels, geometry) of a phantom of ``size`` (see ``SIZES``; tiny: ``TINY_SHAPE``)."""
    from c2fseg.data.phantom_case import generate_case
    from c2fseg.io import make_geometry

    if size not in SIZES:
        raise ValueError(f"unknown phantom size {size!r}; choose one of {', '.join(SIZES)}")
    case = generate_case(seed, index, size="small" if size == "tiny" else size, tumor=True)
    if size != "tiny":
        return case.image, case.labels, case.geometry
    box = tuple(slice(max(0, (n - t) // 2), max(0, (n - t) // 2) + t)
                for n, t in zip(case.image.shape, TINY_SHAPE, strict=True))
    ct, lab = case.image[box], case.labels[box]
    return ct, lab, make_geometry(ct.shape, TINY_SPACING)


def full_phantom(cache_dir: str | os.PathLike = DEFAULT_CACHE, seed: int = PHANTOM_SEED) -> BenchCase:
    """The cached full-size phantom (512 x 512, about 300 slices with tumours); made if missing."""
    return phantom_case(cache_dir, seed, phantom_index(seed), "full")


def _phantom_job(args: tuple[str, int, int, str]) -> BenchCase:
    return phantom_case(*args)


def build_phantoms(cache_dir: str | os.PathLike, count: int = 1, size: str = "full",
                   seed: int = PHANTOM_SEED, workers: int | None = None) -> list[BenchCase]:
    """``count`` phantoms in the cache, in parallel processes; the first is ``full_phantom``'s.

    Full size: the indices with about ``TARGET_SLICES`` slices; small and tiny: indices 0, 1, ...
    """
    from concurrent.futures import ProcessPoolExecutor

    indices = phantom_indices(seed, count=count) if size == "full" else list(range(count))
    jobs = [(str(cache_dir), seed, index, size) for index in indices]
    workers = max(1, min(count, workers or os.cpu_count() or 1))
    if workers == 1:
        return [_phantom_job(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_phantom_job, jobs))


def link_inputs(cases: list[BenchCase], folder: str | os.PathLike) -> list[Path]:
    """A ``predict`` input folder holding only the cases' images (hard links, else copies)."""
    import shutil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for case in cases:
        target = folder / Path(case.image).name
        if not target.exists():
            try:
                os.link(case.image, target)
            except OSError:
                shutil.copyfile(case.image, target)
        out.append(target)
    return out


def real_case(image: Path = REAL_CT, labels: Path = REAL_LABELS) -> BenchCase | None:
    """The real example CT if it is present (None otherwise)."""
    if not Path(image).is_file():
        return None
    return BenchCase("real_ct", Path(image), Path(labels) if Path(labels).is_file() else None)


def resolve_cases(specs: list[str], cache_dir: str | os.PathLike = DEFAULT_CACHE) -> tuple[list[BenchCase], list[str]]:
    """Cases for ``--case`` values (full-phantom, real, or a CT path); notes for skipped ones."""
    cases, notes = [], []
    for spec in specs:
        if spec == "full-phantom":
            cases.append(full_phantom(cache_dir))
        elif spec == "real":
            case = real_case()
            if case is None:
                notes.append(f"real CT {REAL_CT} is not here (it is never copied into the repo): skipped")
            else:
                cases.append(case)
        else:
            path = Path(spec)
            if not path.exists():
                raise FileNotFoundError(f"--case {spec}: no such file or DICOM folder; give a CT path, "
                                        "'full-phantom' or 'real'")
            name = path.name.split(".")[0].removesuffix("_0000")
            cases.append(BenchCase(name, path))
    return cases, notes


def fixed_box(shape: tuple[int, int, int], inplane: float = 0.6, slices: float = 0.5) -> RoiBox:
    """A fixed abdominal box: the central ``inplane`` fraction in y/x and ``slices`` of z."""
    start, stop = [], []
    for axis, frac in zip(range(3), (slices, inplane, inplane), strict=True):
        n = int(shape[axis])
        size = max(1, int(round(n * frac)))
        lo = (n - size) // 2
        start.append(lo)
        stop.append(lo + size)
    return RoiBox(tuple(start), tuple(stop))  # type: ignore[arg-type]


def box_labels(shape: tuple[int, int, int], box: RoiBox, label: int = 1) -> np.ndarray:
    """A label map that is ``label`` inside ``box`` (what the ROI rule turns back into the box)."""
    out = np.zeros(shape, dtype=np.uint8)
    out[box.slices] = label
    return out

