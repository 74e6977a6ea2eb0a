"""Scenarios on the live kernel against the model: examples agree, other kernels disagree."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowlab.live.cli import match_kernel
from cowlab.live.compare import Attempt, Options, diff_regions, model_step, run_case
from cowlab.live.driver import LiveMachine
from cowlab.live.pages import Snapshot
from cowlab.live.scenario import SPLIT_HUGE_PAGES, Limits, LiveScenario
from cowlab.live.swapdev import LruDrain
from cowlab.scenario import load_scenario, parse_scenario
from cowlab.scenario.model import Scenario
from tests.live.helpers import needs_live_kernel, record_local_drains

pytestmark = needs_live_kernel
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
MATCHED = match_kernel(platform.release())
needs_matched_model = pytest.mark.skipif(
    MATCHED is None, reason=f"no model kernel matches this machine's {platform.release()}"
)


# The examples that cannot run live here, and why (a reason the report must give): every other
# example must agree. split_huge_pages needs debugfs, which this kind of machine does not mount.
UNSUPPORTED = {
    name: reason
    for name, reason, applies in [
        ("kirill_anon_vma.yaml", f"{SPLIT_HUGE_PAGES} is missing", not SPLIT_HUGE_PAGES.exists()),
    ]
    if applies
}


def cowlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cowlab.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def machine() -> Iterator[LiveMachine]:
    with LiveMachine() as m:
        yield m


# Scenarios name the kernels their *expectations* are written for; the live comparison checks
# observations, not expectations, so every example runs on the model kernel matching uname.
@needs_matched_model
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_agrees_with_the_live_kernel(path: Path, machine: LiveMachine) -> None:
    assert MATCHED is not None
    result = run_case(load_scenario(path), Options(MATCHED), machine, None)
    if path.name in UNSUPPORTED:
        assert result.status == "unsupported" and UNSUPPORTED[path.name] in result.reason
        return
    shown = [d.describe() for d in result.differences]
    assert result.status == "agree", (result.status, result.reason, result.step, shown)


def test_the_expected_unsupported_examples_exist() -> None:
    assert set(UNSUPPORTED) <= {p.name for p in EXAMPLES}


def test_an_older_kernel_disagrees_and_the_report_names_the_step() -> None:
    run = cowlab("live", "--json", "--kernel", "v4.5+6d0a07e", "examples/fork_while_pinned.yaml")
    assert run.returncode == 1, run.stderr
    case = json.loads(run.stdout)["cases"][0]
    assert case["status"] == "disagree"
    # 6.18 copies the pinned page for the child at fork (5.9+); 4.5 shares it.
    assert case["step"]["index"] == 4 and case["step"]["op"] == "fork"
    assert any(d["region"] == "C:buf" and "folio" in d["fields"] for d in case["differences"])
    assert case["live"]["C:buf"] and case["model"]["C:buf"]


def test_ops_without_a_live_equivalent_are_unsupported(machine: LiveMachine) -> None:
    text = """
name: numa
processes: [P]
steps:
  - {op: mmap, proc: P, name: buf, size: 4K}
  - {op: numa_balance, proc: P, at: buf, size: 4K}
"""
    result = run_case(parse_scenario(text), Options("v4.5+6d0a07e"), machine, None)
    assert result.status == "unsupported" and "NUMA" in result.reason


def test_a_touch_is_unsupported_live_not_silently_skipped(machine: LiveMachine) -> None:
    """The live side ran no touch at all (process_op had no branch for it), so a touch showed
    as a disagreement; until it populates live, the case says why it cannot run."""
    text = """
name: touch
processes: [P]
steps:
  - {op: mmap, proc: P, name: buf, size: 8K}
  - {op: touch, proc: P, at: buf, size: 8K, write: true}
