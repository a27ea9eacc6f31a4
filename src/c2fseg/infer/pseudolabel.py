"""Pseudo-label a folder of CTs with one stage model (e.g. coarse labels for the tumor stage's data).

``pseudolabel_folder`` loads the stage once, splits the sorted case list round-robin into
``num_parts`` disjoint parts (run parts on several machines or GPUs), and writes
``<out>/<case>.nii.gz`` atomically with each input's exact geometry. It runs the same case loop
as ``predict`` (:mod:`c2fseg.infer.case_loop`): it only ever skips or replaces files it wrote
itself (:mod:`c2fseg.infer.outputs`): a rerun keeps a recorded, unchanged output of the same
stage from the same, unchanged input, redoes its other outputs, and never touches a file it did
not write (that case fails, naming the file). Reading the next CT overlaps the current
prediction (one-deep prefetch thread); one bad case (a full disk included) never stops the rest.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from c2fseg.labels import check_stage

if TYPE_CHECKING:  # the loop's imports (numpy, SimpleITK...) load only when a folder is labelled
    from c2fseg.infer.case_loop import CaseOutcome, Prediction
    from c2fseg.io import CaseInput, Volume


def select_part(items: list, part: int, num_parts: int) -> list:
    """Items ``part, part + num_parts, ...``: the parts are disjoint and together give every item."""
    if num_parts < 1 or not 0 <= part < num_parts:
        raise ValueError(f"part must be in 0..num_parts-1 and num_parts >= 1 (got part {part}, num_parts {num_parts})")
    return items[part::num_parts]


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
    from c2fseg.infer.case_loop import CaseLoop, Prediction
    from c2fseg.infer.outputs import OutputRecords
    from c2fseg.infer.postprocess import keep_largest_components
    from c2fseg.infer.stage_model import StageModel
    from c2fseg.io import check_output_dir, find_cases
    from c2fseg.weights import WeightsError, stage_dir_for

    check_stage(stage)
    cases = select_part(find_cases(in_dir), part, num_parts)
    out = check_output_dir(in_dir, out_dir)
    model = StageModel.load(stage_dir_for(weights_dir, stage), device)
    if model.stage != stage:
        raise WeightsError(f"{model.manifest['stage_dir']} holds the {model.stage!r} stage, not {stage!r}")
    summary: dict = {"stage": stage, "part": part, "num_parts": num_parts, "device": str(model.device),
                     "precision": model.precision, "ok": [], "skipped": [], "failed": {}, "seconds": {}}

    keep = pseudo_label_keep_largest(model)

    def predict(case: CaseInput, volume: Volume) -> Prediction:
        t0 = time.perf_counter()
        labels = model.predict(volume.array, volume.spacing).labels.cpu().numpy()
        if keep:
            labels = keep_largest_components(labels, keep)
        return Prediction(labels, timings={"predict": round(time.perf_counter() - t0, 4)},
                          info={"stage": stage, "keep_largest": keep})

    loop = CaseLoop(OutputRecords(out, f"pseudolabel:{stage}"), f"pseudolabel {stage}",
                    overwrite=overwrite, progress=progress)
    loop.run(cases, out, predict, lambda outcome: add_to_summary(summary, outcome))
    return summary


def pseudo_label_keep_largest(model) -> list[int]:
    """Labels whose largest connected component alone is kept in a pseudo label: the stage's
    ``keep_largest`` inference setting (every organ is one object; a stray blob far away would
    otherwise become a training target)."""
    from c2fseg.infer.cascade import stage_inference

    return [int(v) for v in stage_inference(model).get("keep_largest") or []]


def add_to_summary(summary: dict, outcome: CaseOutcome) -> None:
    """Put one case's :class:`~c2fseg.infer.case_loop.CaseOutcome` into the summary."""
    case_id = outcome.case.case_id
    if outcome.status == "skipped":
        summary["skipped"].append(case_id)
    elif outcome.status == "failed":
        summary["failed"][case_id] = outcome.reason
    else:
        summary["seconds"][case_id] = round(sum(outcome.timings.values()), 3)
        summary["ok"].append(case_id)
