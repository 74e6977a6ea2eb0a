"""The cow.c matrix scenarios on the live kernel against the matched model kernel.

Every case runs or says why not: io_uring can register only writable long-term pins and this
kernel has no gup_test, so the R/O long-term pin cases (#9-#14) are unsupported live. The
swapped-out backings run with a swap file cowlab makes for the module and removes afterwards.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowlab.live.cli import match_kernel
from cowlab.live.compare import Options, run_case
from cowlab.live.driver import LiveMachine
from cowlab.live.journal import SystemChanges
from cowlab.live.scenario import Limits
from cowlab.scenario import load_scenario
from tests.live.helpers import needs_live_kernel

pytestmark = needs_live_kernel
ROOT = Path(__file__).resolve().parents[2]
COW = sorted((ROOT / "examples" / "cow").glob("*.yaml"))
MATCHED = match_kernel(platform.release())
# io_uring registers only writable long-term pins and this kernel has no gup_test, so the R/O
# long-term pin cases (#9-#14) are unsupported live, for this reason; every other case agrees.
RO_PIN_CASES = [
    f"{pin}_{state}"
    for pin in ("ro_pin", "ro_fast_pin")
    for state in ("exclusive", "shared", "previously_shared")
]
SWAPPED = ("swap_base", "swap_single_pte", "swap_thp", "swap_pte_thp")
BACKINGS = ("base", "single_pte", "thp", "pte_thp", "partial_mremap", "partial_shared", *SWAPPED)
UNSUPPORTED = {
    f"{case}__{backing}": "io_uring registers long-term pins with FOLL_WRITE only"
    for case in RO_PIN_CASES
    for backing in BACKINGS
}


@pytest.fixture(scope="module")
def machine() -> Iterator[LiveMachine]:
    with LiveMachine() as m:
        yield m


@pytest.fixture(scope="module")
def changes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemChanges]:
    """The swap file for the swapped-out backings (journalled, removed at the end)."""
    journal = tmp_path_factory.mktemp("journal") / "j.json"
    with SystemChanges(allow_system_changes=True, journal=journal) as c:
        yield c


@pytest.mark.skipif(MATCHED is None, reason=f"no model kernel matches {platform.release()}")
@pytest.mark.parametrize("path", COW, ids=[p.stem for p in COW])
def test_cow_case_agrees_with_the_live_kernel(
    path: Path, machine: LiveMachine, changes: SystemChanges
) -> None:
    assert MATCHED is not None
    swapped = "__swap_" in path.stem
    opts = Options(MATCHED, Limits(allow_system_changes=swapped))
    result = run_case(load_scenario(path), opts, machine, changes if swapped else None)
    if path.stem in UNSUPPORTED:
        assert result.status == "unsupported" and UNSUPPORTED[path.stem] in result.reason
        return
    shown = [d.describe() for d in result.differences]
    assert result.status == "agree", (result.status, result.reason, result.step, shown)


def test_the_expected_unsupported_cases_exist() -> None:
    assert len(UNSUPPORTED) == 60 and set(UNSUPPORTED) <= {p.stem for p in COW}
