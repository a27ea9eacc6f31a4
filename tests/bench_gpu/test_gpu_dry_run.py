"""The whole prepared GPU call, dry: pack, unpack, image stand-in, every step on the CPU.

Slow (3-5 min with the pack cached in ~/.cache/c2fseg-gpu-wheels/, ~10 min without) and needs the
package registry the first time. Run: ``python -m pytest -m slow tests/bench_gpu/test_gpu_dry_run.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None or shutil.which("timeout") is None,
                    reason="needs git and coreutils timeout")
def test_gpu_script_dry_run_passes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(DONOR_PYTHON=os.environ.get("DONOR_PYTHON", sys.executable), DRY_DIR=str(tmp_path))
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_dry_run.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=3000)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "DRY RUN OK" in proc.stdout, log[-6000:]
    steps = (tmp_path / "out" / "steps.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert [s.split("\t")[:2] for s in steps] == [[name, "0"] for name in (
        "unpack", "imports", "machine", "phantoms", "weights", "check", "predict", "bench")]
    pred = json.loads((tmp_path / "out" / "predict_final.json").read_text(encoding="utf-8"))
    assert pred["outputs_written"] == 2 and pred["process_start_to_last_file_written_s"] > 0
    assert not list((tmp_path / "site").rglob("skimage"))  # the image's own scikit-image is used
