"""Random-weight stage folders for predict_final.py, and the phantom-building step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from c2fseg.bench import cases, make_phantoms
from c2fseg.bench.weights_folder import write_random_weights
from c2fseg.infer.batch import load_models, predict_folder
from c2fseg.io import make_geometry, read_labels, write_volume
from c2fseg.weights import load_manifest


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    return write_random_weights(tmp_path_factory.mktemp("w") / "weights", "thin", width=2,
                                patch=(16, 32, 32))


def test_random_weights_load_like_trained_ones(tiny_weights):
    models = load_models(tiny_weights, "cpu")
    assert [m.stage for m in (models.coarse, models.organ, *models.tumors)] == ["coarse", "organ", "tumor"]
    assert models.coarse.step == 1.0 and models.organ.step == 0.5
    assert models.organ.network.encoder.stages[0][0].convs[0].conv.out_channels == 2
    manifest = load_manifest(tiny_weights / "coarse")  # hashes verified
    assert manifest["extra"]["random_weights"] and manifest["extra"]["whole_volume_roi"]


def test_whole_volume_roi_coarse_labels_every_voxel_liver(tiny_weights):
    coarse = load_models(tiny_weights, "cpu").coarse
    ct = torch.from_numpy(np.random.default_rng(0).normal(0, 300, (24, 48, 48)).astype(np.float32))
    labels = coarse.predict(ct, (4.6, 2.52, 2.52)).labels
    assert torch.unique(labels).tolist() == [1]


def test_predict_with_random_weights_runs_fine_stages_on_whole_volume(tiny_weights, tmp_path):
    ct = np.full((20, 48, 48), -1000, dtype=np.int16)
    ct[3:17, 8:40, 8:40] = 50
    inp = tmp_path / "in"
    write_volume(ct, make_geometry(ct.shape, (5.0, 3.0, 3.0)), inp / "a_0000.nii.gz")
    report = predict_folder(inp, tmp_path / "out", weights_dir=tiny_weights, device="cpu",
                            progress=False)
    assert [c.status for c in report.cases] == ["ok"]
    assert read_labels(tmp_path / "out" / "a.nii.gz").array.shape == ct.shape
    saved = json.loads((tmp_path / "out" / "c2fseg_report.json").read_text(encoding="utf-8"))
    roi = saved["cases"][0]["roi"]
    assert roi["shape_zyx"] == list(ct.shape)  # the upper bound: fine stages saw everything


def test_phantom_indices_are_closest_to_target_and_start_with_the_bench_phantom():
    picked = cases.phantom_indices(count=3)
    assert len(set(picked)) == 3 and picked[0] == cases.phantom_index()


def test_build_phantoms_step_links_only_images(tmp_path, capsys):
    assert make_phantoms.main(["--cache", str(tmp_path / "cache"), "--count", "2", "--size", "tiny",
                       "--predict-dir", str(tmp_path / "in")]) == 0
    out = capsys.readouterr().out
    info = json.loads(out[out.index("{\n"):])
    assert info["bench_case"].endswith("phantom_tiny_s0_i0_0000.nii.gz")
    assert info["cases"] == ["phantom_tiny_s0_i0", "phantom_tiny_s0_i1"]
    images = sorted(p.name for p in (tmp_path / "in").iterdir())
    assert images == ["phantom_tiny_s0_i0_0000.nii.gz", "phantom_tiny_s0_i1_0000.nii.gz"]
    assert (tmp_path / "cache" / "phantom_tiny_s0_i0_labels.nii.gz").is_file()
    again = cases.build_phantoms(tmp_path / "cache", 2, "tiny")  # cached: not regenerated
    assert [c.name for c in again] == ["phantom_tiny_s0_i0", "phantom_tiny_s0_i1"]


def test_tiny_phantom_has_the_dry_run_shape_and_spacing(tmp_path):
    from c2fseg.io import read_image, read_labels

    case = cases.phantom_case(tmp_path, 0, 0, "tiny")
    image = read_image(case.image)
    assert image.shape == cases.TINY_SHAPE
    assert tuple(round(s, 3) for s in image.spacing) == cases.TINY_SPACING
    assert read_labels(case.labels).array.any()  # the crop keeps some organs: a label box ROI
    with pytest.raises(ValueError, match="unknown phantom size"):
        cases.phantom_arrays(0, 0, "huge")
