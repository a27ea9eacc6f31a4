"""``c2fseg import nnunet``: nnU-Net v2 results folders and v1 model folders as stage folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from importers_support import snapshot

from c2fseg.cli import main
from c2fseg.convert import ConversionError
from c2fseg.convert.architecture import UNetArchitecture
from c2fseg.convert.v1_keys import V1Network, v1_layout
from c2fseg.importers import import_nnunet
from c2fseg.infer.stage_model import StageModel
from c2fseg.weights import load_manifest
from convert.convert_support import v1_plans_info, v2_dataset_json, v2_plans, write_pickle
from nnunet_folders import nnunet_results_folder

SPACING = (2.0, 1.5, 1.5)  # v2_plans' spacing: the volume is at the model spacing
SHAPE = (28, 56, 52)


@pytest.fixture(scope="module")
def v2_folder(tmp_path_factory):
    return nnunet_results_folder(tmp_path_factory.mktemp("nnunet"), v2_plans(), v2_dataset_json())


@pytest.fixture(scope="module")
def four_class_folder(tmp_path_factory):
    labels = {"background": 0, "vessel": 1, "bone": 2, "kidney": 3}
    return nnunet_results_folder(tmp_path_factory.mktemp("nnunet4"), v2_plans(),
                                 v2_dataset_json(labels=labels), seed=7)


def body_ct(shape=SHAPE, seed: int = 0) -> np.ndarray:
    """An elliptic body with round soft-tissue blobs and noise; no voxel is exactly 0 HU."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    ct = np.full(shape, -1000.0, np.float32)
    body = (y / 0.8) ** 2 + (x / 0.9) ** 2 < 1
    ct[body] = -80.0
    for (cz, cy, cx), r, hu in [((0.1, -0.1, -0.3), 0.35, 60.0), ((0.0, 0.0, 0.45), 0.2, 45.0),
                                ((-0.3, 0.3, 0.0), 0.15, 180.0)]:
        ct[body & ((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 < r**2)] = hu
    ct += rng.normal(0.0, 20.0, shape).astype(np.float32)
    ct[ct == 0] = 1.0  # nnU-Net crops to the non-zero box: keep every voxel in it
    return ct


def nnunet_labels(folder, ct: np.ndarray, gaussian: bool) -> np.ndarray:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=gaussian, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,))
    return np.asarray(predictor.predict_single_npy_array(ct[None], {"spacing": list(SPACING)}))


def test_v2_import_matches_nnunet_predictor(v2_folder, tmp_path):
    before = snapshot(v2_folder)
    out = import_nnunet(v2_folder, "organ", tmp_path / "w" / "organ")
    assert snapshot(v2_folder) == before
    ct = body_ct()
    lut = np.array([0, 1, 3], np.uint8)  # the model's liver, spleen -> FLARE 1, 3
    agreement = {}
    for weighting, gaussian in (("gaussian", True), ("uniform", False)):
        model = StageModel.load(out, "cpu", weighting=weighting)
        ours = model.predict(ct, SPACING).labels.numpy()
        theirs = lut[nnunet_labels(v2_folder, ct, gaussian)]
        assert ours.shape == theirs.shape == SHAPE
        agreement[weighting] = float((ours == theirs).mean())
    print(f"voxels agreeing with nnUNetPredictor: {agreement}")
    # c2fseg's gaussian map (floored at 0.05, centred at (p-1)/2) is not nnU-Net's; with the
    # same (uniform) tile weights the labels are nnU-Net's up to float16 accumulation ties.
    assert agreement["uniform"] >= 0.999
    assert agreement["gaussian"] >= 0.85


def test_manifest_settings_and_voxel_order(v2_folder, tmp_path):
    out = import_nnunet(v2_folder, "organ", tmp_path / "organ")
    manifest = load_manifest(out)
    assert manifest["input_orientation"] == "as-stored"
    assert manifest["channel_labels"] == [0, 1, 3]
    inference = manifest["inference"]
    assert (inference["weighting"], inference["step"], inference["average"], inference["mirror"],
            inference["tile_rule"]) == ("gaussian", 0.5, "logits", False, "stride")
    extra = manifest["extra"]
    assert extra["pipeline"] == "c2fseg" and extra["source_format"] == "nnU-Net v2"
    assert extra["voxel_order"] == "as-stored" and any("mirror" in n for n in extra["notes"])
    assert [s["path"].rsplit("/", 1)[1] for s in extra["sources"]] == [
        "plans.json", "dataset.json", "checkpoint_final.pth"]


