"""The JSON run report of a batch prediction: what ran, where, with which settings, per case.

Written atomically (temporary file + rename) so a crash never leaves half a report. Schema
(``schema_version`` 1)::

    {"schema_version", "command", "started_utc", "finished_utc", "seconds",
     "input_dir", "output_dir", "weights_dir",
     "environment": {"c2fseg", "torch", "nnunetv2", "SimpleITK", "numpy", "python", "platform",
                     "device", "device_name", "cuda"},
     "options": {...cascade options, seeds, flags...},
     "totals": {"cases", "ok", "empty", "skipped", "failed", "seconds_per_case"},
     "resources": {"peak_host_ram_mb", "peak_gpu_mem_mb"},
     "cases": [{"case", "input", "output", "status", "reason", "device", "fallback",
                "timings", "roi", "labels", "warnings"}]}

``status`` is ok, empty (all-background output written; flagged), skipped (a valid output
already existed) or failed (``reason`` says why; no output written).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

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
        """Write the report as JSON atomically (temporary file beside ``path``, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.to_dict(), fh, indent=2)
                fh.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
