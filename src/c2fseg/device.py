"""Which torch device to compute on: one resolver for predict, pseudolabel, train and bench.

``"auto"`` means CUDA when this torch sees a GPU, else CPU. An explicit CUDA request that cannot
be met is an error (never a silent CPU run), so a user who asked for the GPU learns why.
"""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


class DeviceError(ValueError):
    """The requested device is unknown or not available; the message says what to use instead."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cpu``, ``cuda`` and ``cuda:N`` as asked.

    Raises :class:`DeviceError` (a ValueError) for an unknown name or CUDA without a usable GPU.
    """
    if isinstance(device, torch.device):
        dev = device
    else:
        name = str(device).strip().lower()
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if name != "cpu" and not name.startswith("cuda"):
            raise DeviceError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise DeviceError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {str(device)!r} was asked for, but this PyTorch ({torch.__version__}) has no "
                "usable CUDA GPU. Use --device auto (GPU when there is one, else CPU) or --device cpu, "
                "or install a CUDA build of PyTorch."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {str(device)!r} was asked for, but only {torch.cuda.device_count()} CUDA "
                "GPU(s) are visible; use cuda:0 or set CUDA_VISIBLE_DEVICES"
            )
    elif dev.type != "cpu":
        raise DeviceError(f"device {str(device)!r} is not supported; use auto, cpu or cuda")
    return dev
