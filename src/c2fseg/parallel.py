"""Run one function per case in worker processes without losing finished results to one crash.

A worker process that dies (killed for memory, a segfault in a native library) breaks the whole
``ProcessPoolExecutor``: every unfinished future then fails with ``BrokenProcessPool``. Here the
results already finished are kept and each unfinished case is re-run alone in a fresh
one-process pool, so a case that kills its worker again fails on its own, with a reason, and the
other cases still get their results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

__all__ = ["WORKER_DIED", "run_cases"]

#: Failure reason of a case whose worker process died even when it ran alone.
WORKER_DIED = (
    "the worker process died while processing this case (killed for lack of memory or a crash "
    "in a native library); rerun with --workers 1 or free memory"
)

Task = tuple[str, tuple]  # (case id, arguments of fn)
Outcome = tuple[str, Any, str | None]  # (case id, result or None, failure reason or None)


def run_cases(fn: Callable[..., Any], tasks: Sequence[Task], workers: int,
              desc: str = "cases") -> list[Outcome]:
    """``fn(*args)`` for every ``(case, args)`` task, in a process pool (inline for one worker).

    Returns ``(case, result, None)`` or ``(case, None, reason)`` per task, in task order. An
    exception raised by ``fn`` fails only its case; ``fn`` must be a module-level function.
    """
    from tqdm import tqdm

    done: dict[str, Outcome] = {}
    with tqdm(total=len(tasks), desc=desc, unit="case", disable=None) as bar:
        if workers <= 1 or len(tasks) <= 1:
            for case, args in tasks:
                done[case] = _call_inline(fn, case, args)
                bar.update()
        else:
            _run_pool(fn, tasks, min(workers, len(tasks)), done, bar)
            unfinished = [(case, args) for case, args in tasks if case not in done]
            if unfinished:
                bar.write(f"{desc}: a worker process died; re-running {len(unfinished)} unfinished "
                          "case(s) one at a time")
            for case, args in unfinished:
                done[case] = _run_alone(fn, case, args)
                bar.update()
    return [done[case] for case, _ in tasks]


def _call_inline(fn: Callable[..., Any], case: str, args: tuple) -> Outcome:
    try:
        return case, fn(*args), None
    except Exception as exc:  # noqa: BLE001 - one bad case must not stop the others
        return case, None, f"{type(exc).__name__}: {exc}"


def _run_pool(fn: Callable[..., Any], tasks: Sequence[Task], workers: int,
              done: dict[str, Outcome], bar) -> None:
    """Fill ``done`` with every case that finished before the pool broke (if it broke)."""
    try:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(fn, *args): case for case, args in tasks}
            for future in as_completed(futures):
                case = futures[future]
                try:
                    done[case] = (case, future.result(), None)
                except BrokenProcessPool:
                    continue  # re-run alone afterwards
                except Exception as exc:  # noqa: BLE001
                    done[case] = (case, None, f"{type(exc).__name__}: {exc}")
                bar.update()
    except BrokenProcessPool:
        pass  # raised by submit() or shutdown when a worker died early


def _run_alone(fn: Callable[..., Any], case: str, args: tuple) -> Outcome:
    """One case in its own one-process pool, so a crash names the case that caused it."""
    try:
        with ProcessPoolExecutor(max_workers=1) as pool:
            return case, pool.submit(fn, *args).result(), None
    except BrokenProcessPool:
        return case, None, WORKER_DIED
    except Exception as exc:  # noqa: BLE001
        return case, None, f"{type(exc).__name__}: {exc}"
