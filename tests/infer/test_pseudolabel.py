"""pseudolabel_folder and ``c2fseg pseudolabel``: outputs, resume, parts, input folder untouched."""

from __future__ import annotations

import numpy as np
import pytest
from fake_models import write_fake_weights

import c2fseg.infer.stage_model as sm
from c2fseg.cli import main
from c2fseg.infer.pseudolabel import pseudolabel_folder, select_part
from c2fseg.io import FolderError, make_geometry, read_image, read_labels, write_volume

CASES = ("a", "b", "c", "d", "e")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Five small CTs (one stored permuted/flipped) and a coarse weights folder."""
    root = tmp_path_factory.mktemp("pl")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, case in enumerate(CASES):
        ct = rng.normal(0, 300, (12 + i, 24, 20)).astype(np.float32)
        transpose, flip = ((2, 0, 1), (True, False, True)) if case == "b" else ((0, 1, 2), (False,) * 3)
        geom = make_geometry(ct.shape, (2.5, 1.4, 1.6), (5.0, -3.0, 7.0), transpose, flip)
        write_volume(ct, geom, images / f"{case}_0000.nii.gz")
    write_fake_weights(root / "weights", "coarse", seed=0)
    return root


def run(data, out, **kw):
    return pseudolabel_folder("coarse", data / "weights", data / "images", out, device="cpu",
                              progress=False, **kw)


def test_labels_every_case_with_input_geometry(data, tmp_path):
    before = sorted(p.name for p in (data / "images").iterdir())
    summary = run(data, tmp_path / "out")
    assert sorted(summary["ok"]) == list(CASES) and not summary["failed"]
    for i, case in enumerate(CASES):
        labels = read_labels(tmp_path / "out" / f"{case}.nii.gz")
        assert labels.shape == (12 + i, 24, 20)
        assert labels.spacing == pytest.approx((2.5, 1.4, 1.6))
        assert set(np.unique(labels.array)) <= set(range(14))
    # what is written is the stage's own prediction, back in the (permuted, flipped) input's grid
    ct = read_image(data / "images" / "b_0000.nii.gz")
    expected = sm.StageModel.load(data / "weights" / "coarse", "cpu").predict(ct.array, ct.spacing)
    assert np.array_equal(read_labels(tmp_path / "out" / "b.nii.gz").array, expected.labels.numpy())
    assert sorted(p.name for p in (data / "images").iterdir()) == before


def test_resume_skips_own_outputs_and_redoes_missing_ones(data, tmp_path, monkeypatch):
    out = tmp_path / "out"
    run(data, out)
    (out / "c.nii.gz").unlink()
    calls = []
    real = sm.StageModel.predict
    monkeypatch.setattr(sm.StageModel, "predict", lambda self, ct, sp, **k: calls.append(1) or real(self, ct, sp, **k))
    summary = run(data, out)
    assert summary["ok"] == ["c"] and sorted(summary["skipped"]) == ["a", "b", "d", "e"]
    assert len(calls) == 1
    assert read_labels(out / "c.nii.gz").shape == (14, 24, 20)
    again = run(data, out, overwrite=True, part=0, num_parts=5)
    assert again["ok"] == ["a"] and not again["skipped"]


def test_foreign_or_changed_files_are_never_overwritten(data, tmp_path):
    out = tmp_path / "out"
    run(data, out, part=0, num_parts=5)  # writes a.nii.gz
    damaged = out / "a.nii.gz"
    damaged.write_bytes(damaged.read_bytes()[:-20])  # changed after c2fseg wrote it
    foreign = out / "b.nii.gz"
    foreign.write_bytes((out / "a.nii.gz").read_bytes())  # not written by c2fseg at all
    kept = {p.name: p.read_bytes() for p in (damaged, foreign)}
    for overwrite in (False, True):
        summary = run(data, out, overwrite=overwrite)
        assert sorted(summary["failed"]) == ["a", "b"]
        assert "changed after c2fseg wrote it" in summary["failed"]["a"]
        assert "b.nii.gz" in summary["failed"]["b"] and "not written by c2fseg" in summary["failed"]["b"]
        assert {p.name: p.read_bytes() for p in (damaged, foreign)} == kept
    assert sorted(summary["ok"]) == ["c", "d", "e"]


def test_parts_are_disjoint_and_complete(data, tmp_path):
    items = list(range(11))
    parts = [select_part(items, p, 3) for p in range(3)]
    assert sorted(sum(parts, [])) == items
    with pytest.raises(ValueError, match="part"):
        select_part(items, 3, 3)
    done = [run(data, tmp_path / "out", part=p, num_parts=2)["ok"] for p in range(2)]
    assert not set(done[0]) & set(done[1]) and sorted(done[0] + done[1]) == list(CASES)


def test_never_writes_into_the_input_folder(data):
    with pytest.raises(FolderError, match="input folder"):
        run(data, data / "images")
    with pytest.raises(FolderError, match="inside the input folder"):
        run(data, data / "images" / "labels")
    assert not (data / "images" / "labels").exists()


def test_cli_runs_and_reports(data, tmp_path, capsys):
    out = tmp_path / "cli_out"
    argv = ["pseudolabel", "--stage", "coarse", "--in", str(data / "images"), "--out", str(out),
            "--weights", str(data / "weights"), "--device", "cpu", "--part", "1", "--num-parts", "2"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["b.nii.gz", "d.nii.gz"]
    assert "2 labelled" in capsys.readouterr().out
    assert main(argv[:-4] + ["--part", "2", "--num-parts", "2"]) == 2
    assert main(["pseudolabel", "--stage", "organ", "--in", str(data / "images"), "--out", str(out),
                 "--weights", str(data / "weights"), "--device", "cpu"]) == 2  # no organ weights
    assert "c2fseg train organ" in capsys.readouterr().err


def test_pseudo_labels_keep_the_stages_largest_components(data, tmp_path, monkeypatch):
    """A stage whose inference settings keep the largest component per label (the tiny coarse
    stage) writes pseudo labels with one component per organ."""
    import c2fseg.infer.pseudolabel as pl
    from c2fseg.infer.postprocess import keep_largest_components

    model = sm.StageModel.load(data / "weights" / "coarse", "cpu")
    assert pl.pseudo_label_keep_largest(model) == []  # c2fseg's coarse default: none
    model.inference = {**model.inference, "keep_largest": [1, 2, 3]}
    assert pl.pseudo_label_keep_largest(model) == [1, 2, 3]
    monkeypatch.setattr(pl, "pseudo_label_keep_largest", lambda m: list(range(1, 14)))
    run(data, tmp_path / "out")
    ct = read_image(data / "images" / "a_0000.nii.gz")
    raw = model.predict(ct.array, ct.spacing).labels.numpy()
    written = read_labels(tmp_path / "out" / "a.nii.gz").array
    assert not np.array_equal(written, raw)  # the random model's labels are fragmented
    assert np.array_equal(written, keep_largest_components(raw, list(range(1, 14))))
