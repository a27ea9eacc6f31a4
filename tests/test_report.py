"""Run report: schema, totals, atomic writing."""

from __future__ import annotations

import json
import os
import platform

import numpy as np
import pytest

from c2fseg import fileutil
from c2fseg import report as report_mod
from c2fseg.report import CaseReport, RunReport, environment_info, peak_gpu_mem_mb, peak_host_ram_mb


def sample() -> RunReport:
    rep = RunReport("/in", "/out", "/w", environment={"device": "cpu"}, options={"seed": 0})
    rep.cases = [
        CaseReport("a", "/in/a_0000.nii.gz", "/out/a.nii.gz", "ok", timings={"coarse": 1.0, "organ": 2.0}),
        CaseReport("b", "/in/b_0000.nii.gz", "/out/b.nii.gz", "empty", timings={"coarse": 1.0}),
        CaseReport("c", "/in/c_0000.nii.gz", "/out/c.nii.gz", "skipped"),
        CaseReport("d", "/in/d_0000.nii.gz", "/out/d.nii.gz", "failed", reason="truncated"),
    ]
    return rep


def test_totals_count_each_status_and_time_per_processed_case():
    totals = sample().totals()
    assert totals == {"cases": 4, "ok": 1, "empty": 1, "skipped": 1, "failed": 1,
                      "seconds_per_case": 2.0}
    assert [c.case for c in sample().failed] == ["d"]


def test_unknown_status_is_refused():
    with pytest.raises(ValueError, match="status"):
        CaseReport("a", "i", "o", "done")


def test_written_json_has_schema_fields(tmp_path):
    path = sample().write(tmp_path / "sub" / "report.json")
    data = json.loads(path.read_text())
    assert data["schema_version"] == report_mod.SCHEMA_VERSION
    assert data["totals"]["failed"] == 1
    assert data["cases"][3] == {
        "case": "d", "input": "/in/d_0000.nii.gz", "output": "/out/d.nii.gz", "status": "failed",
        "reason": "truncated", "device": "", "fallback": "", "timings": {}, "roi": None,
        "labels": {}, "warnings": [], "earlier_status": "",
    }


def test_failed_write_keeps_previous_report_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    path.write_text('{"old": true}')

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fileutil.os, "replace", boom)
    with pytest.raises(OSError):
        sample().write(path)
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_environment_and_resources():
    import torch

    env = environment_info("cpu")
    assert env["device"] == "cpu" and env["cuda"] is None
    assert env["torch"] == torch.__version__ and env["numpy"] == np.__version__
    assert env["python"] == platform.python_version()
    assert report_mod.package_version("no-such-distribution-c2fseg") == "not installed"
    assert peak_gpu_mem_mb("cpu") is None


def test_peak_host_ram_is_in_mib():
    block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, touched, so resident
    peak = peak_host_ram_mb()
    physical_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    assert block.sum() == 64 * 2**20
    assert 64 <= peak <= physical_mib  # KiB or bytes misread as MiB would break one bound
