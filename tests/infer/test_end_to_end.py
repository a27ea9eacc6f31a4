"""End to end with the real StageModel: band models in process, random weights via the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from infer_support import abdomen_ct

from c2fseg.infer import batch
from c2fseg.infer.cascade import CascadeModels
from c2fseg.io import read_labels

fake_models = pytest.importorskip("fake_models")
REPO = Path(__file__).resolve().parents[2]
SPACING = (2.0, 1.5, 1.5)  # the band models' own spacing: no resampling blur at organ edges


def test_band_models_through_predict_folder(write_ct, tmp_path, monkeypatch):
    ct, expected = abdomen_ct()
    ct[expected == 14] = 100.0  # the organ bands see this as liver (150), the tumor band as tumor
    path, _ = write_ct("case_0000.nii.gz", ct, spacing=SPACING, transpose=(2, 0, 1),
                       flip=(True, False, False))
    weights = tmp_path / "weights"
    for stage in ("coarse", "organ", "tumor"):
        (weights / stage).mkdir(parents=True)
    organ_hu = {1: 150.0, 2: 250.0, 3: 350.0}

    def load(weights_dir, device, **kwargs):
        return CascadeModels(
            coarse=fake_models.band_stage_model("coarse", organ_hu),
            organ=fake_models.band_stage_model("organ", organ_hu),
            tumors=[fake_models.band_stage_model("tumor", {**organ_hu, 14: 100.0})],
        )

    monkeypatch.setattr(batch, "load_models", load)
    report = batch.predict_folder(path.parent, tmp_path / "out", weights_dir=weights,
                                  device="cpu", progress=False)
    assert [c.status for c in report.cases] == ["ok"]
    assert np.array_equal(read_labels(tmp_path / "out" / "case.nii.gz").array, expected)


def test_predict_final_subprocess_with_random_weights(write_ct, tmp_path):
    weights = tmp_path / "weights"
    for i, stage in enumerate(("coarse", "organ", "tumor")):
        fake_models.write_fake_weights(weights, stage, seed=i)
    second = fake_models.write_fake_weights(tmp_path / "spare", "tumor", seed=5)
    second.rename(weights / "tumor_2")  # a second tumor model: probabilities averaged
    ct, _ = abdomen_ct()
    inp = tmp_path / "in"
    write_ct("a_0000.nii.gz", ct, spacing=SPACING)
    write_ct("b_0000.nii.gz", ct[:, ::-1], spacing=SPACING, transpose=(1, 0, 2))
    (inp / "broken_0000.nii.gz").write_bytes(b"not an image")
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "predict_final.py"), "-i", str(inp), "-o", str(out),
           "--weights", str(weights), "--device", "cpu", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    for case in ("a", "b"):
        written = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        source = sitk.ReadImage(str(inp / f"{case}_0000.nii.gz"))
        assert written.GetSize() == source.GetSize()
        assert np.allclose(written.GetDirection(), source.GetDirection())
        assert sitk.GetArrayFromImage(written).max() <= 14
    report = json.loads((out / "c2fseg_report.json").read_text())
    assert report["options"]["tumor_models"] == 2
    assert {c["case"]: c["status"] for c in report["cases"]}["broken"] == "failed"
