"""Pseudo-label a folder of CTs with one stage model (e.g. coarse labels for the tumor stage's data).

``pseudolabel_folder`` loads the stage once, splits the sorted case list round-robin into
``num_parts`` disjoint parts (run parts on several machines or GPUs), and writes
``<out>/<case>.nii.gz`` atomically with each input's exact geometry. Like ``predict`` it only
ever skips or replaces files it wrote itself (:mod:`c2fseg.infer.outputs`): a rerun keeps a
recorded, unchanged output of the same stage from the same, unchanged input, redoes its other
outputs, and never touches a file it did not write (that case fails, naming the file). Reading the
next CT overlaps the current prediction (one-deep prefetch thread).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

from c2fseg.labels import check_stage


def select_part(items: list, part: int, num_parts: int) -> list:
    """Items ``part, part + num_parts, ...``: the parts are disjoint and together give every item."""
    if num_parts < 1 or not 0 <= part < num_parts:
        raise ValueError(f"part must be in 0..num_parts-1 and num_parts >= 1 (got part {part}, num_parts {num_parts})")
    return items[part::num_parts]


def _read(path: Path):
    from c2fseg.io import read_image

    t0 = time.perf_counter()
    return read_image(path), time.perf_counter() - t0


def pseudolabel_folder(
    stage: str,
    weights_dir: str | os.PathLike | None,
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    part: int = 0,
    num_parts: int = 1,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Label this part's cases of ``in_dir`` with ``stage``; returns a summary dict.

    The summary lists ``ok``, ``skipped`` (our valid output kept) and ``failed`` ({case: reason};
    also a case whose output path holds a file c2fseg did not write),
    plus the part, device and timings. Bad folders raise :class:`c2fseg.io.FolderError`, missing
    or damaged weights :class:`c2fseg.weights.WeightsError`, before any case is touched.
    """
    from tqdm import tqdm

    from c2fseg.infer.outputs import ForeignOutputError, OutputRecords
    from c2fseg.infer.stage_model import StageModel
    from c2fseg.io import check_output_dir, find_cases, write_labels
    from c2fseg.weights import WeightsError, stage_dir_for

    check_stage(stage)
    cases = select_part(find_cases(in_dir), part, num_parts)
    out = check_output_dir(in_dir, out_dir)
    model = StageModel.load(stage_dir_for(weights_dir, stage), device)
    if model.stage != stage:
        raise WeightsError(f"{model.manifest['stage_dir']} holds the {model.stage!r} stage, not {stage!r}")
    summary: dict = {"stage": stage, "part": part, "num_parts": num_parts, "device": str(model.device),
                     "precision": model.precision, "ok": [], "skipped": [], "failed": {}, "seconds": {}}
    records = OutputRecords(out, f"pseudolabel:{stage}")
    todo = []
    for case in cases:
        target = out / f"{case.case_id}.nii.gz"
        if case.error:
            summary["failed"][case.case_id] = case.error
            continue
        try:
            action = records.decide(target, case.path, overwrite=overwrite).action
        except (ForeignOutputError, OSError) as exc:
            summary["failed"][case.case_id] = str(exc)
            continue
        if action == "skip":
            summary["skipped"].append(case.case_id)
        else:
            todo.append((case, target))
    with ThreadPoolExecutor(max_workers=1) as pool:
        future: Future | None = pool.submit(_read, todo[0][0].path) if todo else None
        for i, (case, target) in enumerate(tqdm(todo, desc=f"pseudolabel {stage}", unit="case", disable=not progress)):
            current = future
            future = pool.submit(_read, todo[i + 1][0].path) if i + 1 < len(todo) else None
            try:
                volume, read_s = current.result()
                t0 = time.perf_counter()
                labels = model.predict(volume.array, volume.spacing).labels.cpu().numpy()
                records.write(target, case.path, partial(write_labels, labels, volume.geometry),
                              info={"stage": stage})
                summary["seconds"][case.case_id] = round(read_s + time.perf_counter() - t0, 3)
                summary["ok"].append(case.case_id)
            except Exception as exc:  # one bad case must not stop the folder; reason is reported
                summary["failed"][case.case_id] = f"{type(exc).__name__}: {exc}"
    return summary
