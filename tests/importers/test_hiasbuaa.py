"""``c2fseg import hiasbuaa``: the released checkpoints as stage folders with the published settings."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from importers_support import CLASSES, FILES, FOLDERS, THIN, snapshot, v1_state, write_release

from c2fseg.cli import main
from c2fseg.convert import ConversionError
from c2fseg.fileutil import sha256_file
from c2fseg.importers import ImportTargetError, import_hiasbuaa
from c2fseg.importers import stage_folders as stage_folders_module
from c2fseg.infer.stage_model import StageModel
from c2fseg.infer.truncated import TruncatedUNet
from c2fseg.weights import load_manifest

SHARED = {"weighting": "uniform", "mirror": False, "min_prob": 0.1, "average": "probabilities",
          "tile_rule": "span", "align_corners": True, "max_inplane_voxels": 360}
KEEP = [1, 2, 3, 4, 5, 6, 9, 10, 11, 13]
#: The published constants (hiasbuaa-inference.md), written out here independently of hiasbuaa.json.
EXPECTED = {
    "coarse": ("coarse", [2.3009669, 1.26433326, 1.26433326], [64, 160, 224], 266.0, 59.284187,
               83.43879, {"step": 1.0, "decoder_stages": 3,
                          "max_centroid_distance_voxels": 170 / 3, "keep_largest": KEEP,
                          "delete_labels": [7, 8, 12], "roi_rule": "published",
                          "roi_margin_mm": [20.0, 20.0, 20.0]}),
    "tumor": ("tumor", [1.7632679173989854, 1.4395425277931828, 1.4395425277931828],
              [96, 160, 192], 273.0, 86.59582, 81.018715,
              {"step": 0.5, "tumor_combination": "published_reconcile", "decoder_stages": None}),
    "tumor_2": ("tumor", [1.7632679173989854, 1.4395425277931828, 1.4395425277931828],
                [96, 128, 192], 273.0, 86.59582, 81.018715,
                {"step": 0.5, "tumor_combination": "published_reconcile"}),
    "organ": ("organ", [2.5, 1.25834116, 1.25834116], [64, 160, 224], 267.0, 70.34444, 82.539795,
              {"step": 0.5, "keep_largest": KEEP, "decoder_stages": None}),
}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_release(tmp_path_factory.mktemp("release"))


@pytest.fixture(scope="module")
def imported(release, tmp_path_factory):
    out = tmp_path_factory.mktemp("imp") / "weights"
    import_hiasbuaa(release, out, network=THIN)
    return out


def test_folders_load_with_exactly_the_published_settings(imported):
    assert sorted(p.name for p in imported.iterdir()) == sorted(FOLDERS)
    for name, (stage, spacing, patch, upper, mean, std, own) in EXPECTED.items():
        model = StageModel.load(imported / name, "cpu")
        assert model.stage == stage
        assert list(model.spacing) == spacing and list(model.patch_size) == patch
        norm = model.spec.normalizer
        assert (norm.lower, norm.upper, norm.mean, norm.std) == (-325.0, upper, mean, std)
        assert model.spec.input_orientation == "as-stored"
        assert model.transpose_forward == (0, 1, 2)
        assert model.channel_labels == tuple(range(CLASSES[name]))
        for key, value in {**SHARED, **own}.items():
            assert model.inference[key] == value, (name, key)
        assert isinstance(model.network, TruncatedUNet) == (name == "coarse")


def test_manifest_records_provenance(release, imported):
    for name in FOLDERS:
        manifest = load_manifest(imported / name)
        extra = manifest["extra"]
        source = release / FILES[name]
        assert extra["pipeline"] == "hiasbuaa-flare23"
        assert extra["sources"] == [{"path": str(source.resolve()), "sha256": sha256_file(source)}]
        assert "nnU-Net v1" in extra["source_format"] and "PlainConvUNet" in extra["converted"]
        assert manifest["input_orientation"] == "as-stored"
        assert set(manifest["files"]) == {"plans.json", "dataset.json", "checkpoint_final.pth"}


def test_converted_network_computes_what_the_v1_weights_describe(release, imported):
    """Without nnU-Net v1: the organ network equals a v1-named state renamed by hand-checked keys
    (the reference Generic_UNet comparison is test_v1_reference_forward below)."""
    organ = StageModel.load(imported / "organ", "cpu").network
    state = torch.load(release / FILES["organ"], weights_only=True)["state_dict"]
    got = organ.state_dict()
    assert torch.equal(got["encoder.stages.0.0.convs.0.conv.weight"],
                       state["conv_blocks_context.0.blocks.0.conv.weight"])
    assert torch.equal(got["encoder.stages.5.0.convs.1.norm.weight"],
                       state["conv_blocks_context.5.1.blocks.0.instnorm.weight"])
    assert torch.equal(got["decoder.seg_layers.4.weight"], state["seg_outputs.4.weight"])
    assert not got["decoder.transpconvs.0.bias"].any()


def test_v1_reference_forward(tmp_path):
    from convert.convert_support import build_v1_unet, perturb, requires_nnunet_v1

    if requires_nnunet_v1.args[0]:
        pytest.skip(requires_nnunet_v1.kwargs["reason"])
    from convert.convert_support import save_v1_checkpoint

    src = write_release(tmp_path / "src", skip=("coarse", "organ"))
    torch.manual_seed(5)
    refs = {name: perturb(build_v1_unet(base=4, num_classes=14, max_features=24), seed=i)
            for i, name in enumerate(("coarse", "organ"))}
    for name, net in refs.items():
        save_v1_checkpoint(net, src / FILES[name])
    import_hiasbuaa(src, tmp_path / "w", network=THIN)
    x = torch.randn(1, 1, 16, 32, 64)
    with torch.no_grad():
        heads = refs["coarse"].eval()(x)
        ref_coarse = F.interpolate(heads[2], scale_factor=4, mode="trilinear", align_corners=True)
        refs["organ"].eval().do_ds = False
        ref_organ = refs["organ"](x)
        coarse = StageModel.load(tmp_path / "w" / "coarse", "cpu").network(x)
        organ = StageModel.load(tmp_path / "w" / "organ", "cpu").network(x)
    diffs = float((coarse - ref_coarse).abs().max()), float((organ - ref_organ).abs().max())
    print(f"max abs difference to the v1 reference: truncated coarse {diffs[0]:.2e}, organ {diffs[1]:.2e}")
    assert max(diffs) <= 1e-4 and float(ref_organ.abs().max()) > 0.1


def test_missing_and_unreadable_files_are_all_named(tmp_path):
    src = write_release(tmp_path / "src", skip=("tumor", "organ"))
    (src / FILES["tumor_2"]).write_bytes(b"not a checkpoint")
    before = snapshot(src)
    with pytest.raises(ConversionError) as err:
        import_hiasbuaa(src, tmp_path / "w", network=THIN)
    text = str(err.value)
    for name in ("tumor", "tumor_2", "organ"):
        assert FILES[name] in text
    assert "not found" in text and "cannot read" in text and text.count("\n- ") == 3
    assert not (tmp_path / "w").exists() and snapshot(src) == before


def test_wrong_shapes_are_refused(tmp_path):
    src = write_release(tmp_path / "src")
    torch.save({"state_dict": v1_state(13)}, src / FILES["organ"])  # 13 classes, not 14
    with pytest.raises(ConversionError, match="organ_model.pth.*do not match") as err:
        import_hiasbuaa(src, tmp_path / "w", network=THIN)
    assert "seg_outputs.0.weight" in str(err.value)
    with pytest.raises(ConversionError, match="coarse_model.pth"):  # the published size is checked
        import_hiasbuaa(src, tmp_path / "w")
    assert list(tmp_path.iterdir()) == [src]


def test_source_folder_is_untouched(release, tmp_path):
    before = snapshot(release)
    import_hiasbuaa(release, tmp_path / "w", network=THIN)
    assert snapshot(release) == before
    with pytest.raises(ConversionError, match="inside the source folder"):
        import_hiasbuaa(release, release / "w", network=THIN)


@pytest.mark.parametrize("existing", [False, True])
def test_a_failure_while_writing_leaves_nothing(release, tmp_path, monkeypatch, existing):
    out = tmp_path / "w"
    if existing:
        import_hiasbuaa(release, out, network=THIN)
    before = snapshot(out) if existing else None
    real, calls = stage_folders_module._write_one, []

    def third_fails(folder, spec):
        calls.append(folder.name)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(folder, spec)

    monkeypatch.setattr(stage_folders_module, "_write_one", third_fails)
    with pytest.raises(OSError):
        import_hiasbuaa(release, out, overwrite=True, network=THIN)
    assert len(calls) == 3
    if existing:
        assert snapshot(out) == before  # old folders intact, no temporary folder left
    else:
        assert list(tmp_path.iterdir()) == []


def test_overwrite_keeps_the_previous_folders(release, tmp_path):
    out = tmp_path / "w"
    import_hiasbuaa(release, out, network=THIN)
    first = load_manifest(out / "coarse")["created_utc"], snapshot(out / "coarse")
    with pytest.raises(ImportTargetError, match="--overwrite"):
        import_hiasbuaa(release, out, network=THIN)
    import_hiasbuaa(release, out, overwrite=True, network=THIN)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*FOLDERS, *(f"{n}.previous" for n in FOLDERS)])
    assert snapshot(out / "coarse.previous") == first[1]
    StageModel.load(out / "coarse.previous", "cpu")  # still a loadable stage folder
    (out / "organ.previous" / "manifest.json").unlink()  # not ours any more: never replaced
    with pytest.raises(ImportTargetError, match="organ.previous"):
        import_hiasbuaa(release, out, overwrite=True, network=THIN)


def test_cli_help_and_errors(tmp_path, capsys):
    proc = subprocess.run([sys.executable, "-m", "c2fseg.cli", "import", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "hiasbuaa" in proc.stdout and "nnunet" in proc.stdout
    with pytest.raises(SystemExit) as ex:
        main(["import", "hiasbuaa", "--help"])
    assert ex.value.code == 0
    assert "predict_final.py" in capsys.readouterr().out
    src = write_release(tmp_path / "src", skip=("organ",))
    assert main(["import", "hiasbuaa", str(src), "-o", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "organ_model.pth" in err and "not found" in err


@pytest.mark.slow
def test_published_size_files(tmp_path):
    """The four files at the published size (about 120 MB each) import and run."""
    src = write_release(tmp_path / "src", network=None)
    out = tmp_path / "w"
    assert main(["import", "hiasbuaa", str(src), "-o", str(out)]) == 0
    model = StageModel.load(out / "coarse", "cpu")
    with torch.no_grad():
        y = model.network(torch.zeros(1, 1, 32, 64, 64))
    assert y.shape == (1, 14, 32, 64, 64)
    assert json.loads((out / "tumor" / "manifest.json").read_text())["extra"]["pipeline"] == "hiasbuaa-flare23"
