"""``predict --set STAGE.KEY=VALUE`` and ``--voxel-order``: per-run switches of stage settings."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from fake_models import write_fake_weights
from infer_support import abdomen_ct

from c2fseg.cli import main
from c2fseg.commands.predict import overrides_of, setting_override
from c2fseg.infer.model_setup import SetupError, load_models


@pytest.fixture
def weights(tmp_path):
    w = tmp_path / "w"
    for stage in ("coarse", "organ", "tumor"):
        write_fake_weights(w, stage)
    return w


def test_setting_override_parses_json_or_words_and_checks_the_key():
    assert setting_override("coarse.min_prob=0.1") == ("coarse", "min_prob", 0.1)
    assert setting_override("coarse.roi_rule=c2fseg") == ("coarse", "roi_rule", "c2fseg")
    assert setting_override("organ.keep_largest=[1,2]") == ("organ", "keep_largest", [1, 2])
    assert overrides_of([("organ", "step", 0.25), ("organ", "mirror", True)]) == {
        "organ": {"step": 0.25, "mirror": True}}
    assert overrides_of(None) is None
    for bad, message in [("coarse.min_prob", "STAGE.KEY=VALUE"), ("lung.step=1", "unknown stage"),
                         ("organ.roi_rule=c2fseg", "not an inference setting of the organ stage")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            setting_override(bad)


def test_overrides_and_voxel_order_reach_every_model(weights):
    models = load_models(weights, "cpu", overrides={"tumor": {"min_prob": 0.2}, "coarse": {"step": 0.5}},
                         input_orientation="as-stored")
    assert models.tumors[0].inference["min_prob"] == 0.2 and models.organ.inference["min_prob"] == 0.0
    assert models.coarse.step == 0.5
    assert models.input_orientation == "as-stored"
    assert load_models(weights, "cpu").input_orientation == "canonical-LPS"
    with pytest.raises(SetupError, match="roi_rule must be one of"):
        load_models(weights, "cpu", overrides={"coarse": {"roi_rule": "nearest"}})


def test_predict_cli_records_what_was_switched(weights, write_ct, tmp_path):
    ct, _ = abdomen_ct()
    write_ct("a_0000.nii.gz", ct)
    out = tmp_path / "out"
    code = main(["predict", "-i", str(tmp_path / "in"), "-o", str(out), "--weights", str(weights),
                 "--device", "cpu", "--no-progress", "--set", "organ.weighting=gaussian",
                 "--voxel-order", "as-stored"])
    assert code == 0
    report = json.loads((out / "c2fseg_report.json").read_text())
    assert report["options"]["overrides"] == {"organ": {"weighting": "gaussian"}}
    assert report["options"]["input_orientation"] == "as-stored"
    assert report["options"]["stages"]["organ"]["inference"]["weighting"] == "gaussian"
    assert report["options"]["stages"]["coarse"]["inference"]["weighting"] == "uniform"
    assert report["cases"][0]["status"] in ("ok", "empty")
    assert np.isfinite(report["seconds"])
