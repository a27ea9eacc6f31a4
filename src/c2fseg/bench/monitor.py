"""Resource sampling for the benchmark: host RAM and GPU memory every 0.1 s in a thread.

GPU memory follows the FLARE rule: sampled every 0.1 s, area under the memory-time curve =
sum(samples in MB) x 0.1 (MB*s). Source, in order of preference: NVML memory of this process,
NVML device used memory (this process is alone on a lent machine), torch's device free/total.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable

INTERVAL_S = 0.1
MB = 2**20


def maxrss_mb() -> float:
    """Peak resident memory of this process so far (getrusage), MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (MB if sys.platform == "darwin" else 1024), 1)


def _nvml_used_mb(index: int) -> float | None:
    """NVML used memory of GPU ``index`` in MiB (all processes), or None without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used / MB
    except Exception:  # no nvidia-ml-py, no driver, no device
        return None


#: What :func:`ensure_cuda_context` measured when it first ran in this process (None before).
_CONTEXT: dict | None = None


def ensure_cuda_context(device) -> dict:
    """Create this process's CUDA context on ``device`` (once) and report what it cost.

    NVML lists a process (and its memory) only once it has a context, so a probe made before
    would fall back to another source than later ones. Returns ``created_here`` (False when torch
    had initialised CUDA before), ``seconds`` and ``context_mb``: NVML device memory used after
    minus before, less what torch itself reserved (None without NVML or if made elsewhere).
    """
    global _CONTEXT
    import torch

    if _CONTEXT is not None:
        return _CONTEXT
    dev = torch.device(device)
    index = dev.index if dev.index is not None else 0
    created_here = not torch.cuda.is_initialized()
    before = _nvml_used_mb(index) if created_here else None
    t0 = time.perf_counter()
    torch.empty(1, device=torch.device("cuda", index))
    torch.cuda.synchronize(index)
    seconds = time.perf_counter() - t0
    after = _nvml_used_mb(index)
    own = None
    if before is not None and after is not None:
        own = round(after - before - torch.cuda.memory_reserved(index) / MB, 1)
    _CONTEXT = {"created_here": created_here, "seconds": round(seconds, 3), "context_mb": own,
                "device_used_mb_after": None if after is None else round(after, 1)}
    return _CONTEXT


def cuda_context_info() -> dict | None:
    """What :func:`ensure_cuda_context` measured, or None if it has not run in this process."""
    return _CONTEXT


def _nvml_reader(index: int) -> tuple[Callable[[], float], str] | None:
    """NVML reader of this process's GPU memory (or the device's used memory), or None.

    Call only once this process has its CUDA context (see :func:`gpu_reader`).
    """
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # no nvidia-ml-py, no driver, no device
        return None
    pid = os.getpid()

    def process_mb() -> float:
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        used = [p.usedGpuMemory for p in procs if p.pid == pid and p.usedGpuMemory is not None]
        return sum(used) / MB if used else float("nan")

    def device_mb() -> float:
        return pynvml.nvmlDeviceGetMemoryInfo(handle).used / MB

    try:
        if process_mb() == process_mb():  # not NaN: our pid is visible (no PID namespace)
            return process_mb, "nvml-process"
    except Exception:
        pass
    return device_mb, "nvml-device-used"


def gpu_reader(
    device,
    *,
    make_context: Callable[[object], object] = ensure_cuda_context,
    probe: Callable[[int], tuple[Callable[[], float], str] | None] = _nvml_reader,
) -> tuple[Callable[[], float], str] | None:
    """A function giving the GPU memory in MB now, and its source name; None off CUDA.

    The CUDA context is made first (``make_context``), then NVML is probed (``probe``), so every
    sampler of a run, the first (cold) one included, reads the same source.
    """
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    make_context(dev)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    found = probe(index)
    if found is not None:
        return found

    def torch_used() -> float:
        free, total = torch.cuda.mem_get_info(index)
        return (total - free) / MB

    return torch_used, "torch-mem-get-info"


def _rss_reader() -> Callable[[], float]:
    """A function giving this process's resident memory now, MiB (psutil)."""
    import psutil

    proc = psutil.Process()
    return lambda: proc.memory_info().rss / MB


class MemorySampler:
    """Samples host RSS (psutil) and GPU memory every ``interval`` seconds while running.

    Use as a context manager around the work to measure; read :meth:`summary` afterwards.
    ``host_reader`` (MiB now; default: this process's RSS) lets tests feed known values.
    """

    def __init__(self, device="cpu", interval: float = INTERVAL_S, *,
                 host_reader: Callable[[], float] | None = None) -> None:
        self.interval = float(interval)
        self._host = host_reader or _rss_reader()
        self._gpu = gpu_reader(device)
        self.host_mb: list[float] = []
        self.gpu_mb: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.seconds = 0.0

    def _sample(self) -> None:
        self.host_mb.append(float(self._host()))
        if self._gpu is not None:
            try:
                self.gpu_mb.append(float(self._gpu[0]()))
            except Exception:  # a failed read must not kill the benchmark
                pass

    def _loop(self) -> None:
        next_t = time.perf_counter()
        while not self._stop.is_set():
            self._sample()
            next_t += self.interval
            self._stop.wait(max(0.0, next_t - time.perf_counter()))

    def start(self) -> MemorySampler:
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, name="c2fseg-memsample", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()  # at least one sample even for very short work
        self.seconds = time.perf_counter() - self._t0

    def __enter__(self) -> MemorySampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def summary(self) -> dict:
        """Peaks and the FLARE GPU memory-time area (sum of samples x interval, MB*s)."""
        gpu = [g for g in self.gpu_mb if g == g]
        return {
            "samples": len(self.host_mb),
            "interval_s": self.interval,
            "seconds": round(self.seconds, 3),
            "peak_host_rss_mb": round(max(self.host_mb), 1) if self.host_mb else None,
            "gpu_source": self._gpu[1] if self._gpu else None,
            "peak_gpu_mb": round(max(gpu), 1) if gpu else None,
            "gpu_area_mb_s": round(sum(gpu) * self.interval, 1) if gpu else None,
        }


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux) or platform."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device) -> dict:
    """CPU, cores, memory, torch and (on CUDA) the card, driver and CUDA version."""
    import psutil
    import torch

    from c2fseg.fileutil import usable_cpus
    from c2fseg.report import environment_info

    usable = usable_cpus()
    info = {
        **environment_info(str(device)),
        "cpu_model": cpu_model(),
        "cpu_cores_usable": usable,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "host_ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "hostname": platform.node(),
    }
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(torch.device(device))
        info["gpu_name"] = props.name
        info["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
        info["cudnn"] = torch.backends.cudnn.version()
        try:
            import pynvml

            pynvml.nvmlInit()
            drv = pynvml.nvmlSystemGetDriverVersion()
            info["driver"] = drv.decode() if isinstance(drv, bytes) else drv
        except Exception:
            info["driver"] = None
    return info
