"""The shared case loop: triage order, failure isolation, timings, callbacks, failure lines."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from c2fseg.infer.case_loop import CaseLoop, Prediction, failure_reason, output_path
from c2fseg.infer.outputs import OutputRecords
from c2fseg.io import CaseInput, ImageReadError, read_labels, write_labels


@pytest.fixture
def folder(write_ct, tmp_path):
    """Inputs: an unusable case, one blocked by a foreign file, one kept, three to run."""
    ct = np.random.default_rng(0).normal(0, 100, (6, 7, 8)).astype(np.float32)
    written = {name: write_ct(f"{name}_0000.nii.gz", ct) for name in ("kept", "a", "boom", "b")}
    paths = {name: path for name, (path, _) in written.items()}
    (tmp_path / "in" / "cut_0000.nii.gz").write_bytes(b"\x1f\x8b not a whole file")
    out = tmp_path / "out"
    out.mkdir()
    (out / "foreign.nii.gz").write_bytes(b"someone else's file")
    records = OutputRecords(out, "test")
    records.write(out / "kept.nii.gz", paths["kept"],
                  partial(write_labels, np.zeros(ct.shape, np.uint8), written["kept"][1]))
    cases = [
        CaseInput("unusable", tmp_path / "in" / "x", "file", error="two series in one folder"),
        CaseInput("a", paths["a"], "file"),
        CaseInput("foreign", paths["a"], "file"),
        CaseInput("boom", paths["boom"], "file"),
        CaseInput("kept", paths["kept"], "file"),
        CaseInput("cut", tmp_path / "in" / "cut_0000.nii.gz", "file"),
        CaseInput("b", paths["b"], "file"),
    ]
    return cases, out, records


def test_outcomes_in_order_with_failures_isolated(folder, capsys):
    cases, out, records = folder
    predicted, seen, checkpoints = [], [], []

    def predict(case, volume):
        predicted.append(case.case_id)
        if case.case_id == "boom":
            raise ValueError("boom")
        labels = np.full(volume.shape, 3 if case.case_id == "a" else 0, np.uint8)
        status = "ok" if labels.any() else "empty"
        return Prediction(labels, status, "" if labels.any() else "nothing found",
                          timings={"predict": 0.5}, info={"case": case.case_id})

    loop = CaseLoop(records, "test", progress=False, announce="c2fseg test")
    loop.run(cases, out, predict, seen.append, after_case=lambda: checkpoints.append(len(seen)))
    assert [(o.case.case_id, o.status, o.ran) for o in seen] == [
        ("unusable", "failed", False), ("foreign", "failed", False), ("kept", "skipped", False),
        ("a", "ok", True), ("boom", "failed", True), ("cut", "failed", True), ("b", "empty", True),
    ]
    assert predicted == ["a", "boom", "b"]  # the unreadable case never reaches predict
    assert checkpoints == [4, 5, 6, 7]  # after each case that ran, once its outcome is in
    by_id = {o.case.case_id: o for o in seen}
    assert by_id["unusable"].reason == "two series in one folder"
    assert "foreign.nii.gz" in by_id["foreign"].reason and "not written by c2fseg" in by_id["foreign"].reason
    assert by_id["kept"].record["producer"] == "test"
    assert by_id["boom"].reason == "ValueError: boom" and by_id["boom"].volume is not None
    assert by_id["cut"].reason.startswith(f"{cases[5].path}: the gzip") and by_id["cut"].volume is None
    assert by_id["b"].reason == "nothing found"
    assert list(by_id["a"].timings) == ["read", "predict", "write"] and by_id["a"].timings["predict"] == 0.5
    assert np.array_equal(read_labels(out / "a.nii.gz").array, np.full((6, 7, 8), 3))
    assert records.read(out / "a.nii.gz")["info"] == {"case": "a"}
    assert not (out / "boom.nii.gz").exists() and not (out / "cut.nii.gz").exists()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["unusable failed", "foreign failed",
                                                               "boom failed", "cut failed"]
    assert all(line.startswith("c2fseg test: ") for line in lines)


def test_rerun_keeps_what_is_done_and_overwrite_redoes_it(folder):
    cases, out, records = folder
    cases = [c for c in cases if c.case_id in ("a", "b")]

    def predict(case, volume):
        return Prediction(np.ones(volume.shape, np.uint8))

    def statuses(loop):
        seen = []
        loop.run(cases, out, predict, seen.append)
        return [o.status for o in seen]

    assert statuses(CaseLoop(records, "t", progress=False)) == ["ok", "ok"]
    assert statuses(CaseLoop(records, "t", progress=False)) == ["skipped", "skipped"]
    assert statuses(CaseLoop(records, "t", overwrite=True, progress=False)) == ["ok", "ok"]


def test_failure_reason_and_output_path(tmp_path):
    assert failure_reason(ImageReadError("x.nii.gz: truncated")) == "x.nii.gz: truncated"
    assert failure_reason(KeyError("k")) == "KeyError: 'k'"
    case = CaseInput("liver_007", tmp_path / "liver_007_0000.nrrd", "file")
    assert output_path(tmp_path, case) == tmp_path / "liver_007.nii.gz"
