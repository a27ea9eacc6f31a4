"""The cascade on one in-memory case, with fake stage models that read labels from CT values."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
from infer_support import AIR, FakeStageModel, abdomen_ct, hu, make_models, value_labels

from c2fseg.infer.cascade import CascadeOptions, segment_volume, settings_used
from c2fseg.io import Volume, make_geometry, read_image, write_labels
from c2fseg.io.image import from_canonical
from c2fseg.labels import TUMOR

SPACING = (2.0, 1.5, 1.0)


def volume_of(ct: np.ndarray, spacing=SPACING) -> Volume:
    return Volume(ct, make_geometry(ct.shape, spacing))


def test_cascade_reproduces_known_labels_and_crops_to_roi():
    ct, expected = abdomen_ct()
    ct[0, 0, 0] = hu(12)  # a duodenum-valued voxel far outside the organs: not an ROI organ
    models = make_models()
    options = CascadeOptions(margin_mm=(2.0, 3.0, 2.0), roi_at_coarse_spacing=False)
    result = segment_volume(volume_of(ct), models, options)
    assert result.status == "ok"
    # organs span z 6-16, y 8-20, x 6-25; margin 1 voxel in z, 2 in y, 2 in x
    assert result.roi.start == (5, 6, 4) and result.roi.stop == (17, 22, 27)
    assert models.organ.calls[0][0] == result.roi.shape
    assert models.tumors[0].calls[0][0] == result.roi.shape
    assert result.labels.dtype == np.uint8 and result.labels.shape == ct.shape
    assert np.array_equal(result.labels, expected)  # the stray voxel outside the ROI is gone
    assert result.label_counts()["tumor"] == (expected == TUMOR).sum()
    assert {"coarse", "roi", "organ", "tumor", "merge", "postprocess"} <= set(result.timings)


def test_stray_organ_fragment_inside_roi_is_removed():
    ct, expected = abdomen_ct()
    ct[14, 19, 20] = hu(1)  # a one-voxel "liver" next to the spleen, inside the ROI
    result = segment_volume(volume_of(ct), make_models(), CascadeOptions())
    assert np.array_equal(result.labels, expected)


def test_permuted_flipped_file_gets_exact_geometry_and_same_world_result(write_ct, tmp_path):
    ct, expected = abdomen_ct()
    plain, _ = write_ct("plain_0000.nii.gz", ct)
    odd, geom = write_ct("odd_0000.nii.gz", ct, transpose=(2, 0, 1), flip=(True, False, True))
    results = {}
    for path in (plain, odd):
        volume = read_image(path)
        result = segment_volume(volume, make_models(), CascadeOptions(margin_mm=5.0))
        out = write_labels(result.labels, volume.geometry, tmp_path / "out" / path.name)
        results[path.name] = result.labels
        written, source = sitk.ReadImage(str(out)), sitk.ReadImage(str(path))
        assert written.GetSize() == source.GetSize()
        assert np.allclose(written.GetSpacing(), source.GetSpacing())
        assert np.allclose(written.GetOrigin(), source.GetOrigin())
        assert np.allclose(written.GetDirection(), source.GetDirection())
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / odd.name)))
    assert np.array_equal(stored, from_canonical(expected, geom))
    assert np.array_equal(results[plain.name], results[odd.name])


def test_no_organ_gives_empty_background_result():
    ct = np.full((10, 12, 14), AIR, dtype=np.float32)
    models = make_models()
    result = segment_volume(volume_of(ct), models)
    assert result.status == "empty" and result.roi is None
    assert result.labels.shape == ct.shape and not result.labels.any()
    assert "no abdominal organ" in result.reason
    assert models.organ.calls == []


def test_two_tumor_models_are_averaged_in_the_cascade():
    ct, expected = abdomen_ct()
    half = (expected == TUMOR) & (np.arange(ct.shape[2]) >= 9)  # part of the tumor at x >= 9
    ct[half] = hu(TUMOR) + 40  # still read as tumor by the label function

    def prob_a(c):  # 0.8 on the whole tumor
        return torch.where(value_labels(c) == TUMOR, 0.8, 0.0)

    def prob_b(c):  # 0.4 on x < 9, 0.1 on x >= 9 -> means 0.6 and 0.45
        return torch.where(value_labels(c) == TUMOR, torch.where(c > hu(TUMOR) + 20, 0.1, 0.4), 0.0)

    models = make_models(n_tumor=0)
    models.tumors = [FakeStageModel("tumor", prob_fn=f) for f in (prob_a, prob_b)]
    result = segment_volume(volume_of(ct), models, CascadeOptions())
    assert all(call[2] == TUMOR for m in models.tumors for call in m.calls)
    assert np.array_equal(result.labels == TUMOR, (expected == TUMOR) & ~half)
    assert (result.labels[half] == 1).all()  # rejected tumor voxels keep the organ label


def test_roi_margin_comes_from_the_coarse_stage_unless_overridden():
    from c2fseg.settings import resolve_inference

    ct, _ = abdomen_ct()
    models = make_models()
    models.coarse.inference = resolve_inference("coarse", {"roi_margin_mm": [2.0, 3.0, 2.0]})
    options = CascadeOptions(roi_at_coarse_spacing=False)
    result = segment_volume(volume_of(ct), models, options)
    assert result.roi.start == (5, 6, 4) and result.roi.stop == (17, 22, 27)  # 1, 2, 2 voxels
    wider = segment_volume(volume_of(ct), models, CascadeOptions(margin_mm=4.0, roi_at_coarse_spacing=False))
    assert wider.roi.start == (4, 5, 2) and wider.roi.stop == (18, 23, 29)  # 2, 3, 4 voxels
    models.coarse.inference = resolve_inference("coarse", {"roi_margin_mm": [2.0, 3.0, 2.0],
                                                           "max_liver_gap_mm": 0.0})
    near_liver = segment_volume(volume_of(ct), models, options)  # the spleen is 6 mm from the liver
    assert near_liver.roi.stop[2] == 14 + 2  # liver and touching kidney end at x 14; spleen dropped


def test_largest_component_labels_come_from_the_organ_stage():
    from c2fseg.settings import resolve_inference

    ct, expected = abdomen_ct()
    ct[14, 19, 20] = hu(1)  # a one-voxel "liver" next to the spleen
    models = make_models()
    models.organ.inference = resolve_inference("organ", {"keep_largest": [3]})  # spleen only
    kept = segment_volume(volume_of(ct), models, CascadeOptions())
    assert kept.labels[14, 19, 20] == 1 and (kept.labels != expected).sum() == 1
    models.organ.inference = resolve_inference("organ")
    assert segment_volume(volume_of(ct), models, CascadeOptions(keep_largest=False)).labels[14, 19, 20] == 1


def test_tumor_threshold_comes_from_the_tumor_stage():
    from c2fseg.settings import resolve_inference

    ct, expected = abdomen_ct()

    def prob(c):
        return torch.where(value_labels(c) == TUMOR, 0.45, 0.0)

    models = make_models(n_tumor=0)
    models.tumors = [FakeStageModel("tumor", prob_fn=prob) for _ in range(2)]
    assert not (segment_volume(volume_of(ct), models).labels == TUMOR).any()  # 0.45 < 0.5
    for model in models.tumors:
        model.inference = resolve_inference("tumor", {"tumor_threshold": 0.4})
    assert np.array_equal(segment_volume(volume_of(ct), models).labels == TUMOR, expected == TUMOR)
    assert not (segment_volume(volume_of(ct), models, CascadeOptions(tumor_threshold=0.6)).labels == TUMOR).any()


def test_settings_used_reports_each_stage_with_the_overrides():
    from fake_models import band_stage_model

    from c2fseg.settings import inference_defaults

    models = make_models()
    models.coarse = band_stage_model("coarse", step=1.0, min_prob=0.1)
    used = settings_used(models, CascadeOptions(margin_mm=(5.0, 6.0, 7.0)))
    assert set(used) == {"coarse", "organ", "tumor"}
    coarse = used["coarse"]
    assert coarse["inference"]["min_prob"] == 0.1 and coarse["inference"]["step"] == 1.0
    assert coarse["spacing"] == [2.0, 1.5, 1.5] and coarse["precision"] == "fp32"
    assert coarse["cascade"] == {"roi_rule": "c2fseg", "roi_margin_mm": [5.0, 6.0, 7.0],
                                 "max_liver_gap_mm": 100.0}
    assert used["organ"]["inference"] == inference_defaults("organ")  # a model without settings
    assert used["organ"]["cascade"]["keep_largest"] == list(range(1, 14))
    assert used["tumor"]["cascade"] == {"tumor_combination": "mean_probability", "tumor_threshold": 0.5}
