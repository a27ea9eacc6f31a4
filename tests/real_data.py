"""Where tests find the shared real CT (read in place, never copied into the repo).

The shared folder is looked for, in order, at ``$C2FSEG_SHARED``, ``<repo>/../shared`` (CI: a copy
of shared/ beside the fresh clone, as beside /work/main) and ``<repo>/shared``; the first one that
holds ``data/real/<file>`` is used. A test that needs real data carries the marker
``@pytest.mark.real_data("file", ...)`` (no names: the CT); tests/conftest.py skips it, with the
places it looked, when a file is missing, and lists in pytest's summary which real-data tests ran.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Environment variable naming the shared folder (the one with data/real/ inside).
ENV_VAR = "C2FSEG_SHARED"
#: The real CT and its reference labels in data/real/.
CT = "ts_example_ct.nii.gz"
LABELS = "ts_example_ct_labels.nii.gz"


def shared_candidates() -> list[Path]:
    """Shared folders to look in, in order of preference."""
    env = os.environ.get(ENV_VAR)
    return ([Path(env).expanduser()] if env else []) + [REPO.parent / "shared", REPO / "shared"]


def find_real(name: str) -> Path | None:
    """``data/real/<name>`` in the first shared folder that has it, or None."""
    for shared in shared_candidates():
        path = shared / "data" / "real" / name
        if path.is_file():
            return path
    return None


def real_path(name: str = CT) -> Path:
    """Path of a real-data file: where it was found, else where the first candidate would hold it
    (a test using it is skipped by its ``real_data`` marker before it is opened)."""
    return find_real(name) or shared_candidates()[0] / "data" / "real" / name


def real_dir() -> Path:
    """The data/real/ folder holding the real CT (see :func:`real_path`)."""
    return real_path(CT).parent


def missing_reason(names: Iterable[str]) -> str | None:
    """Why a test needing ``names`` cannot run (None if every file is there)."""
    missing = [n for n in names if find_real(n) is None]
    if not missing:
        return None
    places = ", ".join(str(p) for p in shared_candidates())
    return (f"real data {', '.join(missing)} not found in data/real/ of {places}; "
            f"set {ENV_VAR} to the shared folder to run it")