"""
    result = run_case(parse_scenario(text), Options("v4.5+6d0a07e"), machine, None)
    assert result.status == "unsupported" and "touch" in result.reason


def test_a_knob_change_needs_permission(machine: LiveMachine) -> None:
    have = (machine.facts.thp_enabled if machine.facts else None) or "madvise"
    other = "never" if have != "never" else "madvise"
    text = f"name: k\nconfig: {{thp: {other}}}\nprocesses: [P]\nsteps:\n"
    text += "  - {op: mmap, proc: P, name: buf, size: 4K}\n"
    result = run_case(parse_scenario(text), Options("v4.5+6d0a07e"), machine, None)
    assert result.status == "unsupported" and "--allow-system-changes" in result.reason


KILLED = """
name: a child writes where it inherited nothing (MADV_DONTFORK)
processes: [P]
steps:
  - {op: mmap, proc: P, name: a, size: 4K, align: 64K}
  - {op: mmap, proc: P, name: b, size: 4K, align: 64K}
  - {op: write, proc: P, at: a, data: "x"}
  - {op: write, proc: P, at: b, data: "s"}
  - {op: madvise, proc: P, at: a, size: 4K, advice: dontfork}
  - {op: pin, proc: P, name: dev, at: a, size: 4K}
  - {op: fork, proc: P, child: C}
  - {op: write, proc: C, at: a, data: "y"}
  - {op: read, proc: C, at: b, size: 1}
  - {op: fork, proc: C, child: D}
  - {op: exit, proc: C}
  - {op: read, proc: P, at: a, size: 1}
  - {op: dma_read, pin: dev, size: 1}
"""


def live_outcomes(machine: LiveMachine, scenario: Scenario) -> list[str]:
    """Each step's outcome on the live kernel."""
    live = LiveScenario(machine, scenario)
    live.start()
    try:
        return [live.run_step(step).outcome for step in scenario.steps]
    finally:
        live.close()


@needs_matched_model
def test_a_process_killed_by_sigsegv_is_dead_on_both_sides(machine: LiveMachine) -> None:
    """C has no VMA at a: its write takes SIGSEGV, whose default action kills it (exit_mmap
    unmaps the page of b it shared with P); every later step of C is ESRCH."""
    assert MATCHED is not None
    scenario = parse_scenario(KILLED)
    outcomes = live_outcomes(machine, scenario)
    assert outcomes[7:11] == ["SIGSEGV", "ESRCH", "ESRCH", "ESRCH"]
    assert set(outcomes[:7] + outcomes[11:]) == {"ok"}
    result = run_case(scenario, Options(MATCHED), machine, None)
    shown = [d.describe() for d in result.differences]
    assert result.status == "agree", (result.status, result.reason, result.step, shown)


@needs_matched_model
def test_a_write_of_size_and_fill_runs_live(machine: LiveMachine) -> None:
    """A write in the range form (size and fill, no data) stores size bytes of fill live as in
    the model (the live side read only data: "undefined name 'data'", a disagreement)."""
    assert MATCHED is not None
    scenario = parse_scenario(
        "name: fill\nprocesses: [P]\nsteps:\n"
        "  - {op: mmap, proc: P, name: buf, size: 16K}\n"
        "  - {op: write, proc: P, at: buf, size: 8K, fill: 0xab}\n"
        "  - {op: read, proc: P, at: buf, size: 12K}\n"
    )
    assert live_outcomes(machine, scenario) == ["ok", "ok", "ok"]
    result = run_case(scenario, Options(MATCHED), machine, None)
    assert result.status == "agree", (result.status, result.reason, result.step)


FAILED_PIN = """
name: a pin of unmapped memory fails; using its handle is EINVAL on both sides
steps:
  - {op: spawn, proc: P}
  - {op: mmap, proc: P, name: a, size: 8K}
  - {op: munmap, proc: P, at: a, size: 8K}
  - {op: pin, proc: P, name: M, at: a, size: 4K}
  - {op: dma_read, pin: M, size: 1}
  - {op: dma_write, pin: M, data: "x"}
  - {op: unpin, pin: M}
"""


