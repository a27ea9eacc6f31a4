"""Fixtures and hooks shared by the whole test suite.

Real data: a test marked ``@pytest.mark.real_data("file", ...)`` is skipped when a file is not in
the shared folder (see real_data.py), and the terminal summary lists every such test with what
happened to it, so a CI log shows whether the real-CT checks ran.
"""

from __future__ import annotations

from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import pytest

from real_data import CT, find_real, missing_reason

REAL_MARK = "real_data"


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", f"{REAL_MARK}(*files): needs files of the shared data/real/ folder (default: the CT)")


def pytest_runtest_setup(item) -> None:
    """Skip a real-data test whose files are not there, saying where they were looked for."""
    for mark in item.iter_markers(REAL_MARK):
        reason = missing_reason(mark.args or (CT,))
        if reason:
            pytest.skip(reason)


def _real_data_outcomes(stats: dict) -> dict[str, tuple[str, str]]:
    """nodeid -> (outcome, detail) for every real-data test in pytest's collected reports."""
    outcomes: dict[str, tuple[str, str]] = {}
    for reports in stats.values():
        for rep in reports:
            if REAL_MARK not in getattr(rep, "keywords", {}) or not hasattr(rep, "when"):
                continue
            if rep.skipped:
                detail = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
                outcomes[rep.nodeid] = ("skipped", detail.removeprefix("Skipped: "))
            elif rep.failed:
                outcomes[rep.nodeid] = ("failed", f"in {rep.when}")
            elif rep.when == "call" and rep.nodeid not in outcomes:
                outcomes[rep.nodeid] = ("ran", "passed")
    return outcomes


def pytest_terminal_summary(terminalreporter) -> None:
    """Which real-data tests ran and which were skipped (and why)."""
    outcomes = _real_data_outcomes(terminalreporter.stats)
    if not outcomes:
        return
    found = find_real(CT)
    terminalreporter.section("real-data tests")
    terminalreporter.write_line(f"real CT: {found if found else 'not found'}")
    for nodeid, (outcome, detail) in sorted(outcomes.items()):
        terminalreporter.write_line(f"{outcome:8s} {nodeid}" + ("" if outcome == "ran" else f": {detail}"))
    ran = sum(o == "ran" for o, _ in outcomes.values())
    terminalreporter.write_line(f"{ran} of {len(outcomes)} real-data tests ran")


def breaking_pool(marker: str) -> type:
    """A stand-in for ProcessPoolExecutor that runs tasks inline until a task whose arguments
    mention ``marker`` "kills" the pool: that task and every later one fail with
    BrokenProcessPool, as when the OS kills a worker."""

    class BreakingPool:
        def __init__(self, max_workers=None):
            self.broken = False

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, fn, *args):
            future = Future()
            if self.broken or any(marker in str(a) for a in args):
                self.broken = True
                future.set_exception(BrokenProcessPool("a child process terminated abruptly"))
            else:
                future.set_result(fn(*args))
            return future

    return BreakingPool


@pytest.fixture
def make_breaking_pool():
    """Factory fixture: ``make_breaking_pool("poison")`` -> a pool class that breaks on it."""
    return breaking_pool
