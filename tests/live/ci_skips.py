"""Under CI (the environment variable CI set, as .ci/run does), a skipped live test fails.

The live tests skip when the machine cannot run them: not root, no model kernel for this
kernel, or no PMD-sized THP to be had. On a developer's machine that is a skip; in CI, which runs
as root on a machine meant for them, a skip would hide that nothing was checked, so the skip is
reported as a failure with its reason. (tests/live/conftest.py loads this hook for tests/live.)
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

CI_VAR = "CI"


def _reason(longrepr: Any) -> str:
    """The skip reason out of a skip report's (file, line, reason) tuple, or its text."""
    return str(longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get(CI_VAR) and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under CI ({CI_VAR} is set), which must run every live test: "
            f"{_reason(report.longrepr)}"
        )
