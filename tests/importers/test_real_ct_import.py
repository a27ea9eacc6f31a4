"""Imported HIASBUAA-like stages on the real CT: predict_final.py runs the published settings.

Thin random-weight networks in the released layout, written by ``import_hiasbuaa``'s own code path
with the published settings, but with coarse spacings so a 2-core CPU runs the case in seconds:
this checks the pipeline wiring, the geometry and the report, not accuracy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from importers_support import THIN, write_release

from c2fseg.importers import hiasbuaa
from real_data import CT, real_path

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.real_data(CT)


def test_predict_final_with_imported_stages(tmp_path, monkeypatch):
    data = hiasbuaa.published()
    for entry in data["stages"].values():  # few, small tiles; every setting stays published
        entry["spacing"] = [6.0, 6.0, 6.0]
        entry["patch"] = [32, 64, 64]
    monkeypatch.setattr(hiasbuaa, "published", lambda: json.loads(json.dumps(data)))
    weights = tmp_path / "weights"
    hiasbuaa.import_hiasbuaa(write_release(tmp_path / "src"), weights, network=THIN)
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "real_0000.nii.gz").symlink_to(real_path(CT))
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "predict_final.py"), "-i", str(inp), "-o", str(out),
           "--weights", str(weights), "--device", "cpu", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written, source = sitk.ReadImage(str(out / "real.nii.gz")), sitk.ReadImage(str(real_path(CT)))
    assert written.GetSize() == source.GetSize()
    assert np.allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-6)
    assert np.allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-5)
    assert np.allclose(written.GetDirection(), source.GetDirection(), atol=1e-7)
    assert written.GetPixelID() == sitk.sitkUInt8
    report = json.loads((out / "c2fseg_report.json").read_text())
    options = report["options"]
    assert options["pipeline"] == "hiasbuaa-flare23"
    stages = options["stages"]
    assert set(stages) >= {"coarse", "organ", "tumor", "tumor_2"}
    assert stages["coarse"]["inference"]["roi_rule"] == "published"
    assert stages["coarse"]["inference"]["decoder_stages"] == 3
    assert stages["tumor_2"]["inference"]["tumor_combination"] == "published_reconcile"
    assert stages["organ"]["inference"]["min_prob"] == 0.1
    assert [c["status"] for c in report["cases"]] in (["ok"], ["empty"])
