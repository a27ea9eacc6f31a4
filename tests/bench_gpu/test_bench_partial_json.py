"""A bench killed (SIGKILL, no clean-up) after the cold run or a warm run leaves valid JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from c2fseg.bench.report import format_markdown
from c2fseg.io import make_geometry, write_volume

SRC = Path(__file__).resolve().parents[2] / "src"

#: Runs a tiny CPU bench in a child process whose run_once kills the process (SIGKILL, as
#: `timeout -s KILL` or the device tool would) when it is called for the ``KILL_AT``-th time.
CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from c2fseg.bench import runner

    kill_at = int(sys.argv[3])
    calls = []
    real_run_once = runner.run_once

    def run_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_run_once(*args, **kwargs)

    runner.run_once = run_once
    opts = runner.BenchOptions(cases=[sys.argv[1]], models="thin", device="cpu", warm=3,
                               baseline="none", precision="fp32", out=Path(sys.argv[2]),
                               cache_dir=Path(sys.argv[2]).parent / "cache", patch=(16, 32, 32),
                               width=4, progress=False)
    runner.run_bench(opts)
""")


@pytest.fixture
def tiny_case(tmp_path) -> Path:
    ct = np.full((16, 40, 40), -1000, dtype=np.int16)
    ct[2:14, 6:34, 6:34] = 40
    path = tmp_path / "tiny_0000.nii.gz"
    write_volume(ct, make_geometry(ct.shape, (2.5, 1.5, 1.5)), path)
    return path


def run_killed(case: Path, out: Path, kill_at: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", CHILD, str(case), str(out), str(kill_at)],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("kill_at, warm_done", [(2, 0), (3, 1)])
def test_killed_bench_leaves_the_finished_runs(tiny_case, tmp_path, kill_at, warm_done):
    out = tmp_path / "res" / "bench.json"
    proc = run_killed(tiny_case, out, kill_at)
    assert proc.returncode == -9, proc.stderr  # really killed, not a clean exit
    saved = json.loads(out.read_text(encoding="utf-8"))  # valid JSON, not a torn file
    case = saved["cases"][0]
    assert case["cold"]["total_s"] > 0 and case["cold"]["stages"]["coarse"] >= 0
    assert f"{warm_done} of 3 warm runs" in case["partial"]
    assert len(case.get("warm", {}).get("runs", [])) == warm_done
    assert "baseline" not in case
    assert "Partial result" in out.with_suffix(".md").read_text(encoding="utf-8")
    assert not [p.name for p in out.parent.iterdir() if p.name.endswith(".part")]
    format_markdown(saved)  # the partial result still renders


def test_finished_bench_has_no_partial_marker(tiny_case, tmp_path):
    out = tmp_path / "res" / "bench.json"
    proc = run_killed(tiny_case, out, kill_at=99)  # never reached: the run finishes
    assert proc.returncode == 0, proc.stderr
    case = json.loads(out.read_text(encoding="utf-8"))["cases"][0]
    assert "partial" not in case and len(case["warm"]["runs"]) == 3
