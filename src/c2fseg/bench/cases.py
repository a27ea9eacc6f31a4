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


@dataclass
class BenchCase:
    """One CT to time; ``labels`` (optional) gives the ground-truth ROI."""

    name: str
    image: Path
    labels: Path | None = None


def phantom_index(seed: int = PHANTOM_SEED, target_slices: int = TARGET_SLICES, tries: int = 40) -> int:
    """Index of the full-size phantom of ``seed`` whose slice count is closest to the target.

    Only the scan grid is sampled (cheap); the volume is not drawn.
    """
    from c2fseg.data.phantom_anatomy import sample_anatomy
    from c2fseg.data.phantom_case import THIN_MM, case_streams, sample_grid

    best, best_gap = 0, None
    for index in range(tries):
        r_grid, r_anat, *_ = case_streams(seed, index)
        grid = sample_grid(r_grid, sample_anatomy(r_anat, thin_mm=THIN_MM["full"]), "full")
        gap = abs(grid.shape[0] - target_slices)
        if best_gap is None or gap < best_gap:
            best, best_gap = index, gap
    return best


def full_phantom(cache_dir: str | os.PathLike = DEFAULT_CACHE, seed: int = PHANTOM_SEED) -> BenchCase:
    """The cached full-size phantom (512 x 512, about 300 slices with tumours); made if missing."""
    from c2fseg.data.phantom_case import generate_case
    from c2fseg.io import write_labels, write_volume

    cache = Path(cache_dir)
    index = phantom_index(seed)
    name = f"phantom_full_s{seed}_i{index}"
    image, labels = cache / f"{name}_0000.nii.gz", cache / f"{name}_labels.nii.gz"
    if not (image.is_file() and labels.is_file()):
        cache.mkdir(parents=True, exist_ok=True)
        print(f"c2fseg bench: generating the full-size phantom {name} in {cache} (once, ~1 min)", flush=True)
        case = generate_case(seed, index, size="full", tumor=True)
        write_labels(case.labels, case.geometry, labels)
        write_volume(np.round(case.image).astype(np.int16), case.geometry, image)
    return BenchCase(name, image, labels)


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
