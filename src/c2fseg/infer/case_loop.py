"""The loop that turns a folder of CTs into one label map per case, shared by every command.

``predict`` (:mod:`c2fseg.infer.batch`) and ``pseudolabel`` (:mod:`c2fseg.infer.pseudolabel`)
differ only in how they predict a case and what they report. :class:`CaseLoop` does the rest,
the same way for both:

1. each case is triaged: an unusable input fails; the output records
   (:meth:`~c2fseg.infer.outputs.OutputRecords.decide`) keep (skip) a finished output of ours,
   or say to run or redo the case; a file at the output path that c2fseg did not write fails it;
2. a one-deep prefetch thread reads case i+1 while case i is predicted;
3. the command's ``predict(case, volume)`` callback returns a :class:`Prediction`;
4. its label map is written atomically with the input's exact geometry and recorded;
5. one bad case never stops the loop: any exception becomes a failed :class:`CaseOutcome`
   with the reason (a full disk included: that case fails, the loop goes on);
6. every outcome goes to the command's ``on_outcome`` callback (its report line), failures can
   be printed as they happen, a tqdm bar shows progress, and ``after_case`` runs after each
   case that was run (``predict`` rewrites its run report there).

Outputs are ``<out_dir>/<case>.nii.gz`` (FLARE naming: input ``<case>_0000.nii.gz``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from c2fseg.fileutil import WriteError
from c2fseg.infer.outputs import ForeignOutputError, OutputRecords
from c2fseg.io import CaseInput, ImageReadError, Volume, read_image, write_labels


@dataclass
class Prediction:
    """What a command's predict callback returns for one case."""

    labels: np.ndarray  # canonical label map, written with the input's geometry
    status: str = "ok"  # ok or empty
    reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step of the prediction
    info: dict = field(default_factory=dict)  # stored in the output's record
    detail: Any = None  # the command's own result, handed back in the outcome


@dataclass
class CaseOutcome:
    """What happened to one case."""

    case: CaseInput
    output: Path
    status: str  # ok, empty, skipped or failed
    reason: str = ""
    ran: bool = False  # went through prediction (False: failed or skipped at triage)
    record: dict | None = None  # skipped: the kept output's record
    volume: Volume | None = None  # the CT, once read
    prediction: Prediction | None = None  # once predicted (also when writing then failed)
    timings: dict[str, float] = field(default_factory=dict)  # read, the prediction's, write


def output_path(out_dir: Path, case: CaseInput) -> Path:
    """``<out_dir>/<case>.nii.gz`` (FLARE naming)."""
    return Path(out_dir) / f"{case.case_id}.nii.gz"


def read_case(path: Path) -> tuple[Volume, float]:
    """Read one CT (runs in the prefetch thread); returns (volume, seconds)."""
    t0 = time.perf_counter()
    volume = read_image(path)
    return volume, round(time.perf_counter() - t0, 4)


def failure_reason(exc: Exception) -> str:
    """A failed case's reason: our own errors say it all, others get their type in front."""
    if isinstance(exc, (ImageReadError, WriteError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass
class CaseLoop:
    """Triage, read ahead, predict, write and record a list of cases into one output folder."""

    records: OutputRecords
    desc: str  # the progress bar's label, e.g. "predict" or "pseudolabel coarse"
    overwrite: bool = False
    progress: bool = True
    announce: str | None = None  # prefix of a line printed per failed case, e.g. "c2fseg predict"

    def run(
        self,
        cases: list[CaseInput],
        out_dir: Path,
        predict: Callable[[CaseInput, Volume], Prediction],
        on_outcome: Callable[[CaseOutcome], None],
        after_case: Callable[[], None] | None = None,
    ) -> None:
        """Give every case's outcome to ``on_outcome``: triaged ones first, then those run, in order."""
        jobs = []
        for case in cases:
            out = output_path(out_dir, case)
            outcome = self.triage(case, out)
            if outcome is None:
                jobs.append((case, out))
            else:
                self.deliver(outcome, on_outcome)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="c2fseg-read") as reader:
            for case, out, read in tqdm(self.read_ahead(jobs, reader), total=len(jobs),
                                        desc=self.desc, unit="case", disable=not self.progress):
                self.deliver(self.predict_and_write(case, out, read, predict), on_outcome)
                if after_case is not None:
                    after_case()

    def triage(self, case: CaseInput, out: Path) -> CaseOutcome | None:
        """The outcome of a case that is not run (unusable, blocked, kept), or None to run it."""
        if not case.ok:
            return CaseOutcome(case, out, "failed", case.error or "unusable input")
        try:
            decision = self.records.decide(out, case.path, overwrite=self.overwrite)
        except (ForeignOutputError, OSError) as exc:
            return CaseOutcome(case, out, "failed", str(exc))
        if decision.action == "skip":
            return CaseOutcome(case, out, "skipped", record=decision.record or {})
        return None

    @staticmethod
    def read_ahead(jobs: list, reader: ThreadPoolExecutor) -> Iterator[tuple[CaseInput, Path, Future]]:
        """(case, output, future of its read), submitting the next case's read before yielding."""
        pending = reader.submit(read_case, jobs[0][0].path) if jobs else None
        for i, (case, out) in enumerate(jobs):
            current = pending
            pending = reader.submit(read_case, jobs[i + 1][0].path) if i + 1 < len(jobs) else None
            yield case, out, current

    def predict_and_write(self, case: CaseInput, out: Path, read: Future,
                          predict: Callable[[CaseInput, Volume], Prediction]) -> CaseOutcome:
        """Predict one case and write its output; any failure becomes a 'failed' outcome."""
        outcome = CaseOutcome(case, out, "failed", ran=True)
        try:
            outcome.volume, read_s = read.result()
            outcome.prediction = pred = predict(case, outcome.volume)
            t0 = time.perf_counter()
            self.records.write(out, case.path,
                               partial(write_labels, pred.labels, outcome.volume.geometry),
                               info=pred.info)
            write_s = round(time.perf_counter() - t0, 4)
        except Exception as exc:  # one bad case must not stop the batch; the reason is reported
            outcome.reason = failure_reason(exc)
            return outcome
        outcome.status, outcome.reason = pred.status, pred.reason
        outcome.timings = {"read": read_s, **pred.timings, "write": write_s}
        return outcome

    def deliver(self, outcome: CaseOutcome, on_outcome: Callable[[CaseOutcome], None]) -> None:
        """Hand an outcome to the command and print a failure line if asked to."""
        if outcome.status == "failed" and self.announce:
            tqdm.write(f"{self.announce}: {outcome.case.case_id} failed: {outcome.reason}")
        on_outcome(outcome)
