"""Shared pieces of the live tests: the preflight skip and a PMD-mapped THP that may not come."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from cowlab.live.cli import match_kernel
from cowlab.live.compare import CaseResult, Options, Regions, run_case
from cowlab.live.driver import LiveMachine, LiveProcess
from cowlab.live.journal import SystemChanges
from cowlab.live.scenario import Limits
from cowlab.live.swapdev import LocalLruDrain
from cowlab.live.system import preflight
from cowlab.scenario import Scenario, parse_scenario
from cowlab.scenario.runner import Runner

MISSING = preflight()
needs_live_kernel = pytest.mark.skipif(
    bool(MISSING), reason="live kernel unavailable: " + " ".join(MISSING)
)
ROOT = Path(__file__).resolve().parents[2]
HPAGE = 2 << 20
PAGE = 4096
THP_TRIES = 3


def pmd_thp(proc: LiveProcess, fill: bytes = b"x") -> int:
    """A 2 MiB-aligned region mapped by one PMD THP (write-faulted); skips if none comes
    (a failure under CI: tests/live/ci_skips.py)."""
    for _ in range(THP_TRIES):
        addr = proc.mmap(HPAGE, align=HPAGE)
        proc.madvise(addr, HPAGE, "hugepage")
        proc.write(addr, fill)
        pages = proc.snapshot(addr, HPAGE, exact=False).regions[str(proc.pid)]
        if pages[0].level == "pmd" and pages[0].nr == 512:
            return addr
        proc.munmap(addr, HPAGE)  # fragmentation gave 4 KiB pages: try again
    pytest.skip("the kernel could not allocate a PMD-sized THP")


def small_pages(proc: LiveProcess, n: int) -> int:
    """n 4 KiB pages that khugepaged will leave alone (MADV_NOHUGEPAGE)."""
    addr = proc.mmap(n * PAGE)
    proc.madvise(addr, n * PAGE, "nohugepage")
    return addr


def run_model(text: str, kernel: str = "v4.5+6d0a07e") -> tuple[Runner, Regions]:
    """A scenario run on the model, and the regions a live comparison would observe."""
    scenario = parse_scenario(text)
    runner, regions = Runner(scenario, kernel), Regions()
    for name in scenario.processes:
        regions.add_proc(name)
    for step in scenario.steps:
        runner.run_step(step)
        regions.after(step, True)
    return runner, regions


def kill_when_ready(script: str, *args: str) -> None:
    """Run script in a child interpreter, wait for its "ready" line, then SIGKILL it."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    child.kill()
    child.wait()


def restore_command(journal: Path) -> str:
    """`cowlab live --restore --journal JOURNAL` must succeed; its standard output."""
    run = subprocess.run(
        [sys.executable, "-m", "cowlab.cli", "live", "--restore", "--journal", str(journal)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def run_allowed(scenario: Scenario, journal: Path) -> CaseResult:
    """One case on the model kernel matching this machine, with --allow-system-changes and a
    journal of its own."""
    kernel = match_kernel(platform.release())
    assert kernel is not None
    limits = Limits(allow_system_changes=True)
    with LiveMachine() as m, SystemChanges(allow_system_changes=True, journal=journal) as changes:
        return run_case(scenario, Options(kernel, limits), m, changes)


def record_local_drains(monkeypatch: pytest.MonkeyPatch) -> list[set[int]]:
    """The CPUs the driver may run on at each drain of its own CPU's batches, as they come."""
    drained_on: list[set[int]] = []
    local = LocalLruDrain.__call__

    def recorded(self: LocalLruDrain) -> None:
        drained_on.append(os.sched_getaffinity(0))
        local(self)

    monkeypatch.setattr(LocalLruDrain, "__call__", recorded)
    return drained_on
