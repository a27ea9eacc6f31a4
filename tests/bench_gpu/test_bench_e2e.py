"""The predict_final.py end-to-end summary: process start to the last output written."""

from __future__ import annotations

import json
import os

from c2fseg.bench import e2e


def fake_run(tmp_path, start: float):
    out = tmp_path / "out"
    out.mkdir()
    for i, name in enumerate(("a.nii.gz", "b.nii.gz", "c.nii.gz")):
        (out / name).write_bytes(b"x")
        os.utime(out / name, (start + 10 + 2 * i, start + 10 + 2 * i))
    (out / ".c2fseg_outputs").mkdir()
    report = {"cases": [
        {"case": "a", "status": "ok", "timings": {"read": 1.0, "coarse": 3.0}, "roi": {"shape_zyx": [1, 2, 3]}},
        {"case": "b", "status": "ok", "timings": {"read": 0.5, "coarse": 1.0}, "roi": None},
        {"case": "c", "status": "ok", "timings": {"read": 0.5, "coarse": 2.0}, "roi": None},
        {"case": "d", "status": "failed", "timings": {}, "roi": None},
    ]}
    (out / e2e.REPORT_NAME).write_text(json.dumps(report))
    return out


def test_summary_measures_from_process_start_to_last_file(tmp_path):
    start = 1_000_000.0
    out = fake_run(tmp_path, start)
    res_path = tmp_path / "res" / "predict_final.json"
    assert e2e.main(["--start", str(start), "--end", str(start + 15), "--output", str(out),
                     "--rc", "3", "--out", str(res_path)]) == 0
    res = json.loads(res_path.read_text())
    assert res["outputs_written"] == 3 and res["exit_code"] == 3
    assert res["process_start_to_first_file_written_s"] == 10.0
    assert res["process_start_to_last_file_written_s"] == 14.0
    assert res["process_wall_s"] == 15.0
    assert res["per_case_s"] == [4.0, 1.5, 2.5] and res["first_case_s"] == 4.0
    assert res["later_cases_median_s"] == 2.0
    assert res["statuses"]["d"] == "failed" and res["roi_shapes_zyx"]["a"] == [1, 2, 3]
    assert res["report"]["cases"][0]["case"] == "a"


def test_summary_without_outputs_or_report(tmp_path):
    res = e2e.summarize(0.0, 5.0, tmp_path / "missing", rc=1)
    assert res["outputs_written"] == 0 and res["process_start_to_last_file_written_s"] is None
    assert res["report"].startswith("no ")
