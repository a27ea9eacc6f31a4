"""Reading nnU-Net trainer checkpoints (v1 ``.model``/``.pth``, v2 ``checkpoint_final.pth``) safely.

``torch.load`` runs with ``weights_only=True`` first. Trainer checkpoints also pickle training
logs, which hold numpy scalars; those (and only those harmless numpy reconstructors) are allowed
in a second weights-only attempt. Only a file that needs anything else is fully unpickled, with a
warning, because full unpickling can run code from the file.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from c2fseg.convert.errors import ConversionError
from c2fseg.infer.stage_loader import extract_state_dict
from c2fseg.weights import WeightsError

try:  # numpy >= 2 (numpy 1 pickles name the same functions numpy.core.multiarray.*)
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core import multiarray as _multiarray

log = logging.getLogger(__name__)

#: Globals a trainer checkpoint's logs need, by the names numpy 1 and numpy 2 pickle them under.
_NUMPY_GLOBALS = {
    "numpy.core.multiarray.scalar": _multiarray.scalar,
    "numpy._core.multiarray.scalar": _multiarray.scalar,
    "numpy.core.multiarray._reconstruct": _multiarray._reconstruct,
    "numpy._core.multiarray._reconstruct": _multiarray._reconstruct,
    "numpy.ndarray": np.ndarray,
    "numpy.dtype": np.dtype,
}


def _numpy_globals(path: Path) -> list | None:
    """Safe-global entries for the file's unsafe globals, or None if any is not harmless numpy."""
    if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):  # torch < 2.5
        return None
    names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    entries = []
    for name in names:
        if name in _NUMPY_GLOBALS:
            entries.append((_NUMPY_GLOBALS[name], name))
        elif name.startswith("numpy.dtypes.") and hasattr(np.dtypes, name.rsplit(".", 1)[1]):
            entries.append(getattr(np.dtypes, name.rsplit(".", 1)[1]))
        else:
            return None
    if "numpy.dtype" in names:  # a dtype is rebuilt as an instance of its numpy.dtypes class
        entries += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return entries


def _load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    allowed = _numpy_globals(path)
    if allowed is not None:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    log.warning("%s: holds Python objects beyond tensors and numpy values; unpickling it fully "
                "(only do this with files from a source you trust)", path)
    return torch.load(path, map_location="cpu", weights_only=False)


def read_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> dict:
    """The dict stored in a PyTorch checkpoint file, on the CPU.

    Raises :class:`ConversionError` naming the file when it is missing, not a file, unreadable
    (truncated download, not a PyTorch file) or does not hold a dict.
    """
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"{path}: {what} not found; check the path (and the download)")
    if not path.is_file():
        raise ConversionError(f"{path}: {what} is not a file")
    try:
        content = _load(path)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile,
            AttributeError, ModuleNotFoundError, ImportError, TypeError) as exc:
        raise ConversionError(
            f"{path}: cannot read the {what} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "the file is damaged or not a PyTorch checkpoint: download it again"
        ) from None
    if not isinstance(content, dict):
        raise ConversionError(f"{path}: holds a {type(content).__name__}, not a checkpoint dict; "
                              "give the trainer's checkpoint file")
    return content


def v1_state_dict(checkpoint: dict, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The network weights of an nnU-Net v1 trainer checkpoint (``state_dict``), prefixes stripped."""
    return _weights_under(checkpoint, path, "state_dict", "an nnU-Net v1 trainer checkpoint",
                          "network_weights", "it is an nnU-Net v2 checkpoint: import its results "
                          "folder as nnU-Net v2")


def v2_state_dict(checkpoint: dict, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The network weights of an nnU-Net v2 checkpoint (``network_weights``), prefixes stripped."""
    return _weights_under(checkpoint, path, "network_weights", "an nnU-Net v2 checkpoint",
                          "state_dict", "it is an nnU-Net v1 trainer checkpoint: import it as nnU-Net v1")


def _weights_under(checkpoint: dict, path: str | os.PathLike, key: str, what: str,
                   other_key: str, other_hint: str) -> dict[str, torch.Tensor]:
    """``checkpoint[key]`` as tensors, or a ConversionError saying what the file is instead."""
    if key not in checkpoint:
        hint = other_hint if other_key in checkpoint else \
            f"its keys are {', '.join(map(str, list(checkpoint)[:6]))}"
        raise ConversionError(f"{path}: not {what} (no {key!r}); {hint}")
    return _tensors(checkpoint[key], path)


def _tensors(state: object, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    try:
        return extract_state_dict(state)  # type: ignore[arg-type]
    except WeightsError:
        raise ConversionError(f"{path}: the checkpoint's weights are not a state dict of tensors; "
                              "the file is damaged or not a trainer checkpoint") from None