def test_a_failed_pins_handle_is_einval_live_as_in_the_model(machine: LiveMachine) -> None:
    """The pin step fails (EFAULT: nothing is mapped); every use of its name is then EINVAL,
    which is what the model's runner answers (found by cowlab live --random 100)."""
    outcomes = live_outcomes(machine, parse_scenario(FAILED_PIN))
    assert outcomes[3] == "EFAULT" and outcomes[4:] == ["EINVAL"] * 3


@needs_matched_model
def test_a_process_dead_on_one_side_only_is_a_difference(machine: LiveMachine) -> None:
    """If the live process died and the model's did not, its regions differ: nothing live."""
    assert MATCHED is not None
    scenario = parse_scenario(
        "name: one\nprocesses: [P]\nsteps:\n"
        "  - {op: mmap, proc: P, name: buf, size: 8K}\n"
        '  - {op: write, proc: P, at: buf, data: "x"}\n'
    )
    attempt = Attempt(scenario, Options(MATCHED), machine, None)
    attempt.live.start()
    try:
        for step in scenario.steps:
            model_step(attempt.runner, step)
            attempt.live.run_step(step)
            attempt.regions.after(step, True)
        machine._kill(attempt.live.procs["P"])  # the live process dies, the model's lives on
        live, model = attempt.observe()
    finally:
        attempt.live.close()
    diffs = diff_regions(live, model, attempt.excl)
    assert [(d.region, d.first, d.live) for d in diffs] == [("P:buf", 0, "-")]
    assert diffs[0].model.startswith("F0[0]/1 pte mc=1")


def test_sizes_are_capped(machine: LiveMachine) -> None:
    text = "name: big\nprocesses: [P]\nsteps:\n  - {op: mmap, proc: P, name: b, size: 128M}\n"
    opts = Options("v4.5+6d0a07e", Limits(max_bytes=64 << 20))
    result = run_case(parse_scenario(text), opts, machine, None)
    assert result.status == "unsupported" and "cap" in result.reason


def test_random_programs_run_and_report(tmp_path: Path) -> None:
    run = cowlab(
        "live", "--random", "3", "--seed", "7", "--kernel", "v4.5+6d0a07e", "--json",
        "--out", str(tmp_path), "--minimise-budget", "5",
    )  # fmt: skip
    assert run.returncode in (0, 1), run.stderr
    doc = json.loads(run.stdout)
    assert doc["summary"]["cases"] == 3 and doc["summary"]["cases_per_s"] > 0
    for path in doc["written"]:
        assert load_scenario(path).steps  # every disagreement is a valid scenario file


SHARED_AFTER_FORK = """\
name: a page shared by fork
kernels: [v6.18]
processes: [P]
steps:
  - {op: mmap, proc: P, name: buf, size: 4K}
  - {op: madvise, proc: P, at: buf, size: 4K, advice: nohugepage}
  - {op: write, proc: P, at: buf, data: "parent"}
  - {op: fork, proc: P, child: C}
"""


