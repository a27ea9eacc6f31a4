"""c2fseg.settings: the one defaults file, the inference settings' rules, layering and ensembles."""

from __future__ import annotations

from pathlib import Path

import pytest

from c2fseg import settings
from c2fseg.labels import SINGLE_COMPONENT_ORGANS, STAGES
from c2fseg.settings import SettingsError, check_ensemble, inference_defaults, resolve_inference

ROOT = Path(__file__).resolve().parents[1]


def test_the_defaults_file_is_package_data_and_every_setting_has_a_rule():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert settings.DEFAULTS_FILE in pyproject["tool"]["setuptools"]["package-data"]["c2fseg"]
    assert (ROOT / "src" / "c2fseg" / settings.DEFAULTS_FILE).is_file()
    for stage in STAGES:
        keys = set(inference_defaults(stage))
        assert keys <= set(settings.RULES), stage
        assert {"step", "weighting", "mirror", "min_prob"} <= keys
    assert set(inference_defaults("coarse")) - set(inference_defaults("organ")) == {
        "roi_rule", "roi_margin_mm", "max_liver_gap_mm", "max_centroid_distance_voxels", "delete_labels"}
    # c2fseg's own defaults leave every published-pipeline step off
    for stage in STAGES:
        d = inference_defaults(stage)
        assert (d["average"], d["tile_rule"], d["align_corners"]) == ("logits", "stride", False)
        assert d["max_inplane_voxels"] is None and d["decoder_stages"] is None
    assert inference_defaults("coarse")["keep_largest"] == []
    # c2fseg's organ policy: every anatomically single organ keeps its largest component
    assert tuple(inference_defaults("organ")["keep_largest"]) == SINGLE_COMPONENT_ORGANS


def test_layers_apply_in_order_and_are_checked():
    got = resolve_inference("coarse", {"step": 0.5, "min_prob": 0.1}, {"step": 0.8}, None)
    assert (got["step"], got["min_prob"], got["weighting"]) == (0.8, 0.1, "uniform")
    assert resolve_inference("coarse", {"roi_margin_mm": (1, 2, 3)})["roi_margin_mm"] == [1.0, 2.0, 3.0]
    with pytest.raises(SettingsError, match="step must be a number"):
        resolve_inference("organ", {"step": True})
    with pytest.raises(SettingsError, match="must be a JSON object"):
        resolve_inference("organ", [("step", 0.5)])


def test_defaults_are_returned_as_copies():
    inference_defaults("organ")["keep_largest"].append(14)
    assert 14 not in inference_defaults("organ")["keep_largest"]
    settings.load_defaults()["inference"]["coarse"]["step"] = 0.1
    assert inference_defaults("coarse")["step"] == 1.0


def test_the_cascade_implements_every_rule_the_settings_accept():
    from c2fseg.infer.cascade import ROI_RULES, TUMOR_RULES

    assert set(ROI_RULES) == set(settings.CHOICES["roi_rule"])
    assert set(TUMOR_RULES) == set(settings.CHOICES["tumor_combination"])
    from c2fseg.infer.sliding import AVERAGES, TILE_RULES

    assert set(AVERAGES) == set(settings.CHOICES["average"])
    assert set(TILE_RULES) == set(settings.CHOICES["tile_rule"])


def test_tumor_models_of_one_ensemble_must_agree():
    a, b = resolve_inference("tumor"), resolve_inference("tumor", {"step": 0.25})
    check_ensemble({"tumor": a, "tumor_2": b})  # other settings may differ
    c = resolve_inference("tumor", {"tumor_threshold": 0.3})
    with pytest.raises(SettingsError, match="disagree on tumor_threshold.*tumor: 0.5, tumor_2: 0.3"):
        check_ensemble({"tumor": a, "tumor_2": c})


def test_training_and_bench_read_the_same_defaults():
    from c2fseg.bench.plans import STAGE_SETTINGS, THIN_SETTINGS
    from c2fseg.train.plans import resolve_settings

    for stage in STAGES:
        train = resolve_settings(stage)
        bench = STAGE_SETTINGS[stage]
        assert (bench["spacing"], bench["patch"]) == (train["spacing"], train["patch"])
        assert (bench["width"], bench["n_stages"]) == (train["features"], train["n_stages"])
        assert bench["step"] == inference_defaults(stage)["step"]
    assert THIN_SETTINGS == settings.load_defaults()["bench"]["thin"]