def test_labels_map_drops_and_renumbers_channels(four_class_folder, tmp_path):
    ct = body_ct(seed=1)
    identity = import_nnunet(four_class_folder, "organ", tmp_path / "id",
                             labels_map={"1": 1, "2": 2, "3": 3})
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"3": 13, "vessel": "aorta"}))  # ids or names; bone dropped
    mapped = import_nnunet(four_class_folder, "organ", tmp_path / "mapped", labels_map=mapping)
    base = StageModel.load(identity, "cpu").predict(ct, SPACING).labels.numpy()
    model = StageModel.load(mapped, "cpu")
    assert model.channel_labels == (0, 5, 0, 13)
    got = model.predict(ct, SPACING).labels.numpy()
    assert set(np.unique(base)) >= {1, 2, 3}  # every channel wins somewhere
    np.testing.assert_array_equal(got, np.array([0, 5, 0, 13], np.uint8)[base])
    sources = load_manifest(mapped)["extra"]["sources"]
    assert sources[-1]["path"] == str(mapping.resolve())


def test_label_errors(v2_folder, four_class_folder, tmp_path):
    with pytest.raises(ConversionError, match="--labels"):
        import_nnunet(four_class_folder, "organ", tmp_path / "a")
    with pytest.raises(ConversionError, match="no label 9"):
        import_nnunet(four_class_folder, "organ", tmp_path / "a", labels_map={"9": 1})
    with pytest.raises(ConversionError, match="several model labels"):
        import_nnunet(four_class_folder, "organ", tmp_path / "a", labels_map={"1": 1, "2": 1})
    with pytest.raises(ConversionError, match="organ stage predicts"):
        import_nnunet(four_class_folder, "organ", tmp_path / "a", labels_map={"1": 14})
    with pytest.raises(ConversionError, match="not a FLARE23 label"):
        import_nnunet(four_class_folder, "tumor", tmp_path / "a", labels_map={"1": 15})
    assert not (tmp_path / "a").exists()


def test_v1_model_folder_with_a_label_map(tmp_path):
    arch = UNetArchitecture.uniform((2, 4, 8, 16, 32, 64), [[1, 1, 1], *[[2, 2, 2]] * 4, [1, 2, 2]], 4)
    layout = v1_layout(V1Network(arch))
    gen = torch.Generator().manual_seed(0)
    fold = tmp_path / "v1" / "nnUNetTrainerV2__nnUNetPlansv2.1" / "fold_0"
    fold.mkdir(parents=True)
    torch.save({"epoch": 3, "state_dict": {k: torch.randn(s, generator=gen) for k, s in layout.items()}},
               fold / "model_final_checkpoint.model")
    write_pickle(v1_plans_info(base=2, num_classes=4), fold / "model_final_checkpoint.model.pkl")
    with pytest.raises(ConversionError, match="--labels"):  # v1 folders carry no label names
        import_nnunet(fold.parent, "tumor", tmp_path / "tumor")
    out = import_nnunet(fold.parent, "tumor", tmp_path / "tumor", labels_map={"1": 1, "2": 14})
    model = StageModel.load(out, "cpu")
    assert model.channel_labels == (0, 1, 14, 0) and model.spec.input_orientation == "as-stored"
    assert load_manifest(out)["extra"]["source_format"] == "nnU-Net v1"


def test_cli(v2_folder, tmp_path, capsys):
    out = tmp_path / "weights" / "organ"
    assert main(["import", "nnunet", str(v2_folder), "--stage", "organ", "-o", str(out)]) == 0
    assert (out / "manifest.json").is_file()
    assert main(["import", "nnunet", str(v2_folder), "--stage", "organ", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--overwrite" in err
    assert main(["import", "nnunet", str(v2_folder), "--stage", "organ", "--fold", "3",
                 "-o", str(tmp_path / "x")]) == 2
    assert "fold_3" in capsys.readouterr().err
    assert main(["import", "nnunet", str(v2_folder), "--stage", "organ", "--overwrite",
                 "-o", str(out)]) == 0
    assert (out.parent / "organ.previous" / "manifest.json").is_file()
