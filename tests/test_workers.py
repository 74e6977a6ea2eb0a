"""Under pytest-xdist (the README's `-n auto`) the tests that must share a worker do
(tests/conftest.py's work_unit): every live test on one worker, one after another; each module
whose tests share cached model runs on one worker."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import work_unit

ROOT = Path(__file__).resolve().parent.parent
# quick tests, the live ones first: xdist's plain load scheduling sends the first N // 8 (at
# least 2) to one worker and the next as many to the other, so it would split these 9
LIVE_TESTS = [
    "tests/live/test_noise.py",
    "tests/live/test_arrays.py::test_a_snapshot_of_no_regions_is_empty",
    "tests/live/test_model_observe.py::test_anon_exclusive_is_compared_from_5_19",
    "tests/live/test_model_observe.py::test_minimise_keeps_a_failing_core",
    "tests/live/test_mthp_live.py::test_there_are_mthp_scenarios",
    "tests/live/test_random_swap_device.py"
    "::test_without_system_changes_every_program_keeps_the_swap_file",
    "tests/test_bench_live.py::test_parse_live_output_names_what_is_missing",
]
OTHERS = [
    "tests/test_timeline.py::test_an_unknown_release_names_the_range",
    "tests/test_readme.py::test_exactly_two_setup_commands",
]


def test_work_units() -> None:
    assert work_unit("tests/live/test_pins.py::test_x[v6.18]") == "live"
    assert work_unit("tests/test_bench_live.py::test_report_has_every_row[cc]") == "live"
    check = "tests/test_check.py::"
    assert work_unit(f"{check}test_policy_differences") == check
    assert work_unit(f"{check}test_fork_while_pinned_until_5_9[v5.8-True]") == check
    other = "tests/test_live_regressions.py::test_grow_over_a_hole_is_efault[v6.18]"
    assert work_unit(other) == other


def test_the_live_tests_run_on_one_worker() -> None:
    args = ["-n", "2", "-vv", "-p", "no:cacheprovider", *LIVE_TESTS, *OTHERS]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout
    ran = re.findall(r"^\[(gw\d+)\] .*PASSED (\S+)", done.stdout, flags=re.M)
    live = [worker for worker, test in ran if work_unit(test) == "live"]
    assert len(live) == 9 and len(live) > 2 * max(len(ran) // 8, 2), done.stdout
    assert len({worker for worker, _ in ran}) == 2, done.stdout
    assert len(set(live)) == 1, done.stdout
