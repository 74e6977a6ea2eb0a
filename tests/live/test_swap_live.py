"""The lifecycle on the live kernel: the swap, collapse (a forced khugepaged scan included) and KSM
stories agree with the model (or are unsupported for the reason given); the swap file cowlab
makes is journalled and gone afterwards — on exit, after a SIGKILL and via `cowlab live
--restore` — and ksmd's and khugepaged's knobs are as before."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowlab.live.cli import match_kernel
from cowlab.live.compare import Options, run_case
from cowlab.live.driver import LiveMachine
from cowlab.live.journal import SystemChangeRefused, SystemChanges, restore_from_journal
from cowlab.live.khugepaged import knob_paths
from cowlab.live.observe import PM_SWAP, read_pagemap
from cowlab.live.scenario import Limits
from cowlab.live.swapdev import PAGE_CLUSTER, SWAPFILE, active_swaps, swapfile_problem
from cowlab.live.system import read_knob
from cowlab.scenario import load_scenario
from tests.live.helpers import kill_when_ready, needs_live_kernel, restore_command, small_pages

pytestmark = needs_live_kernel
ROOT = Path(__file__).resolve().parents[2]
STORIES = sorted(
    p for d in ("swap", "collapse", "ksm") for p in (ROOT / "examples" / d).glob("*.yaml")
)
MATCHED = match_kernel(platform.release())
# the stories that cannot run live, and the reason the report gives
UNSUPPORTED = {
    "write_under_writeback.yaml": "until writeback: on the live swap file",
}
PAGE = 4096

CHILD = """
import sys, time
from cowlab.live.journal import SystemChanges
with SystemChanges(allow_system_changes=True, journal=sys.argv[1]) as changes:
    changes.enable_swap()
    print("ready", flush=True)
    time.sleep(60)
"""


KSM_KNOBS = ("run", "pages_to_scan", "sleep_millisecs", "pages_shared", "pages_sharing")


def machine_swap_state() -> tuple[list[str], bool, list[str], list[str], str]:
    """What must be the same before and after: the active swap areas, no swap file left,
    vm.page-cluster, ksmd's knobs and counters, and khugepaged's knobs."""
    ksm = [(Path("/sys/kernel/mm/ksm") / k).read_text().strip() for k in KSM_KNOBS]
    khugepaged = [read_knob(k) for k in knob_paths()]
    return active_swaps(), Path(SWAPFILE).exists(), ksm, khugepaged, read_knob(PAGE_CLUSTER)


@pytest.fixture
def untouched() -> Iterator[None]:
    """The swap file must not exist before; afterwards the machine's swap is as it was."""
    problem = swapfile_problem()
    if problem:
        pytest.skip(problem)
    before = machine_swap_state()
    yield
    assert machine_swap_state() == before


@pytest.fixture(scope="module")
def machine() -> Iterator[LiveMachine]:
    with LiveMachine() as m:
        yield m


@pytest.mark.skipif(MATCHED is None, reason=f"no model kernel matches {platform.release()}")
@pytest.mark.parametrize("path", STORIES, ids=[p.stem for p in STORIES])
def test_lifecycle_story_agrees_with_the_live_kernel(
    path: Path, machine: LiveMachine, tmp_path: Path, untouched: None
) -> None:
    assert MATCHED is not None
    with SystemChanges(allow_system_changes=True, journal=tmp_path / "j.json") as changes:
        opts = Options(MATCHED, Limits(allow_system_changes=True))
        result = run_case(load_scenario(path), opts, machine, changes)
    if path.name in UNSUPPORTED:
        assert result.status == "unsupported" and UNSUPPORTED[path.name] in result.reason
        return
    shown = [d.describe() for d in result.differences]
    assert result.status == "agree", (result.status, result.reason, result.step, shown)


def test_pageout_swaps_the_page_out(machine: LiveMachine, tmp_path: Path, untouched: None) -> None:
    """MADV_PAGEOUT with the swap file: pagemap shows a swap entry; the bytes come back."""
    with SystemChanges(allow_system_changes=True, journal=tmp_path / "j.json") as changes:
        changes.enable_swap()
        assert SWAPFILE in active_swaps()
        proc = machine.spawn()
        addr = small_pages(proc, 2)
        proc.write(addr, b"swapped")
        proc.madvise(addr, PAGE, "pageout")
        entry = int(read_pagemap(proc.pid, addr, 1)[0])
        assert entry >> PM_SWAP & 1
        assert proc.read(addr, 7) == b"swapped"
        machine.reset()


def test_swap_needs_permission(tmp_path: Path, untouched: None) -> None:
    with (
        SystemChanges(journal=tmp_path / "j.json") as changes,
        pytest.raises(SystemChangeRefused, match="swap"),
    ):
        changes.enable_swap()


def test_swap_device_undone_after_sigkill(tmp_path: Path, untouched: None) -> None:
    journal = tmp_path / "j.json"
    kill_when_ready(CHILD, str(journal))
    assert SWAPFILE in active_swaps() and journal.exists()
    undone = restore_from_journal(journal)
    # the swap file and, journalled before it, page-cluster (readahead off with the area)
    assert [(e["kind"], e["path"]) for e in undone] == [
        ("sysfs", PAGE_CLUSTER),
        ("swapfile", SWAPFILE),
    ]
    assert not journal.exists()
    assert SWAPFILE not in active_swaps() and not Path(SWAPFILE).exists()


def test_restore_command_undoes_the_swap_device(tmp_path: Path, untouched: None) -> None:
    journal = tmp_path / "j.json"
    kill_when_ready(CHILD, str(journal))
    restore_command(journal)
    assert SWAPFILE not in active_swaps() and not Path(SWAPFILE).exists()
