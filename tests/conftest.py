"""Hypothesis profiles: `ci` (the default) runs the same programs every time; `explore` draws new
ones from a seed and runs many more. See docs/testing.md.

    python -m pytest tests/test_stateful.py --hypothesis-profile=explore --hypothesis-seed=7
    COWLAB_EXPLORE_EXAMPLES=5000 python -m pytest ... --hypothesis-profile=explore

Under pytest-xdist (`-n auto`, the README's test command) the tests that must not be spread over
workers are one work unit of xdist's scope scheduler (`work_unit`), run on one worker one after
another.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

SLOW_OK = [HealthCheck.too_slow, HealthCheck.filter_too_much]

settings.register_profile(
    "ci", derandomize=True, deadline=None, database=None, suppress_health_check=SLOW_OK
)
settings.register_profile(
    "explore",
    derandomize=False,
    max_examples=int(os.environ.get("COWLAB_EXPLORE_EXAMPLES", "2000")),
    deadline=None,
    database=None,
    suppress_health_check=SLOW_OK,
)
settings.load_profile("ci")

# every test that touches the live kernel: one live test's fixtures read sysfs knobs that another
# may be changing, so no two may run at once
LIVE = ("tests/live/", "tests/test_bench_live.py::")
# modules whose tests share cached model runs (a search per kernel, the cow.c matrix, the
# programs per kernel): on one worker each run is made once, not once per worker
CACHED = ("tests/test_check.py::", "tests/test_cow_matrix.py::", "tests/test_clone.py::")


def work_unit(nodeid: str) -> str:
    """The unit of tests that one worker runs in a row: "live", a module of CACHED, or the test
    alone."""
    if nodeid.startswith(LIVE):
        return "live"
    return next((module for module in CACHED if nodeid.startswith(module)), nodeid)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: called with -n
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnits(LoadScopeScheduling):
        """xdist's scope scheduler (units sent whole to the next free worker, the largest
        first) with work_unit for the scope."""

        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return WorkUnits(config, log)
