"""A forced khugepaged scan on the live kernel (cowlab.live.khugepaged): the workers' fence keeps
khugepaged away until it is opened, a forced scan then collapses, the scan knobs are back at
once and every knob at the end of the run (also after a SIGKILL, through --restore), and a scan
whose result depends on the order of the processes is unsupported."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowlab.live.cli import match_kernel
from cowlab.live.compare import Options, run_case
from cowlab.live.driver import LiveMachine, LiveProcess
from cowlab.live.journal import SystemChanges
from cowlab.live.khugepaged import khugepaged_passes, knob_paths
from cowlab.live.system import read_knob
from cowlab.scenario import parse_scenario
from tests.live.helpers import (
    HPAGE,
    kill_when_ready,
    needs_live_kernel,
    restore_command,
    run_allowed,
)
from tests.test_live_khugepaged import SHARED_HALVES

pytestmark = needs_live_kernel
MATCHED = match_kernel(platform.release())
LIMITS = {"max_ptes_none": 511, "max_ptes_swap": 64, "max_ptes_shared": 256}  # 6.18 defaults

CHILD = """
import sys, time
import cowlab.live.khugepaged as kh
from cowlab.live.journal import SystemChanges

def hang(scans):
    print("ready", flush=True)
    time.sleep(60)

kh._wait_for = hang
with SystemChanges(allow_system_changes=True, journal=sys.argv[1]) as changes:
    kh.khugepaged_passes(changes, {"max_ptes_none": 7, "max_ptes_swap": 3, "max_ptes_shared": 5})
"""


def knobs() -> dict[Path, str]:
    return {k: read_knob(k) for k in knob_paths()}


@pytest.fixture
def untouched() -> Iterator[None]:
    """Every khugepaged knob a forced scan writes is as it was afterwards."""
    before = knobs()
    yield
    assert knobs() == before


def small_page_block(proc: LiveProcess) -> int:
    """A 2 MiB-aligned block of 512 written 4 KiB pages, then MADV_HUGEPAGE: khugepaged's work.
    (With transparent_hugepage/enabled=madvise the writes fault 4 KiB pages.)"""
    addr = proc.mmap(HPAGE, align=HPAGE)
    proc.write(addr, b"k" * HPAGE)
    proc.madvise(addr, HPAGE, "hugepage")
    return addr


def level(machine: LiveMachine, proc: LiveProcess, addr: int) -> str | None:
    return machine.snapshot([(proc, addr, HPAGE)]).regions[str(proc.pid)][0].level


def test_the_fence_holds_until_opened(tmp_path: Path, untouched: None) -> None:
    if read_knob("/sys/kernel/mm/transparent_hugepage/enabled") != "madvise":
        pytest.fail("this test needs transparent_hugepage/enabled=madvise (the machine's own)")
    with (
        LiveMachine() as m,
        SystemChanges(allow_system_changes=True, journal=tmp_path / "j.json") as changes,
    ):
        p = m.spawn()
        addr = small_page_block(p)
        assert level(m, p, addr) == "pte"
        assert khugepaged_passes(changes, LIMITS)  # fence up: khugepaged skips the mm
        assert level(m, p, addr) == "pte"
        p.open_fence()
        try:
            assert khugepaged_passes(changes, LIMITS)
        finally:
            p.close_fence()
        assert level(m, p, addr) == "pmd"
        assert p.read(addr + HPAGE - 1, 1) == b"k"


def test_scan_knobs_restored_after_a_sigkill(tmp_path: Path, untouched: None) -> None:
    journal = tmp_path / "j.json"
    before = knobs()
    kill_when_ready(CHILD, str(journal))
    during = knobs()
    assert [during[p] for p in knob_paths()] == ["0", str(1 << 24), "0", "7", "3", "5"]
    restore_command(journal)
    assert knobs() == before and not journal.exists()


@pytest.mark.skipif(MATCHED is None, reason=f"no model kernel matches {platform.release()}")
@pytest.mark.parametrize(
    ("upto", "status", "reason"),
    [(3, "agree", ""), (None, "unsupported", "depend on the order of the processes")],
    ids=["one-process", "order-dependent"],
)
def test_khugepaged_step(
    upto: int | None, status: str, reason: str, tmp_path: Path, untouched: None
) -> None:
    """SHARED_HALVES (tests/test_live_khugepaged.py) up to its first fork, then khugepaged: one
    collapse on both sides; all of it: the pass depends on the order, so unsupported."""
    steps = SHARED_HALVES.strip().splitlines()
    first = steps.index("steps:") + 1
    text = "\n".join(steps[: first + upto] if upto else steps) + "\n  - {op: khugepaged}\n"
    result = run_allowed(parse_scenario(text), tmp_path / "j.json")
    assert result.status == status and reason in result.reason, (result.status, result.reason)
    if status == "agree":
        assert result.steps_run == upto + 1


def test_khugepaged_needs_permission() -> None:
    text = SHARED_HALVES + "  - {op: khugepaged}\n"
    assert MATCHED is not None
    with LiveMachine() as m:
        result = run_case(parse_scenario(text), Options(MATCHED), m, None)
    assert result.status == "unsupported" and "--allow-system-changes" in result.reason
