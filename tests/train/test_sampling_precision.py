"""The trainer's patch sampler weights and its CPU precision policy (no training)."""

from __future__ import annotations

import numpy as np
import pytest
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

from c2fseg.train import trainers
from c2fseg.train.plans import resolve_settings


def _locations():
    """Class locations as nnU-Net stores them: (channel, z, y, x) rows per label."""
    liver = np.array([[0, 5, 5, 5]] * 50)
    kidney = np.array([[0, 5, 30, 5]] * 50)
    tumor = np.array([[0, 30, 30, 30]] * 3)
    return {1: liver, 2: kidney, 14: tumor, 3: np.zeros((0, 4), int), (-1, 1, 2, 14): liver}


def test_centre_class_follows_the_weights():
    rng = np.random.default_rng(0)
    draws = [trainers.choose_centre_class(_locations(), {14: 6.0}, rng) for _ in range(4000)]
    share = {k: draws.count(k) / len(draws) for k in (1, 2, 14)}
    assert share[14] == pytest.approx(6 / 8, abs=0.03)
    assert share[1] == pytest.approx(1 / 8, abs=0.03)
    assert 3 not in draws and (-1, 1, 2, 14) not in draws  # empty class, region key
    plain = [trainers.choose_centre_class(_locations(), {}, rng) for _ in range(3000)]
    assert plain.count(14) / len(plain) == pytest.approx(1 / 3, abs=0.04)
    assert trainers.choose_centre_class({1: np.zeros((0, 4), int)}, {14: 2.0}) is None


def _bare_loader() -> nnUNetDataLoader:
    """An nnU-Net loader with just what get_bbox reads (no dataset on disk)."""
    loader = object.__new__(nnUNetDataLoader)
    loader.patch_size = (8, 8, 8)
    loader.need_to_pad = np.zeros(3, dtype=int)
    loader.has_ignore = False
    loader.annotated_classes_key = (-1, 1, 2, 14)
    return loader


def test_weighted_loader_centres_patches_on_the_heavy_class():
    loader = _bare_loader()
    aug = SingleThreadedAugmenter(loader, None)
    trainers.use_class_weights(aug, {14: 1e9})
    assert isinstance(loader, trainers.ClassWeightedLoader)
    np.random.seed(0)
    starts = {tuple(loader.get_bbox((40, 40, 40), True, _locations())[0]) for _ in range(50)}
    assert starts == {(26, 26, 26)}  # always around the tumor voxel (30, 30, 30)
    plain = _bare_loader()
    np.random.seed(0)
    starts = {tuple(plain.get_bbox((40, 40, 40), True, _locations())[0]) for _ in range(50)}
    assert len(starts) > 1  # nnU-Net's own choice also picks the organs


def test_class_sampling_setting_is_checked():
    assert trainers.class_weights({"14": 4}) == {14: 4.0}
    assert trainers.class_weights(None) == {}
    for bad in ({"0": 2}, {"14": 0}):
        with pytest.raises(ValueError, match="class_sampling"):
            trainers.class_weights(bad)
    with pytest.raises(TypeError, match="data loader"):
        trainers.use_class_weights(object(), {14: 2.0})


def test_cpu_bf16_auto_follows_native_support(monkeypatch):
    from c2fseg.infer import precision

    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    assert trainers.use_cpu_bf16("auto") is False
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert trainers.use_cpu_bf16("auto") is True
    assert trainers.use_cpu_bf16(False) is False and trainers.use_cpu_bf16(True) is True
    with pytest.raises(ValueError, match="cpu_bf16"):
        trainers.use_cpu_bf16("yes")
    with pytest.raises(ValueError, match="cpu_bf16"):
        resolve_settings("coarse", "tiny", {"cpu_bf16": "yes"})
    assert resolve_settings("coarse", "tiny")["cpu_bf16"] == "auto"


def _unet(classes: int, features=(4, 8, 16)):
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    torch.manual_seed(classes + features[0])
    return PlainConvUNet(1, len(features), features, torch.nn.Conv3d, 3, (1, 2, 2), 2, classes, (2, 2),
                         True, torch.nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, None, None,
                         torch.nn.LeakyReLU, {"inplace": True}, deep_supervision=True)


