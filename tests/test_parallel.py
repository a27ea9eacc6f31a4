"""run_cases: a worker process that dies costs only its own case, never the finished results."""

from __future__ import annotations

import operator
import os

from c2fseg.parallel import WORKER_DIED, run_cases


def test_real_worker_death_fails_only_that_case():
    """``os._exit`` in a worker breaks the real pool; the other cases still get results."""
    tasks = [("a", (abs, -1)), ("boom", (os._exit, 3)), ("c", (abs, -3)), ("d", (abs, -4))]
    outcomes = run_cases(operator.call, tasks, workers=2, desc="test")
    assert [case for case, _, _ in outcomes] == ["a", "boom", "c", "d"]
    assert {case: result for case, result, _ in outcomes if case != "boom"} == {"a": 1, "c": 3, "d": 4}
    assert outcomes[1] == ("boom", None, WORKER_DIED)


def test_exceptions_fail_their_case_inline_and_in_pool():
    tasks = [("ok", (int, "7")), ("bad", (int, "x"))]
    for workers in (1, 2):
        ok, bad = run_cases(operator.call, tasks, workers=workers)
        assert ok == ("ok", 7, None)
        assert bad[1] is None and bad[2].startswith("ValueError: invalid literal")
