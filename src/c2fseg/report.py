"""The JSON run report of a batch prediction: what ran, where, with which settings, per case.

Written atomically (temporary file + rename) so a crash never leaves half a report; a write that
fails (disk full) raises :class:`~c2fseg.fileutil.WriteError` and leaves the previous report. Schema
(``schema_version`` 1)::

    {"schema_version", "command", "started_utc", "finished_utc", "seconds",
     "input_dir", "output_dir", "weights_dir",
     "environment": {"c2fseg", "torch", "nnunetv2", "SimpleITK", "numpy", "python", "platform",
                     "device", "device_name", "cuda"},
     "options": {...cascade options, seeds, flags...},
     "totals": {"cases", "ok", "empty", "skipped", "failed", "seconds_per_case"},
     "resources": {"peak_host_ram_mb", "peak_gpu_mem_mb"},
     "cases": [{"case", "input", "output", "status", "reason", "device", "fallback",
                "timings", "roi", "labels", "warnings", "earlier_status"}]}

``status`` is ok, empty (all-background output written; flagged), skipped (a valid output that
c2fseg wrote in an earlier run was kept) or failed (``reason`` says why; no output written).
A skipped case carries over what the earlier run recorded for that output (``earlier_status``
ok/empty, its reason, device, ROI, label counts and warnings), so a rerun loses nothing.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from c2fseg.fileutil import write_json_atomic

SCHEMA_VERSION = 1
STATUSES = ("ok", "empty", "skipped", "failed")


@dataclass
class CaseReport:
    """One case's line in the report."""

    case: str
    input: str
    output: str
    status: str
    reason: str = ""
    device: str = ""
    fallback: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    roi: dict | None = None
    labels: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    earlier_status: str = ""  # skipped cases: the status of the run that wrote the kept output

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown case status {self.status!r}; expected one of {STATUSES}")


def utc_now() -> str:
    """Current time, UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def package_version(name: str) -> str:
    """Installed version of a distribution, or 'not installed'."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_info(device: str = "cpu") -> dict:
    """Versions and the compute device, so a result can be traced to the software that made it."""
    from c2fseg import __version__

    info = {
        "c2fseg": __version__,
        "torch": package_version("torch"),
        "nnunetv2": package_version("nnunetv2"),
        "SimpleITK": package_version("SimpleITK"),
        "numpy": package_version("numpy"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(device),
        "device_name": platform.processor() or platform.machine(),
        "cuda": None,
    }
    if str(device).startswith("cuda"):
        import torch

        info["device_name"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def peak_host_ram_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    divisor = 1024 * 1024 if sys.platform == "darwin" else 1024
    return round(peak / divisor, 1)


def peak_gpu_mem_mb(device: str) -> float | None:
    """Peak GPU memory allocated by torch on ``device`` in MiB; None when not on CUDA."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    return round(torch.cuda.max_memory_allocated(torch.device(device)) / 2**20, 1)


@dataclass
class RunReport:
    """Everything about one batch run; ``write`` stores it as JSON."""

    input_dir: str
    output_dir: str
    weights_dir: str = ""
    command: str = "predict"
    environment: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    cases: list[CaseReport] = field(default_factory=list)
    started_utc: str = field(default_factory=utc_now)
    finished_utc: str = ""
    seconds: float = 0.0
    resources: dict = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(1 for c in self.cases if c.status == status)

    @property
    def failed(self) -> list[CaseReport]:
        return [c for c in self.cases if c.status == "failed"]

    def totals(self) -> dict:
        """Case counts per status and the mean time per processed case."""
        done = [c for c in self.cases if c.status in ("ok", "empty")]
        per_case = sum(sum(c.timings.values()) for c in done) / len(done) if done else 0.0
        counts = {s: self.count(s) for s in STATUSES}
        return {"cases": len(self.cases), **counts, "seconds_per_case": round(per_case, 3)}

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "command": self.command,
            "started_utc": self.started_utc,
            "finished_utc": self.finished_utc,
            "seconds": round(self.seconds, 3),
            "input_dir": self.input_dir,
            "output_dir": self.output_dir,
            "weights_dir": self.weights_dir,
            "environment": self.environment,
            "options": self.options,
            "totals": self.totals(),
            "resources": self.resources,
            "cases": [asdict(c) for c in self.cases],
        }

    def write(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON atomically (temporary file beside ``path``, then rename).

        Raises :class:`~c2fseg.fileutil.WriteError` (an ``OSError``) when it cannot be written.
        """
        return write_json_atomic(path, self.to_dict())
