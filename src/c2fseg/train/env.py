"""nnU-Net's environment: folder variables and process counts, set from our own work folder.

nnU-Net reads ``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results`` and
``nnUNet_def_n_proc`` once, when its modules are first imported, so they must be set before any
``nnunetv2`` import and cannot change afterwards in the same process. ``train_stage`` therefore
runs the nnU-Net part of every call in a fresh worker process (``c2fseg.train.worker``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: Folder names inside the work folder, one per nnU-Net variable.
FOLDERS = {
    "nnUNet_raw": "nnUNet_raw",
    "nnUNet_preprocessed": "nnUNet_preprocessed",
    "nnUNet_results": "nnUNet_results",
}


def default_num_processes() -> int:
    """Worker processes for fingerprinting/preprocessing: the CPU count, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def nnunet_environment(work_dir: str | os.PathLike, num_processes: int | None = None,
                       da_workers: int | None = None) -> dict[str, str]:
    """The nnU-Net variables for ``work_dir`` (absolute paths) as a dict of strings."""
    work = Path(work_dir).resolve()
    env = {var: str(work / name) for var, name in FOLDERS.items()}
    n = num_processes or default_num_processes()
    env["nnUNet_def_n_proc"] = str(n)
    # 0 means "augment in the main process"; nnU-Net's planner needs >= 1 (it calls
    # torch.set_num_threads with this value), so training sets 0 later, after planning.
    env["nnUNet_n_proc_DA"] = str(max(1, n if da_workers is None else da_workers))
    return env


def configure_nnunet(work_dir: str | os.PathLike, num_processes: int | None = None) -> dict[str, str]:
    """Set nnU-Net's variables for ``work_dir`` in ``os.environ``; call before importing nnunetv2.

    Raises RuntimeError when nnU-Net was already imported in this process with other folders,
    because it would silently keep using those.
    """
    env = nnunet_environment(work_dir, num_processes)
    paths = sys.modules.get("nnunetv2.paths")
    if paths is not None:
        for var in FOLDERS:
            if getattr(paths, var, None) not in (None, env[var]):
                raise RuntimeError(
                    f"nnU-Net was already imported in this process with {var}={getattr(paths, var)}; "
                    f"it cannot be pointed at {env[var]} any more. Run training in a new process "
                    "(c2fseg train does this for you)."
                )
    for folder in FOLDERS:
        Path(env[folder]).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    return env


def set_augmentation_workers(n: int | None) -> None:
    """Data-augmentation worker processes for training (0 = in the main process).

    nnU-Net reads this when it builds the data loaders, so it can change after planning.
    """
    if n is not None:
        os.environ["nnUNet_n_proc_DA"] = str(int(n))


def set_compile(flag: bool | None) -> None:
    """Enable/disable torch.compile in nnU-Net's trainer (None keeps nnU-Net's default)."""
    if flag is not None:
        os.environ["nnUNet_compile"] = "true" if flag else "false"
