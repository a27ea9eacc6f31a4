"""The published-pipeline settings, run by the same StageModel and cascade as c2fseg's own.

Each setting is checked against the step function it must call (tested on its own in
test_{sliding,probabilities,inplane_cap,postprocess,roi,merge}.py) so a wiring mistake (wrong
order, a step skipped, the wrong grid) fails here.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fake_models import tiny_stage_model
from infer_support import FakeStageModel, abdomen_ct, hu, make_models

from c2fseg.infer.cascade import CascadeModels, CascadeOptions, segment_volume
from c2fseg.infer.merge import reconcile_tumor_maps
from c2fseg.infer.postprocess import clean_coarse_labels
from c2fseg.infer.probabilities import floor_probabilities, resized_probability_labels
from c2fseg.infer.resample import resample_image, resize_labels_nearest
from c2fseg.infer.roi import roi_from_foreground
from c2fseg.infer.sliding import sliding_window
from c2fseg.infer.truncated import TruncatedUNet
from c2fseg.io import Volume, make_geometry
from c2fseg.io.geometry import box_to_canonical, from_canonical
from c2fseg.labels import TUMOR
from c2fseg.settings import SettingsError, resolve_inference

SPACING = (2.0, 1.5, 1.5)  # the tiny plans' spacing: no resampling


def noise_ct(shape=(20, 40, 44), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 300, shape).astype(np.float32)


def test_probability_average_and_floor_follow_the_published_order():
    """Tile-averaged softmax, floored on the network grid, then the argmax (model grid)."""
    model = tiny_stage_model("organ", average="probabilities", min_prob=0.3, tile_rule="span")
    ct = noise_ct()
    pred = model.predict(ct, SPACING, grid="model")
    image = model.normalizer(torch.from_numpy(ct))
    probs = sliding_window(model.network, image, model.patch_size, model.num_classes, step=0.5,
                           average="probabilities", tile_rule="span")
    floored = floor_probabilities(probs, 0.3)
    expected = floored.argmax(0).to(torch.uint8)
    assert torch.equal(pred.labels, expected)
    # the floor mattered: some voxels became background although a class had the most mass
    assert int(((probs.argmax(0) != 0) & (expected == 0)).sum()) > 0
    assert pred.info["resample_mode"] == "full"


def test_input_grid_labels_come_from_resized_probabilities():
    model = tiny_stage_model("organ", average="probabilities", min_prob=0.1, align_corners=True)
    ct = noise_ct((16, 30, 34))
    on_model = model.predict(ct, (1.0, 1.0, 1.0), grid="model")
    on_input = model.predict(ct, (1.0, 1.0, 1.0), grid="input")
    assert tuple(on_model.labels.shape) == (8, 20, 23)  # 16x30x34 at 1 mm -> 2 x 1.5 x 1.5 mm
    assert tuple(on_input.labels.shape) == ct.shape
    # the same steps by hand: normalise + resample (align_corners), average softmax, floor on the
    # network grid, resize every class's probability back (align_corners), argmax
    image = resample_image(torch.from_numpy(ct), (8, 20, 23), device=torch.device("cpu"),
                           prep=model.normalizer, align_corners=True)
    probs = sliding_window(model.network, image, model.patch_size, model.num_classes, step=0.5,
                           average="probabilities")
    lut = torch.tensor(model.channel_labels, dtype=torch.uint8)
    expected = resized_probability_labels(floor_probabilities(probs, 0.1), ct.shape, lut,
                                          align_corners=True)
    assert torch.equal(on_input.labels, expected)
    assert torch.equal(on_model.labels, floor_probabilities(probs, 0.1).argmax(0).to(torch.uint8))


def test_inplane_cap_shrinks_the_network_grid_on_all_axes():
    seen = []
    model = tiny_stage_model("organ", max_inplane_voxels=24)
    network = model.network
    model.network = lambda x: seen.append(tuple(x.shape[2:])) or network(x)
    pred = model.predict(noise_ct((20, 40, 44)), SPACING, grid="model")
    # factor 24/44: floor(20*f), floor(40*f), floor(44*f) = 10, 21, 24
    assert tuple(pred.labels.shape) == (10, 21, 24) == tuple(pred.info["model_grid_shape"])
    assert seen and all(shape == tuple(model.patch_size) for shape in seen)  # padded to whole tiles
    assert pred.grid_spacing == pytest.approx((20 * 2.0 / 10, 40 * 1.5 / 21, 44 * 1.5 / 24))


def test_decoder_stages_runs_a_truncated_network():
    full = tiny_stage_model("coarse")
    cut = tiny_stage_model("coarse", decoder_stages=1, align_corners=True)  # same seed: same weights
    assert isinstance(cut.network, TruncatedUNet) and cut.network.decoder_stage == 0
    x = torch.randn(1, 1, *cut.patch_size)
    expected = TruncatedUNet(full.network, 0, align_corners=True)(x)  # 1/2 resolution, x2
    assert torch.allclose(cut.network(x), expected)
    assert not torch.allclose(full.network(x), expected, atol=1e-3)
    assert cut.predict(noise_ct(), SPACING, grid="model").labels.shape == (20, 40, 44)


# --------------------------------------------------------------------------- cascade rules


def published_models(n_tumor=2, **kw) -> CascadeModels:
    models = make_models(n_tumor=n_tumor, **kw)
    models.coarse.inference = resolve_inference("coarse", {
        "roi_rule": "published", "roi_margin_mm": 4.0, "max_centroid_distance_voxels": 170 / 3,
        "keep_largest": [1, 2, 3, 4, 5, 6, 9, 10, 11, 13], "delete_labels": [7, 8, 12]})
    for tumor in models.tumors:
        tumor.inference = resolve_inference("tumor", {"tumor_combination": "published_reconcile"})
    return models


class GridCoarse(FakeStageModel):
    """A coarse fake that returns its labels on a 2x coarser 'model grid' (legacy nearest)."""

    def predict(self, ct, spacing_zyx, *, prob_label=None, chunk_z=None, grid="input"):
        out = super().predict(ct, spacing_zyx, prob_label=prob_label, grid=grid)
        small = out.labels[::2, ::2, ::2].contiguous()
        return SimpleNamespace(labels=small, prob=None, grid="model", info={},
                               grid_spacing=tuple(2 * s for s in spacing_zyx))


def test_published_roi_rule_cleans_resizes_and_pads():
    ct, _ = abdomen_ct((24, 28, 32))
    ct[2:4, 2:4, 28:30] = hu(3)  # a far second spleen: not its largest component
    ct[20:22, 20:22, 2:4] = hu(12)  # duodenum: deleted before the box
    models = published_models()
    models.coarse = GridCoarse("coarse", spacing=(2.0, 2.0, 2.0))
    models.coarse.inference = published_models().coarse.inference
    spacing = (2.0, 1.5, 1.0)
    result = segment_volume(Volume(ct, make_geometry(ct.shape, spacing)), models, CascadeOptions())
    coarse = torch.from_numpy(ct)[::2, ::2, ::2]
    grid = np.asarray(models.coarse.label_fn(coarse))
    cleaned = clean_coarse_labels(grid, max_distance=170 / 3)
    expected = roi_from_foreground(resize_labels_nearest(cleaned, ct.shape), spacing, 4.0)
    assert (result.roi.start, result.roi.stop) == (expected.start, expected.stop)
    # the duodenum corner and the far spleen are outside the box (they would widen it)
    assert expected.stop[0] < 20 and expected.start[0] > 3


def test_published_tumor_reconciliation_of_two_models():
    ct, labels = abdomen_ct()
    second_tumor = np.zeros_like(labels, dtype=bool)
    second_tumor[11:12, 11:13, 8:10] = True

    def second_fn(c):
        lab = (torch.div(c, 100, rounding_mode="floor")).clamp(0, 14).to(torch.uint8)
        lab = torch.where((c >= 100) & (c < 1500), lab, torch.zeros_like(lab))
        lab = torch.where(lab == TUMOR, torch.ones_like(lab), lab)  # sees the tumor as liver...
        assert tuple(c.shape) == second_tumor.shape  # the ROI is the whole volume here
        return torch.where(torch.from_numpy(second_tumor), torch.full_like(lab, TUMOR), lab)

    models = published_models()
    options = CascadeOptions(margin_mm=100.0)  # ROI = the whole volume, so crops equal the CT
    models.coarse.inference = resolve_inference("coarse", {"roi_margin_mm": 100.0})
    models.tumors[1].label_fn = second_fn
    result = segment_volume(Volume(ct, make_geometry(ct.shape, SPACING)), models, options)
    first = labels.copy()
    second = np.where(labels == TUMOR, 1, labels).astype(np.uint8)
    second[second_tumor] = TUMOR
    expected_tumor = reconcile_tumor_maps(first, second) == TUMOR
    assert np.array_equal(result.labels == TUMOR, expected_tumor)
    # order-dependent: not the plain union, which keeps all of the first model's tumor
    assert expected_tumor.sum() < ((labels == TUMOR) | second_tumor).sum()


def test_as_stored_stages_see_the_stored_array_and_results_come_back_canonical():
    ct, expected = abdomen_ct()
    geom = make_geometry(ct.shape, (2.0, 1.5, 1.0), (0.0, 0.0, 0.0), (2, 0, 1), (True, False, True))
    models = make_models()
    for model in [models.coarse, models.organ, *models.tumors]:
        model.spec = SimpleNamespace(input_orientation="as-stored")
    result = segment_volume(Volume(ct, geom), models, CascadeOptions(margin_mm=3.0))
    stored = from_canonical(ct, geom)
    assert models.coarse.calls[0][0] == stored.shape != ct.shape
    assert models.coarse.calls[0][1] == tuple(reversed(geom.spacing))
    assert np.array_equal(result.labels, expected)  # fake models are orientation-free
    box = result.roi
    assert all(b <= n for b, n in zip(box.stop, ct.shape, strict=True))
    # the box covers every organ voxel in canonical indices
    zz, yy, xx = np.nonzero(expected)
    assert box.start <= (zz.min(), yy.min(), xx.min())
    assert tuple(b - 1 for b in box.stop) >= (zz.max(), yy.max(), xx.max())


def test_box_to_canonical_maps_the_same_voxels():
    shape = (6, 7, 8)
    geom = make_geometry(shape, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 2, 0), (False, True, True))
    canonical = np.zeros(shape, dtype=np.uint8)
    canonical[1:3, 2:6, 0:5] = 1
    stored = from_canonical(canonical, geom)
    nz = np.nonzero(stored)
    start, stop = box_to_canonical([a.min() for a in nz], [a.max() + 1 for a in nz], geom)
    assert (start, stop) == ((1, 2, 0), (3, 6, 5))


def test_stages_expecting_different_voxel_orders_are_refused():
    models = make_models()
    models.organ.spec = SimpleNamespace(input_orientation="as-stored")
    ct, _ = abdomen_ct()
    with pytest.raises(SettingsError, match="different voxel orders"):
        segment_volume(Volume(ct, make_geometry(ct.shape, SPACING)), models, CascadeOptions())
