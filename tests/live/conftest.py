"""tests/live: a skip fails the run under CI (tests/live/ci_skips.py)."""

from tests.live.ci_skips import pytest_runtest_makereport

__all__ = ["pytest_runtest_makereport"]
