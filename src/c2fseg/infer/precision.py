"""Precision and device policy of stage models: which autocast dtype, how many CPU threads.

``auto`` means fp16 autocast on CUDA, bf16 on CPUs with native bf16 matmul, else fp32.
"""

from __future__ import annotations

import numpy as np
import torch

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
#: Autocast dtype of each reduced precision (fp32 runs without autocast).
AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matmul (AVX512-BF16/AMX), where bf16 autocast is ~2-3x faster."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """Concrete precision ('fp32', 'fp16', 'bf16') for a request on a device."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 autocast is for CUDA; on CPU use bf16, fp32 or auto")
    return precision


#: CPU tiles up to this many voxels run two at a time. Measured on a 2-core AVX2 CPU (torch 2.13,
#: 4-stage 8-64 feature U-Net): a batch of one 32x48x48 ... 48x64x64 tile takes 2-6x longer per
#: tile than a batch of two (the convolution picks a slow path for a single small volume); at
#: 64x96x96 one tile at a time is slightly faster again.
CPU_PAIR_TILE_VOXELS = 64 * 64 * 64


def default_tile_batch(device: torch.device, patch: tuple[int, ...] | list[int]) -> int:
    """Tiles per network call: 2 on CUDA; on CPU 2 for small tiles, else 1 (see above)."""
    if device.type == "cuda":
        return 2
    return 2 if int(np.prod(patch)) <= CPU_PAIR_TILE_VOXELS else 1


def cap_cpu_threads() -> None:
    """Never run more torch threads than CPUs this process may use (containers, taskset)."""
    from c2fseg.fileutil import usable_cpus

    available = usable_cpus()
    if torch.get_num_threads() > available:
        torch.set_num_threads(available)


def prepare_device(device: torch.device) -> None:
    """Process-wide settings for running stage models on ``device``."""
    if device.type == "cpu":
        cap_cpu_threads()
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch size: pick the fastest kernels once
