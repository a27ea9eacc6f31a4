"""Batch prediction: bad cases, resume, refusals, atomic writes, report, OOM fallback, CLI."""

from __future__ import annotations

import json
import os
import sys
import threading

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from infer_support import AIR, FakeStageModel, abdomen_ct, make_models

from c2fseg import viz
from c2fseg.cli import main
from c2fseg.infer import batch, case_loop
from c2fseg.infer.batch import predict_folder
from c2fseg.infer.cascade import CascadeOptions
from c2fseg.io import FolderError, Volume, make_geometry, read_labels
from c2fseg.report import environment_info, peak_host_ram_mb


@pytest.fixture
def weights(tmp_path):
    w = tmp_path / "weights"
    for stage in ("coarse", "organ", "tumor"):
        (w / stage).mkdir(parents=True)
    return w


@pytest.fixture
def loads(monkeypatch):
    """Replace model loading by fake models; returns the list of (weights, device) loads."""
    calls = []

    def fake_load(weights_dir, device, **kwargs):
        calls.append((weights_dir, device))
        return make_models()

    monkeypatch.setattr(batch, "load_models", fake_load)
    return calls


@pytest.fixture
def cases(write_ct, tmp_path):
    """Input folder: two good cases (one stored permuted/flipped) and one truncated file."""
    ct, labels = abdomen_ct()
    write_ct("good1_0000.nii.gz", ct)
    write_ct("good2_0000.nii.gz", ct, transpose=(1, 2, 0), flip=(False, True, True))
    bad, _ = write_ct("bad_0000.nii.gz", ct)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) - 40])  # corruption at the very end
    return tmp_path / "in", labels


def run_cli(inp, out, weights, *extra):
    return main(["predict", "-i", str(inp), "-o", str(out), "--weights", str(weights),
                 "--device", "cpu", "--no-progress", *extra])


def same_header(a, b) -> bool:
    ia, ib = sitk.ReadImage(str(a)), sitk.ReadImage(str(b))
    return (ia.GetSize() == ib.GetSize() and np.allclose(ia.GetSpacing(), ib.GetSpacing())
            and np.allclose(ia.GetOrigin(), ib.GetOrigin())
            and np.allclose(ia.GetDirection(), ib.GetDirection()))


def test_corrupt_case_fails_alone_exit_3(cases, weights, loads, tmp_path):
    inp, expected = cases
    out = tmp_path / "out"
    assert run_cli(inp, out, weights) == 3
    assert len(loads) == 1  # models loaded once for the whole batch
    for name in ("good1", "good2"):
        written = out / f"{name}.nii.gz"
        assert same_header(written, inp / f"{name}_0000.nii.gz")
        assert np.array_equal(read_labels(written).array, expected)
    assert not (out / "bad.nii.gz").exists()
    report = json.loads((out / "c2fseg_report.json").read_text())
    status = {c["case"]: c for c in report["cases"]}
    assert status["good1"]["status"] == "ok" and status["good2"]["status"] == "ok"
    assert status["bad"]["status"] == "failed"
    assert "bad_0000.nii.gz" in status["bad"]["reason"]
    assert "truncated" in status["bad"]["reason"] or "corrupt" in status["bad"]["reason"]
    assert report["totals"]["failed"] == 1 and report["totals"]["ok"] == 2


