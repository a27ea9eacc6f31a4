"""A full output disk, simulated at chosen writes, through the command line of predict and pseudolabel.

Each write that can hit a full disk (the label map, its record, the run report) is made to fail
with ENOSPC; the command must end with the documented exit code (3: some cases failed; 2: the run
report cannot be written), at most one line on stderr and no traceback, and leave no temporary
or half-written file behind.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from fake_models import write_fake_weights
from infer_support import abdomen_ct, make_models

from c2fseg import fileutil
from c2fseg.cli import main
from c2fseg.infer import batch
from c2fseg.infer.outputs import RECORD_DIR
from c2fseg.io import read_labels

NO_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def setup(write_ct, tmp_path, monkeypatch):
    """Two good input cases, stage folders and fake models (see test_batch.py)."""
    ct, labels = abdomen_ct()
    write_ct("good1_0000.nii.gz", ct)
    write_ct("good2_0000.nii.gz", ct, transpose=(1, 2, 0), flip=(False, True, True))
    weights = tmp_path / "weights"
    for stage in ("coarse", "organ", "tumor"):
        (weights / stage).mkdir(parents=True)
    monkeypatch.setattr(batch, "load_models", lambda *a, **k: make_models())
    return tmp_path / "in", weights, labels


def predict(inp: Path, out: Path, weights: Path) -> int:
    return main(["predict", "-i", str(inp), "-o", str(out), "--weights", str(weights),
                 "--device", "cpu", "--no-progress"])


def all_files(folder: Path) -> set[str]:
    """Every file under ``folder``, relative (temporary files included)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def outputs_of(*cases: str, report: bool = True) -> set[str]:
    """The files a run leaves for ``cases``: outputs, their records, the report."""
    files = {f"{c}.nii.gz" for c in cases} | {f"{RECORD_DIR}/{c}.nii.gz.json" for c in cases}
    return files | ({"c2fseg_report.json"} if report else set())


