"""The end-to-end figure of a ``predict_final.py`` run: process start to last file written.

``python -m c2fseg.bench.e2e --start EPOCH --end EPOCH --output DIR --rc N --out RESULT.json``
after the GPU script ran ``predict_final.py`` on a folder of phantoms. ``--start`` is the wall
clock (seconds since the epoch) just before the process was launched, so interpreter start,
imports and model loading count, as they do for a FLARE user. Per case the run report's own
timings are summed; the first case also pays cuDNN autotuning, so the later ones are the warm
figure. The whole run report is embedded in the result.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from c2fseg.fileutil import write_text_atomic

REPORT_NAME = "c2fseg_report.json"


def written_outputs(output_dir: Path) -> dict[str, float]:
    """Label maps in ``output_dir`` (not hidden) -> modification time (epoch seconds)."""
    return {p.name: p.stat().st_mtime for p in sorted(output_dir.glob("*.nii.gz"))
            if not p.name.startswith(".")}


def case_seconds(case: dict) -> float:
    """Sum of a report case's stage timings (read to write)."""
    return round(sum(float(v) for v in case.get("timings", {}).values()), 4)


def summarize(start: float, end: float, output_dir: Path, rc: int, report_path: Path | None = None) -> dict:
    """The end-to-end figures of one predict run (see the module docstring)."""
    report_path = report_path or output_dir / REPORT_NAME
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else None
    outputs = written_outputs(output_dir) if output_dir.is_dir() else {}
    cases = (report or {}).get("cases", [])
    per_case = [case_seconds(c) for c in cases if c.get("status") in ("ok", "empty")]
    last = max(outputs.values()) if outputs else None
    first = min(outputs.values()) if outputs else None
    return {
        "exit_code": rc,
        "outputs_written": len(outputs),
        "process_start_to_last_file_written_s": None if last is None else round(last - start, 3),
        "process_start_to_first_file_written_s": None if first is None else round(first - start, 3),
        "process_wall_s": round(end - start, 3),
        "per_case_s": per_case,
        "first_case_s": per_case[0] if per_case else None,
        "later_cases_median_s": round(statistics.median(per_case[1:]), 4) if len(per_case) > 1 else None,
        "statuses": {c.get("case"): c.get("status") for c in cases},
        "roi_shapes_zyx": {c.get("case"): (c.get("roi") or {}).get("shape_zyx") for c in cases},
        "report": report if report is not None else f"no {report_path}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=float, required=True, help="epoch seconds before launch")
    parser.add_argument("--end", type=float, required=True, help="epoch seconds after exit")
    parser.add_argument("--output", type=Path, required=True, help="predict_final.py's -o folder")
    parser.add_argument("--rc", type=int, default=0, help="predict_final.py's exit code")
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True, help="result JSON")
    args = parser.parse_args(argv)
    result = summarize(args.start, args.end, args.output, args.rc, args.report)
    write_text_atomic(args.out, json.dumps(result, indent=2, default=str) + "\n")
    shown = {k: v for k, v in result.items() if k != "report"}
    print(json.dumps(shown, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