def test_resume_skips_own_outputs_and_redoes_missing_or_damaged_ones(cases, weights, loads, tmp_path):
    inp, expected = cases
    (inp / "bad_0000.nii.gz").unlink()
    out = tmp_path / "out"
    assert run_cli(inp, out, weights) == 0
    (out / "good2.nii.gz").unlink()
    before = (out / "good1.nii.gz").stat().st_mtime_ns
    assert run_cli(inp, out, weights) == 0
    report = json.loads((out / "c2fseg_report.json").read_text())
    assert {c["case"]: c["status"] for c in report["cases"]} == {"good1": "skipped", "good2": "ok"}
    assert (out / "good1.nii.gz").stat().st_mtime_ns == before
    assert np.array_equal(read_labels(out / "good2.nii.gz").array, expected)
    # our own file damaged in place (same size and mtime: bit rot) is caught by the full read
    damaged = out / "good2.nii.gz"
    st = damaged.stat()
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    os.utime(damaged, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert run_cli(inp, out, weights) == 0
    report = json.loads((out / "c2fseg_report.json").read_text())
    assert {c["case"]: c["status"] for c in report["cases"]} == {"good1": "skipped", "good2": "ok"}
    assert np.array_equal(read_labels(damaged).array, expected)
    assert run_cli(inp, out, weights, "--overwrite") == 0
    report = json.loads((out / "c2fseg_report.json").read_text())
    assert [c["status"] for c in report["cases"]] == ["ok", "ok"]


def test_foreign_label_files_are_neither_skipped_nor_overwritten(cases, weights, loads, tmp_path):
    """``predict -i imagesTs -o labelsTs``: the ground truth there is not a finished output."""
    inp, expected = cases
    (inp / "bad_0000.nii.gz").unlink()
    out = tmp_path / "labelsTs"
    out.mkdir()
    truth = sitk.ReadImage(str(inp / "good1_0000.nii.gz"))
    truth = sitk.Cast(truth * 0, sitk.sitkUInt8)  # valid header, labels 0-14: looks like an output
    sitk.WriteImage(truth, str(out / "good1.nii.gz"))
    gt_bytes = (out / "good1.nii.gz").read_bytes()
    for extra in ((), ("--overwrite",)):
        assert run_cli(inp, out, weights, *extra) == 3
        report = json.loads((out / "c2fseg_report.json").read_text())
        status = {c["case"]: c for c in report["cases"]}
        assert status["good1"]["status"] == "failed"
        assert "good1.nii.gz" in status["good1"]["reason"] and "not written by c2fseg" in status["good1"]["reason"]
        assert "another output folder" in status["good1"]["reason"]
        assert status["good2"]["status"] in ("ok", "skipped")
        assert (out / "good1.nii.gz").read_bytes() == gt_bytes
    assert np.array_equal(read_labels(out / "good2.nii.gz").array, expected)


def test_recorded_output_changed_by_someone_else_is_foreign(cases, weights, loads, tmp_path):
    inp, _ = cases
    (inp / "bad_0000.nii.gz").unlink()
    out = tmp_path / "out"
    assert run_cli(inp, out, weights) == 0
    edited = sitk.ReadImage(str(out / "good1.nii.gz"))
    edited[0, 0, 0] = 5  # a user's manual correction
    sitk.WriteImage(edited, str(out / "good1.nii.gz"))
    kept = (out / "good1.nii.gz").read_bytes()
    report = predict_folder(inp, out, weights_dir=weights, device="cpu", overwrite=True, progress=False)
    status = {c.case: c for c in report.cases}
    assert status["good1"].status == "failed" and "changed after c2fseg wrote it" in status["good1"].reason
    assert status["good2"].status == "ok"
    assert (out / "good1.nii.gz").read_bytes() == kept


def test_changed_input_is_redone(cases, weights, loads, tmp_path):
    inp, _ = cases
    (inp / "bad_0000.nii.gz").unlink()
    out = tmp_path / "out"
    run_cli(inp, out, weights)
    moved = sitk.ReadImage(str(inp / "good1_0000.nii.gz"))
    moved.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(moved, str(inp / "good1_0000.nii.gz"))
    report = predict_folder(inp, out, weights_dir=weights, device="cpu", progress=False)
    assert {c.case: c.status for c in report.cases} == {"good1": "ok", "good2": "skipped"}
    assert same_header(out / "good1.nii.gz", inp / "good1_0000.nii.gz")


def test_rerun_keeps_what_the_earlier_run_reported(write_ct, weights, loads, tmp_path):
    ct, _ = abdomen_ct()
    write_ct("body_0000.nii.gz", ct)
    write_ct("head_0000.nii.gz", np.full((12, 10, 14), AIR, dtype=np.float32))
    out = tmp_path / "out"
    first = {c.case: c for c in predict_folder(tmp_path / "in", out, weights_dir=weights, device="cpu",
                                               progress=False).cases}
    assert first["body"].status == "ok" and first["head"].status == "empty"
    second = {c.case: c for c in predict_folder(tmp_path / "in", out, weights_dir=weights, device="cpu",
                                                progress=False).cases}
    for case in ("body", "head"):
        again, earlier = second[case], first[case]
        assert again.status == "skipped" and again.earlier_status == earlier.status
        assert again.roi == earlier.roi and again.labels == earlier.labels
        assert again.warnings == earlier.warnings and again.device == earlier.device
    assert second["body"].roi is not None and second["body"].labels
    assert "no abdominal organ" in second["head"].reason
    saved = json.loads((out / "c2fseg_report.json").read_text())
    assert {c["case"]: c["earlier_status"] for c in saved["cases"]} == {"body": "ok", "head": "empty"}


def test_stage_folder_holding_another_stage_is_refused(tmp_path):
    from fake_models import write_fake_weights

    w = tmp_path / "weights"
    write_fake_weights(w, "coarse")
    write_fake_weights(w, "organ")
    write_fake_weights(tmp_path / "misplaced", "coarse")
    (tmp_path / "misplaced" / "coarse").rename(w / "tumor")  # a coarse model in tumor/
    with pytest.raises(batch.SetupError, match="tumor.*holds a 'coarse' model"):
        batch.load_models(w, "cpu")
    (w / "tumor").rename(tmp_path / "wrong")
    write_fake_weights(w, "tumor")
    (w / "tumor").rename(w / "tumor_2")  # ensemble members are tumor models in tumor_N/
    write_fake_weights(w, "tumor")
    models = batch.load_models(w, "cpu")
    assert [m.stage for m in models.tumors] == ["tumor", "tumor"]


@pytest.mark.parametrize("where", ["same", "inside"])
def test_output_in_input_is_refused(cases, weights, loads, where):
    inp, _ = cases
    out = inp if where == "same" else inp / "seg"
    with pytest.raises(FolderError, match="input folder"):
        predict_folder(inp, out, weights_dir=weights, device="cpu", progress=False)
    assert run_cli(inp, out, weights) == 2
    assert sorted(p.name for p in inp.iterdir()) == ["bad_0000.nii.gz", "good1_0000.nii.gz",
                                                     "good2_0000.nii.gz"]
    assert loads == []


def test_report_inside_input_is_refused(cases, weights, loads, tmp_path):
    inp, _ = cases
    with pytest.raises(FolderError, match="report"):
        predict_folder(inp, tmp_path / "out", weights_dir=weights, device="cpu",
                       report_path=inp / "r.json", progress=False)
    assert run_cli(inp, tmp_path / "out", weights, "--report", str(inp / "r.json")) == 2
    assert not (inp / "r.json").exists() and loads == []


def test_usage_errors_exit_2(cases, weights, loads, tmp_path, capsys):
    inp, _ = cases
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(tmp_path / "missing", tmp_path / "o1", weights) == 2
    assert run_cli(empty, tmp_path / "o2", weights) == 2
    assert run_cli(inp, tmp_path / "o3", tmp_path / "no_weights") == 2
    assert not (tmp_path / "o3").exists()  # nothing created when the run cannot start
    (weights / "tumor").rmdir()
    assert run_cli(inp, tmp_path / "o4", weights) == 2
    assert "tumor" in capsys.readouterr().err
    assert loads == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_gpu_is_usage_error(cases, weights, loads, tmp_path, capsys):
    inp, _ = cases
    code = main(["predict", "-i", str(inp), "-o", str(tmp_path / "o"), "--weights",
                 str(weights), "--device", "cuda", "--no-progress"])
    assert code == 2 and "--device auto" in capsys.readouterr().err
    assert batch.setup_device("auto") == "cpu"
    with pytest.raises(batch.SetupError, match="no usable CUDA"):
        batch.setup_device("cuda")


def test_failed_write_leaves_no_partial_file(cases, weights, loads, tmp_path, monkeypatch):
    inp, _ = cases
    out = tmp_path / "out"
    real_write = sitk.WriteImage

    def failing_write(image, path, *args, **kwargs):
        if "good2" in str(path):
            with open(path, "wb") as fh:
                fh.write(b"half a file")
            raise RuntimeError("disk full")
        return real_write(image, path, *args, **kwargs)

    monkeypatch.setattr(sitk, "WriteImage", failing_write)
    report = predict_folder(inp, out, weights_dir=weights, device="cpu", progress=False)
    status = {c.case: c for c in report.cases}
    assert status["good2"].status == "failed" and "disk full" in status["good2"].reason
    assert status["good1"].status == "ok"
    leftovers = [p.name for p in out.iterdir() if "good2" in p.name]
    assert leftovers == []


def test_report_schema(cases, weights, loads, tmp_path):
    inp, _ = cases
    report_path = tmp_path / "elsewhere" / "run.json"
    run_cli(inp, tmp_path / "out", weights, "--report", str(report_path), "--margin-mm", "5,6,7",
            "--min-tumor-ml", "0.05", "--tumor-must-touch-organ")
    assert not (tmp_path / "out" / "c2fseg_report.json").exists()
    report = json.loads(report_path.read_text())
    for key in ("schema_version", "started_utc", "finished_utc", "seconds", "input_dir",
                "output_dir", "weights_dir", "environment", "options", "totals", "resources",
                "cases"):
        assert key in report, key
    assert report["environment"] == environment_info("cpu")
    assert report["environment"]["torch"] == torch.__version__
    opts = report["options"]
    assert opts["margin_mm"] == [5.0, 6.0, 7.0] and opts["min_tumor_ml"] == 0.05
    assert opts["tumor_must_touch_organ"] is True and opts["seed"] == batch.SEED == 0
    assert opts["device_requested"] == "cpu" and opts["tumor_models"] == 1
    assert 50 < report["resources"]["peak_host_ram_mb"] <= peak_host_ram_mb()  # torch alone > 50 MiB
    assert report["resources"]["peak_gpu_mem_mb"] is None
    ok = next(c for c in report["cases"] if c["case"] == "good1")
    for stage in ("read", "coarse", "roi", "organ", "tumor", "merge", "postprocess", "write"):
        assert stage in ok["timings"], stage
    assert ok["roi"]["start_zyx"] and ok["roi"]["size_mm_zyx"]
    # the 27-voxel tumor (0.081 mL) touches the liver and is above 0.05 mL: kept
    assert set(ok["labels"]) == {"liver", "right_kidney", "spleen", "tumor"}
    assert ok["labels"]["tumor"] == 27 and ok["warnings"] == []
    assert ok["status"] == "ok" and ok["device"] == "cpu" and ok["fallback"] == ""


def test_cuda_oom_retries_case_on_cpu(cases, weights, monkeypatch, tmp_path):
    inp, expected = cases
    (inp / "bad_0000.nii.gz").unlink()
    calls = []

    precisions = []

    def load(weights_dir, device, **kwargs):
        calls.append(device)
        precisions.append(kwargs["precision"])
        models = make_models()
        if len(calls) == 1:
            models.organ.error = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried 2 GiB")
        return models

    monkeypatch.setattr(batch, "load_models", load)
    report = predict_folder(inp, tmp_path / "out", weights_dir=weights, device="cpu",
                            progress=False)
    assert calls == ["cpu", "cpu"]  # the CPU models are loaded once, on first need
    assert precisions == ["auto", "fp32"]  # the CPU retry is fp32, not a third precision
    for case in report.cases:
        assert case.status == "ok" and case.device == "cpu"
        assert "out of memory" in case.fallback
    assert np.array_equal(read_labels(tmp_path / "out" / "good1.nii.gz").array, expected)


def test_other_errors_are_not_treated_as_oom(cases, weights, monkeypatch, tmp_path):
    inp, _ = cases
    calls = []

    def load(weights_dir, device, **kwargs):
        calls.append(device)
        models = make_models()
        models.organ.error = RuntimeError("shape mismatch")
        return models

    monkeypatch.setattr(batch, "load_models", load)
    report = predict_folder(inp, tmp_path / "out", weights_dir=weights, device="cpu",
                            progress=False)
    assert calls == ["cpu"]
    assert all(c.status == "failed" for c in report.cases)
    assert "shape mismatch" in report.cases[-1].reason


def test_case_without_abdomen_gives_empty_output(write_ct, weights, loads, tmp_path):
    ct = np.full((12, 10, 14), AIR, dtype=np.float32)
    path, _ = write_ct("head_0000.nii.gz", ct, transpose=(2, 1, 0), flip=(True, True, False))
    out = tmp_path / "out"
    assert run_cli(path.parent, out, weights) == 0
    written = out / "head.nii.gz"
    assert same_header(written, path)
    assert not sitk.GetArrayFromImage(sitk.ReadImage(str(written))).any()
    report = json.loads((out / "c2fseg_report.json").read_text())
    assert report["cases"][0]["status"] == "empty" and report["totals"]["empty"] == 1
    assert "no abdominal organ" in report["cases"][0]["reason"]
    assert any("constant" in w for w in report["cases"][0]["warnings"])  # from reading


def test_reading_happens_in_the_prefetch_thread(cases, weights, loads, tmp_path, monkeypatch):
    inp, _ = cases
    threads = []
    real = case_loop.read_case

    def spy(path):
        threads.append(threading.current_thread().name)
        return real(path)

    monkeypatch.setattr(case_loop, "read_case", spy)
    predict_folder(inp, tmp_path / "out", weights_dir=weights, device="cpu", progress=False)
    assert len(threads) == 3 and all(t.startswith("c2fseg-read") for t in threads)


def test_roi_overlay_png(cases, weights, loads, tmp_path):
    inp, _ = cases
    (inp / "bad_0000.nii.gz").unlink()
    predict_folder(inp, tmp_path / "out", weights_dir=weights, device="cpu", progress=False,
                   save_roi_overlay=True)
    pngs = sorted(p.name for p in (tmp_path / "out" / "roi_overlays").iterdir())
    assert pngs == ["good1.png", "good2.png"]


def test_failed_overlay_is_a_warning_not_a_failed_case(cases, weights, loads, tmp_path, monkeypatch):
    inp, expected = cases
    (inp / "bad_0000.nii.gz").unlink()

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(viz, "save_roi_overlay", broken)
    report = predict_folder(inp, tmp_path / "out", weights_dir=weights, device="cpu", progress=False,
                            save_roi_overlay=True)
    for case in report.cases:
        assert case.status == "ok" and case.roi is not None
        assert any("ROI overlay" in w and "no display" in w for w in case.warnings)
    assert np.array_equal(read_labels(tmp_path / "out" / "good1.nii.gz").array, expected)
    again = predict_folder(inp, tmp_path / "out", weights_dir=weights, device="cpu", progress=False)
    assert [c.status for c in again.cases] == ["skipped", "skipped"]


def test_cpu_retry_starts_after_the_oom_exception_is_released(monkeypatch, tmp_path):
    """Retrying inside the ``except`` block would keep the failed attempt's CUDA tensors alive
    through the traceback; the retry must see no exception being handled."""
    handled_during_retry = []

    class OutOfMemoryOnce(FakeStageModel):
        def predict(self, ct, spacing_zyx, **kwargs):
            if not self.calls:
                self.calls.append("oom")
                raise torch.cuda.OutOfMemoryError()  # no message: the note still needs one
            handled_during_retry.append(sys.exc_info())
            return super().predict(ct, spacing_zyx, **kwargs)

    models = make_models()
    models.coarse = OutOfMemoryOnce("coarse", spacing=(2.0, 2.0, 2.0))
    loaded = []
    monkeypatch.setattr(batch, "load_models", lambda *a, **k: loaded.append(a) or models)
    ct, expected = abdomen_ct()
    volume = Volume(ct, make_geometry(ct.shape, (2.0, 1.5, 1.0), (0.0, 0.0, 0.0)))
    run = batch.BatchRun(models, tmp_path / "weights", "cuda", CascadeOptions())
    result, note = batch.segment_with_fallback(volume, run)
    assert handled_during_retry == [(None, None, None)]
    assert note == "ran on CPU after CUDA out of memory (no details)"
    assert loaded == [(tmp_path / "weights", "cpu")] and run.cpu_models is models
    assert np.array_equal(result.labels, expected)
