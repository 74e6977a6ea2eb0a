"""Hypothesis profiles: `ci` (the default) runs the same programs every time; `explore` draws new
ones from a seed and runs many more. See docs/testing.md.

    python -m pytest tests/test_stateful.py --hypothesis-profile=explore --hypothesis-seed=7
    COWLAB_EXPLORE_EXAMPLES=5000 python -m pytest ... --hypothesis-profile=explore
"""

from __future__ import annotations

import os

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
