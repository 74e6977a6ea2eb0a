"""The CI rule of tests/live/ci_skips.py: with CI set a skipped test fails, without it it skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIPPING = """
import pytest


@pytest.mark.skipif(True, reason="a marker skip")
def test_marked():
    pass


def test_inside():
    pytest.skip("the kernel could not allocate a PMD-sized THP")


@pytest.mark.xfail(reason="expected to fail", strict=True)
def test_xfail():
    assert False


def test_passes():
    pass
"""


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_skipping.py"
    test.write_text(SKIPPING)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    args = ["-p", "tests.live.ci_skips", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", *args, str(test)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    return run


@pytest.mark.parametrize("ci", ["1", "true"])
def test_under_ci_a_skip_fails_with_its_reason(tmp_path: Path, ci: str) -> None:
    run = _run(tmp_path, ci)
    out = run.stdout
    # a skip at setup (a skipif marker) is reported as an error, one in the test as a failure
    assert run.returncode == 1 and "1 failed, 1 passed, 1 xfailed, 1 error" in out, out
    assert "skipped under CI (CI is set)" in out and "a marker skip" in out
    assert "could not allocate a PMD-sized THP" in out


def test_without_ci_a_skip_is_a_skip(tmp_path: Path) -> None:
    run = _run(tmp_path, None)
    assert run.returncode == 0 and "1 passed, 2 skipped, 1 xfailed" in run.stdout, run.stdout