def test_warm_start_copies_matching_weights_and_keeps_new_heads(tmp_path):
    import torch

    source = _unet(14)
    ckpt = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": source.state_dict()}, ckpt)
    same = _unet(14, (4, 8, 16))
    before = {k: v.clone() for k, v in _unet(15).state_dict().items()}
    tumor = _unet(15)
    info = trainers.init_from_checkpoint(same, ckpt)
    assert not info["fresh"]
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in same.state_dict().items())
    info = trainers.init_from_checkpoint(tumor, ckpt)
    assert not info["fresh"] and info["extended"]
    assert all(".seg_layers." in k for k in info["extended"])
    src = source.state_dict()
    for key, value in tumor.state_dict().items():
        if key in info["extended"]:  # labels 0-13 from the source, the new label 14 fresh
            assert torch.equal(value[:14], src[key]), key
            assert torch.equal(value[14:], before[key][14:]), key
            assert not torch.equal(value[14:], src[key][:1]), key
        else:
            assert torch.equal(value, src[key]), key
    with pytest.raises(ValueError, match="same network"):
        trainers.init_from_checkpoint(_unet(14, (8, 16, 32)), ckpt)


def test_channels_last_and_new_settings_reach_the_trainer_configuration():
    from c2fseg.train.plans import stage_configuration

    tumor = resolve_settings("tumor", "tiny")
    assert tumor["init_from"] == "coarse" and tumor["class_sampling"] == {"14": 6}
    assert resolve_settings("coarse", "tiny")["init_from"] is None
    assert resolve_settings("coarse")["channels_last"] is False  # the default config is untouched
    with pytest.raises(ValueError, match="oversample_foreground"):
        resolve_settings("coarse", "tiny", {"oversample_foreground": 1.5})
    plans = {"configurations": {"3d_fullres": {
        "spacing": [5.0, 4.0, 4.0], "median_image_size_in_voxels": [60, 90, 90], "patch_size": [48, 64, 64],
        "architecture": {"network_class_name": "x", "arch_kwargs": {"n_conv_per_stage": [2] * 4}}}}}
    conf = stage_configuration(plans, "tumor", tumor)
    assert conf["c2fseg"]["training"]["channels_last"] is True
    assert conf["c2fseg"]["training"]["class_sampling"] == {"14": 6}
    assert conf["architecture"]["arch_kwargs"]["n_conv_per_stage"] == [2] * 4


def test_cross_entropy_weights_reach_nnunets_loss():
    import torch
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

    def loss():
        return DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False},
                                                     {}, 1, 0), [1.0])

    torch.manual_seed(0)
    logits = torch.randn(1, 3, 4, 4, 4)
    target = torch.zeros(1, 1, 4, 4, 4)
    target[..., :2] = 2  # half the voxels are label 2
    plain, weighted = loss(), loss()
    w = trainers.weight_cross_entropy(weighted, {2: 5.0}, 3, torch.device("cpu"))
    assert w.tolist() == [1.0, 1.0, 5.0]
    # weighted mean CE: (sum_bg ce + 5 sum_2 ce) / (n_bg + 5 n_2), different from the plain mean
    assert not torch.isclose(plain([logits], [target]), weighted([logits], [target]))
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0].long(), weight=w)
    assert torch.isclose(weighted([logits], [target]), ce)
    with pytest.raises(ValueError, match="not one of the 3 labels"):
        trainers.weight_cross_entropy(loss(), {3: 2.0}, 3, torch.device("cpu"))


def test_progress_plot_is_drawn_only_when_asked():
    from types import SimpleNamespace

    drawn = []
    for every, expected in ((0, [9]), (4, [3, 7, 9]), (1, list(range(10)))):
        drawn.clear()
        fake = SimpleNamespace(num_epochs=10, current_epoch=0)
        fake.logger = SimpleNamespace(plot_progress_png=lambda folder, f=fake: drawn.append(f.current_epoch))
        trainers.C2fsegTrainer._throttle_progress_plot(fake, every)
        for epoch in range(10):
            fake.current_epoch = epoch
            fake.logger.plot_progress_png("out")
        assert drawn == expected, every
