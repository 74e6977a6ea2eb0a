"""The cow.c matrix scenarios on the live kernel against the matched model kernel.

Every case runs or says why not: io_uring can register only writable long-term pins and this
kernel has no gup_test, so the R/O long-term pin cases (#9-#14) are unsupported live.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowlab.live.cli import match_kernel
from cowlab.live.compare import Options, run_case
from cowlab.live.driver import LiveMachine
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
BACKINGS = ("base", "single_pte", "thp", "pte_thp", "partial_mremap", "partial_shared")
UNSUPPORTED = {
    f"{case}__{backing}": "io_uring registers long-term pins with FOLL_WRITE only"
    for case in RO_PIN_CASES
    for backing in BACKINGS
}


@pytest.fixture(scope="module")
def machine() -> Iterator[LiveMachine]:
    with LiveMachine() as m:
        yield m


@pytest.mark.skipif(MATCHED is None, reason=f"no model kernel matches {platform.release()}")
@pytest.mark.parametrize("path", COW, ids=[p.stem for p in COW])
def test_cow_case_agrees_with_the_live_kernel(path: Path, machine: LiveMachine) -> None:
    assert MATCHED is not None
    result = run_case(load_scenario(path), Options(MATCHED), machine, None)
    if path.stem in UNSUPPORTED:
        assert result.status == "unsupported" and UNSUPPORTED[path.stem] in result.reason
        return
    shown = [d.describe() for d in result.differences]
    assert result.status == "agree", (result.status, result.reason, result.step, shown)


def test_the_expected_unsupported_cases_exist() -> None:
    assert len(UNSUPPORTED) == 36 and set(UNSUPPORTED) <= {p.stem for p in COW}
