"""The `hiasbuaa` training configuration: the published FLARE23 recipe, checked in the plans."""

from __future__ import annotations

import copy

import pytest
from test_plans import _plans

from c2fseg.settings import load_defaults
from c2fseg.train.plans import (
    add_stage_configuration,
    config_inference,
    configuration_name,
    export_name,
    resolve_settings,
)

# published per-stage spacing (z, y, x mm) and patch, from the team's nnU-Net v1 plans
PUBLISHED = {
    ("coarse", None): ([2.3009669, 1.26433326, 1.26433326], [64, 160, 224]),
    ("tumor", None): ([1.7632679173989854, 1.4395425277931828, 1.4395425277931828], [96, 160, 192]),
    ("tumor", 2): ([1.7632679173989854, 1.4395425277931828, 1.4395425277931828], [96, 128, 192]),
    ("organ", None): ([2.5, 1.25834116, 1.25834116], [64, 160, 224]),
}


def _big_plans() -> dict:
    """Planner output for images large enough that no published patch is clipped."""
    plans = copy.deepcopy(_plans())
    plans["configurations"]["3d_fullres"]["median_image_size_in_voxels"] = [300, 512, 512]
    return plans


@pytest.mark.parametrize("stage, variant", list(PUBLISHED))
def test_hiasbuaa_plans_match_the_published_recipe(stage, variant):
    spacing, patch = PUBLISHED[(stage, variant)]
    settings = resolve_settings(stage, "hiasbuaa", variant=variant)
    plans = add_stage_configuration(_big_plans(), stage, settings, variant)
    conf = plans["configurations"][configuration_name(stage, variant)]
    assert conf["spacing"] == pytest.approx(spacing, abs=1e-6)
    assert conf["patch_size"] == patch
    assert conf["batch_size"] == 2
    kw = conf["architecture"]["arch_kwargs"]
    assert kw["n_stages"] == 6 and kw["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    assert kw["strides"] == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
    training = conf["c2fseg"]["training"]
    assert training["epochs"] == 1000 and training["iters_per_epoch"] == 250
    assert training["optimizer"] == "sgd" and training["lr"] == 0.01
    assert training["weight_decay"] == 3e-05
    assert training["mirror_axes"] is None  # nnU-Net's default: mirror on all axes
    assert training["augmentation"] == "default"
    assert training["ct_clip"] == [-325.0, 325.0]


def test_other_configs_do_not_clip_or_mirror():
    for config in ("default", "tiny"):
        s = resolve_settings("coarse", config)
        assert s["ct_clip"] is None and s["mirror_axes"] == []


def test_variant_names_and_settings():
    assert export_name("tumor", 2) == "tumor_2" and export_name("tumor") == "tumor"
    assert configuration_name("tumor", 2) == "c2fseg_tumor_2"
    assert resolve_settings("tumor", "default", variant=2) == resolve_settings("tumor", "default")
    with pytest.raises(ValueError, match="only the tumor stage"):
        export_name("coarse", 2)
    with pytest.raises(ValueError, match="ct_clip"):
        resolve_settings("coarse", "hiasbuaa", {"ct_clip": [325, -325]})


def test_hiasbuaa_exports_the_published_pipeline_settings():
    common = {"weighting": "uniform", "mirror": False, "min_prob": 0.1, "average": "probabilities",
              "tile_rule": "span", "align_corners": True, "max_inplane_voxels": 360}
    keep = [1, 2, 3, 4, 5, 6, 9, 10, 11, 13]
    assert config_inference("coarse", "hiasbuaa") == common | {
        "step": 1.0, "decoder_stages": 3, "max_centroid_distance_voxels": 170 / 3,
        "keep_largest": keep, "delete_labels": [7, 8, 12], "roi_rule": "published",
        "roi_margin_mm": [20, 20, 20]}
    assert config_inference("tumor", "hiasbuaa") == common | {
        "step": 0.5, "tumor_combination": "published_reconcile"}
    assert config_inference("organ", "hiasbuaa") == common | {"step": 0.5, "keep_largest": keep}
    assert config_inference("organ", "default") == {}


def test_hiasbuaa_inference_settings_are_valid_stage_settings():
    from c2fseg.settings import resolve_inference

    for stage in ("coarse", "tumor", "organ"):
        resolved = resolve_inference(stage, load_defaults()["inference"][stage],
                                     config_inference(stage, "hiasbuaa"))
        for key, value in config_inference(stage, "hiasbuaa").items():
            assert resolved[key] == pytest.approx(value), key


def test_tumor_2_export_carries_its_folder_stage_and_published_inference(tmp_path):
    import json

    import torch

    from c2fseg.data.stage_dataset import stage_dataset_json
    from c2fseg.train.run import export_stage
    from c2fseg.weights import load_manifest

    settings = resolve_settings("tumor", "tiny", variant=2)
    plans = add_stage_configuration(_plans(), "tumor", settings, 2)
    plans["foreground_intensity_properties_per_channel"]["0"].update(
        {"percentile_00_5": -325.0, "percentile_99_5": 273.0})
    run_dir = tmp_path / "run" / "fold_all"
    run_dir.mkdir(parents=True)
    (run_dir.parent / "plans.json").write_text(json.dumps(plans))
    (run_dir.parent / "dataset.json").write_text(json.dumps(stage_dataset_json("tumor", 2)))
    torch.save({"network_weights": {"w": torch.zeros(3)}, "current_epoch": 1,
                "trainer_name": "C2fsegTrainer"}, run_dir / "checkpoint_final.pth")
    out = export_stage({"output_folder": str(run_dir)}, tmp_path / "weights", "tumor", "all",
                       ["a", "b"], "rawhash", variant=2,
                       inference=config_inference("tumor", "hiasbuaa"))
    assert out == tmp_path / "weights" / "tumor_2"
    manifest = load_manifest(out, verify=True)
    assert manifest["stage"] == "tumor" and manifest["configuration"] == "c2fseg_tumor_2"
    assert manifest["inference"]["tumor_combination"] == "published_reconcile"
    assert manifest["inference"]["min_prob"] == 0.1 and manifest["inference"]["tile_rule"] == "span"
