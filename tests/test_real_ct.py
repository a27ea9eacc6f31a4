"""predict_final.py on the real CT of the shared folder: the output keeps its exact geometry.

The real CT is read from the shared folder (see real_data.py; never copied into the repo); the models are tiny
random or HU-band networks, so this checks the pipeline and the geometry, not accuracy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from real_data import CT, real_path

REPO = Path(__file__).resolve().parents[1]
REAL_CT = real_path(CT)
pytestmark = pytest.mark.real_data(CT)


def _same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    assert np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    assert np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
    assert np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-7)


def test_predict_final_on_real_ct_keeps_geometry(tmp_path):
    from infer.fake_models import tiny_plans, write_fake_weights

    weights = tmp_path / "weights"
    plans = tiny_plans(spacing=(4.0, 4.0, 4.0))  # few tiles on the 3 mm CT: fast on 2 cores
    for i, stage in enumerate(("coarse", "organ", "tumor")):
        write_fake_weights(weights, stage, seed=i, plans=plans)
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "real_0000.nii.gz").symlink_to(REAL_CT)
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "predict_final.py"), "-i", str(inp), "-o", str(out),
           "--weights", str(weights), "--device", "cpu", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = sitk.ReadImage(str(out / "real.nii.gz"))
    _same_geometry(written, sitk.ReadImage(str(REAL_CT)))
    assert written.GetPixelID() == sitk.sitkUInt8
    assert sitk.GetArrayFromImage(written).max() <= 14
    report = json.loads((out / "c2fseg_report.json").read_text())
    assert [c["status"] for c in report["cases"]] in (["ok"], ["empty"])
    assert sorted(p.name for p in inp.iterdir()) == ["real_0000.nii.gz"]  # input untouched


def test_real_ct_segmentation_lands_where_the_tissue_is(tmp_path, monkeypatch):
    """HU-band models label soft tissue; the written labels must overlay that tissue in world space."""
    from c2fseg.infer import batch
    from c2fseg.infer.cascade import CascadeModels
    from infer.fake_models import band_stage_model

    organ_hu = {1: 60.0}  # everything near soft-tissue HU is "liver"

    def load(weights_dir, device, **kwargs):
        return CascadeModels(coarse=band_stage_model("coarse", organ_hu, spacing=(4.0, 4.0, 4.0)),
                             organ=band_stage_model("organ", organ_hu, spacing=(4.0, 4.0, 4.0)),
                             tumors=[band_stage_model("tumor", organ_hu, spacing=(4.0, 4.0, 4.0))])

    monkeypatch.setattr(batch, "load_models", load)
    for stage in ("coarse", "organ", "tumor"):
        (tmp_path / "weights" / stage).mkdir(parents=True)
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "real_0000.nii.gz").symlink_to(REAL_CT)
    report = batch.predict_folder(inp, tmp_path / "out", weights_dir=tmp_path / "weights",
                                  device="cpu", progress=False)
    assert [c.status for c in report.cases] == ["ok"]
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(REAL_CT)))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "real.nii.gz")))
    assert labels.shape == ct.shape  # stored voxel order, not canonical
    liver = labels == 1
    assert liver.sum() > 1000
    assert np.median(ct[liver]) > -100  # labelled voxels are tissue, not air: same voxel grid