def assert_one_line_error(err: str, *needles: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def fail_replace(monkeypatch, should_fail) -> list[str]:
    """Make the atomic text writer's final rename raise ENOSPC where ``should_fail(dst, n)``
    (``n``: how many renames onto ``dst`` came before); returns the destinations that failed."""
    real, seen, failed = os.replace, {}, []

    def replace(src, dst, *args, **kwargs):
        name = Path(dst).name
        n = seen.get(name, 0)
        seen[name] = n + 1
        if should_fail(Path(dst), n):
            failed.append(str(dst))
            raise NO_SPACE
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(fileutil.os, "replace", replace)
    return failed


def test_full_disk_at_an_output_fails_that_case_only(setup, tmp_path, monkeypatch, capsys):
    inp, weights, expected = setup
    real_write = sitk.WriteImage

    def write(image, path, *args, **kwargs):
        if "good2" in str(path):  # half the file reaches the disk, then the disk is full
            Path(path).write_bytes(b"\x1f\x8b half a label map")
            raise NO_SPACE
        return real_write(image, path, *args, **kwargs)

    monkeypatch.setattr(sitk, "WriteImage", write)
    out = tmp_path / "out"
    assert predict(inp, out, weights) == 3
    captured = capsys.readouterr()
    assert captured.err == "" and "Traceback" not in captured.out
    assert all_files(out) == outputs_of("good1")
    cases = {c["case"]: c for c in json.loads((out / "c2fseg_report.json").read_text())["cases"]}
    assert cases["good1"]["status"] == "ok"
    assert cases["good2"]["status"] == "failed"
    assert cases["good2"]["reason"].startswith(f"cannot write {out / 'good2.nii.gz'}: no space left")
    assert f"good2 failed: cannot write {out / 'good2.nii.gz'}" in captured.out
    assert np.array_equal(read_labels(out / "good1.nii.gz").array, expected)


def test_silently_short_output_is_caught(setup, tmp_path, monkeypatch, capsys):
    """ITK's NIfTI writer reports a full disk on stderr only and returns; the file is cut short."""
    inp, weights, _ = setup
    real_write = sitk.WriteImage

    def short_write(image, path, *args, **kwargs):
        real_write(image, path, *args, **kwargs)
        if "good1" in str(path):
            data = Path(path).read_bytes()
            Path(path).write_bytes(data[: len(data) // 2])

    monkeypatch.setattr(sitk, "WriteImage", short_write)
    out = tmp_path / "out"
    assert predict(inp, out, weights) == 3
    assert capsys.readouterr().err == ""
    assert all_files(out) == outputs_of("good2")
    cases = {c["case"]: c for c in json.loads((out / "c2fseg_report.json").read_text())["cases"]}
    assert cases["good1"]["status"] == "failed" and "came out incomplete" in cases["good1"]["reason"]
    assert cases["good2"]["status"] == "ok"


@pytest.mark.parametrize("which", ["pending", "done"])
def test_full_disk_at_a_record_leaves_no_output(setup, tmp_path, monkeypatch, capsys, which):
    inp, weights, _ = setup
    n_fail = 0 if which == "pending" else 1  # the pending record is written first, then done
    failed = fail_replace(monkeypatch, lambda dst, n: dst.name == "good2.nii.gz.json" and n == n_fail)
    out = tmp_path / "out"
    assert predict(inp, out, weights) == 3
    assert failed == [str(out / RECORD_DIR / "good2.nii.gz.json")]
    assert capsys.readouterr().err == ""
    assert all_files(out) == outputs_of("good1")
    cases = {c["case"]: c for c in json.loads((out / "c2fseg_report.json").read_text())["cases"]}
    assert cases["good2"]["status"] == "failed"
    assert "good2.nii.gz.json: no space left" in cases["good2"]["reason"]
    monkeypatch.undo()
    batch_models = make_models()
    monkeypatch.setattr(batch, "load_models", lambda *a, **k: batch_models)
    assert predict(inp, out, weights) == 0  # the rerun does only the failed case
    cases = {c["case"]: c["status"] for c in json.loads((out / "c2fseg_report.json").read_text())["cases"]}
    assert cases == {"good1": "skipped", "good2": "ok"}


def test_full_disk_at_the_report_ends_in_one_line_exit_2(setup, tmp_path, monkeypatch, capsys):
    inp, weights, expected = setup
    failed = fail_replace(monkeypatch, lambda dst, n: dst.name == "c2fseg_report.json")
    out = tmp_path / "out"
    assert predict(inp, out, weights) == 2
    assert len(failed) == 3  # after each of the two cases, and the final write
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, "c2fseg predict: error: cannot write",
                          str(out / "c2fseg_report.json"), "no space left",
                          "2 of 2 cases have their output", "rerun skips them")
    assert captured.out.count("could not update the run report") == 1  # said once, not per case
    assert all_files(out) == outputs_of("good1", "good2", report=False)  # no temporary file
    for case in ("good1", "good2"):
        assert np.array_equal(read_labels(out / f"{case}.nii.gz").array, expected)
    monkeypatch.undo()
    monkeypatch.setattr(batch, "load_models", lambda *a, **k: make_models())
    assert predict(inp, out, weights) == 0
    saved = json.loads((out / "c2fseg_report.json").read_text())
    assert [c["status"] for c in saved["cases"]] == ["skipped", "skipped"]


def test_report_that_fails_only_once_is_written_at_the_end(setup, tmp_path, monkeypatch, capsys):
    inp, weights, _ = setup
    failed = fail_replace(monkeypatch, lambda dst, n: dst.name == "c2fseg_report.json" and n == 0)
    out = tmp_path / "out"
    assert predict(inp, out, weights) == 0
    assert len(failed) == 1 and capsys.readouterr().err == ""
    saved = json.loads((out / "c2fseg_report.json").read_text())
    assert saved["totals"]["ok"] == 2 and saved["finished_utc"]
    assert all_files(out) == outputs_of("good1", "good2")


def test_pseudolabel_full_disk_fails_the_case_exit_3(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    from c2fseg.io import make_geometry, write_volume

    images = tmp_path / "images"
    for case in ("a", "b"):
        ct = rng.normal(0, 300, (12, 24, 20)).astype(np.float32)
        write_volume(ct, make_geometry(ct.shape, (2.5, 1.4, 1.6), (0.0, 0.0, 0.0)),
                     images / f"{case}_0000.nii.gz")
    write_fake_weights(tmp_path / "weights", "coarse")
    real_write = sitk.WriteImage

    def write(image, path, *args, **kwargs):
        if "-a.nii.gz" in str(path):
            raise NO_SPACE
        return real_write(image, path, *args, **kwargs)

    monkeypatch.setattr(sitk, "WriteImage", write)
    out = tmp_path / "labels"
    code = main(["pseudolabel", "--stage", "coarse", "--in", str(images), "--out", str(out),
                 "--weights", str(tmp_path / "weights"), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 3 and "Traceback" not in captured.err + captured.out
    assert "1 labelled, 0 kept, 1 failed" in captured.out
    assert f"failed a: cannot write {out / 'a.nii.gz'}: no space left" in captured.out
    assert all_files(out) == {"b.nii.gz", f"{RECORD_DIR}/b.nii.gz.json"}