def test_a_disagreement_names_the_models_decision(
    machine: LiveMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A patched policy whose fork copies every page: the live kernel shares the page (mapcount
    2), the patch gives the child its own, and the report carries the model's decision."""
    import numpy as np

    from cowlab.policy import POLICIES, Release, Resolved
    from cowlab.policy.timeline import PATCHED

    class CopyAll(POLICIES["v6.18"]):  # type: ignore[misc,valid-type]
        id = "v6.18+fork-copies-all"

        def fork_must_copy(self, k: object, src: object, vma: object, pfns: object) -> object:
            return np.ones(len(pfns), dtype=bool)  # type: ignore[arg-type]

    monkeypatch.setitem(PATCHED, CopyAll.id, Resolved(CopyAll.id, Release(6, 18), CopyAll))
    result = run_case(parse_scenario(SHARED_AFTER_FORK), Options(CopyAll.id), machine, None)
    assert result.status == "disagree" and result.step is not None and result.step.index == 4
    (decision,) = result.model_decisions
    assert (decision.function, decision.verdict) == ("copy_present_page", "copy")
    assert decision.policy == CopyAll.id
    assert result.to_json()["model_decisions"][0]["verdict"] == "copy"


OBSERVED_THEN_REUSED = """
name: a write reuses the page the driver has observed
processes: [P]
steps:
  - {op: mmap, proc: P, name: buf, size: 4K}
  - {op: write, proc: P, at: buf, data: "x"}
  - {op: fork, proc: P, child: C}
  - {op: exit, proc: C}
  - {op: write, proc: P, at: buf, data: "y"}
"""


@needs_matched_model
@pytest.mark.parametrize("drained", [True, False], ids=["drained", "not-drained"])
def test_observing_a_page_does_not_make_its_write_copy(
    machine: LiveMachine, monkeypatch: pytest.MonkeyPatch, drained: bool
) -> None:
    """The last write faults on a page only P maps (C has exited) with no other reference:
    wp_can_reuse_anon_folio reuses it (6.18), in the model too. Before that write the driver
    has read the page's bytes three times (the observations after the first write, the fork and
    the exit): the second read queues it for activation in the driver's CPU's lru_activate
    batch, with a reference. Drained after each observation (LiveMachine.after_reading), the
    live write reuses and the case agrees; not drained, the live write copies and the identity
    comparison must say so (the folio labels and fields alone look the same: F0, mc=1, ex=1).
    The observations after the first three steps are preceded by a drain of every CPU, so that
    the page is on the LRU, not in the zygote CPU's lru_add batch (which the fault's own
    lru_add_drain would flush; and a page off the LRU is activated in that batch, with no
    reference): then the second read's activation lands in the driver's batch whatever the
    other processes did, and no drain comes between it and the write (20 of 20 copies by hand,
    with the drain after reading off, 2026-12-02)."""
    assert MATCHED is not None
    observe = Attempt.observe
    observed: Counter[int] = Counter()

    def observe_on_the_lru(self: Attempt) -> tuple[Snapshot, Snapshot]:
        observed[id(self)] += 1
        if observed[id(self)] <= 3:  # after mmap, the first write, the fork
            self.live.machine.drain_lru()
        return observe(self)

    monkeypatch.setattr(Attempt, "observe", observe_on_the_lru)
    if not drained:
        monkeypatch.setattr(LiveMachine, "after_reading", lambda self: None)
    result = run_case(parse_scenario(OBSERVED_THEN_REUSED), Options(MATCHED), machine, None)
    shown = [d.describe() for d in result.differences]
    if drained:
        assert result.status == "agree", (result.status, result.reason, result.step, shown)
        return
    assert result.status == "disagree", (result.status, result.reason, shown)
    assert result.step is not None and result.step.index == 5
    assert shown == ["P:buf[0] identity: live copied | model reused"]


@needs_matched_model
def test_each_observation_is_read_and_drained_on_the_processes_cpu(
    machine: LiveMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three steps, three observations: after each, the CPU the driver read the pages on has
    its batches drained, and that CPU is the one the case's processes run on (the zygote's,
    the lowest allowed); every CPU is drained by no one (no swap-out); the driver's own CPUs
    are back after each."""
    assert MATCHED is not None
    drained_on = record_local_drains(monkeypatch)
    monkeypatch.setattr(LruDrain, "__call__", lambda self: pytest.fail("every CPU drained"))
    mine = os.sched_getaffinity(0)
    text = (
        "name: drains\nprocesses: [P]\nsteps:\n"
        "  - {op: mmap, proc: P, name: buf, size: 4K}\n"
        "  - {op: write, proc: P, at: buf, data: 'x'}\n"
        "  - {op: write, proc: P, at: buf, data: 'y'}\n"
    )
    result = run_case(parse_scenario(text), Options(MATCHED), machine, None)
    assert result.status == "agree", (result.status, result.reason)
    assert machine.cpu == min(mine)
    assert drained_on == [{machine.cpu}] * 3
    assert os.sched_getaffinity(0) == mine
