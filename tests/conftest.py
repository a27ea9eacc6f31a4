"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import pytest


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
