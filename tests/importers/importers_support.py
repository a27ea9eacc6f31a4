"""Helpers for the importer tests: fake released HIASBUAA files (v2 results folders: tests/nnunet_folders.py).

The released networks (6 stages, 32-320 features) weigh about 120 MB each, so most tests write
the four files with the same layout at thin widths (:data:`THIN`, passed to ``import_hiasbuaa``
as ``network``); one slow test uses the published size.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from c2fseg.convert.v1_keys import V1Network, v1_layout
from c2fseg.importers import published
from c2fseg.importers.hiasbuaa import published_architecture

#: The released layout (6 stages, strides [1,1,1], [2,2,2] x4, [1,2,2]) at thin widths.
THIN = {"features": [4, 8, 16, 24, 24, 24], "strides": published()["network"]["strides"]}
FILES = {name: entry["file"] for name, entry in published()["stages"].items()}
CLASSES = {name: int(entry["classes"]) for name, entry in published()["stages"].items()}
FOLDERS = ("coarse", "tumor", "tumor_2", "organ")


def v1_state(classes: int, network=THIN, seed: int = 0) -> dict:
    """Random weights under the v1 Generic_UNet key layout of the released network."""
    layout = v1_layout(V1Network(published_architecture(classes, network)))
    gen = torch.Generator().manual_seed(seed)
    return {k: 0.2 * torch.randn(s, generator=gen) for k, s in layout.items()}


def write_release(src: Path, network=THIN, seed: int = 0, skip: tuple[str, ...] = ()) -> Path:
    """The four released files (v1 trainer checkpoints with random weights) in ``src``."""
    src.mkdir(parents=True, exist_ok=True)
    for i, (name, file) in enumerate(FILES.items()):
        if name in skip:
            continue
        torch.save({"epoch": 1000, "state_dict": v1_state(CLASSES[name], network, seed + i),
                    "optimizer_state_dict": {}, "plot_stuff": ([0.5], [0.4], [0.3], [0.2])},
                   src / file)
    return src


def snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    """relative path -> (sha256, size, mtime_ns) of every file under ``folder``."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(folder))] = (hashlib.sha256(p.read_bytes()).hexdigest(),
                                               st.st_size, st.st_mtime_ns)
    return out


