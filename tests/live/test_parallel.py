"""`cowlab live --jobs N`: the same cases and verdicts in the same order as one at a time, and
every worker's processes gone when the run stops early."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cowlab.live import parallel
from cowlab.live.cli import _Program, _run_program, default_jobs, side_by_side
from cowlab.live.compare import Options
from cowlab.live.driver import LiveMachine
from cowlab.live.parallel import WorkerFailed, run_in_order
from cowlab.live.worker import one_cpu
from tests.live.helpers import needs_live_kernel
from tests.live.test_cli_safety import cowlab


def _spawn_then_wait(machine: LiveMachine, seconds: float) -> tuple[int, int, float]:
    proc = machine.spawn()
    time.sleep(seconds)
    return os.getpid(), proc.pid, seconds


def _cpus_of_a_case(machine: LiveMachine, seconds: float) -> tuple[int, set[int], set[int]]:
    """The CPUs a case's process and its fork child may run on, by worker."""
    proc = machine.spawn()
    child = proc.fork()
    time.sleep(seconds)
    return os.getpid(), os.sched_getaffinity(proc.pid), os.sched_getaffinity(child.pid)


def _die(machine: LiveMachine, code: int) -> int:
    os._exit(code)


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


@needs_live_kernel
def test_results_come_in_the_cases_order_from_several_workers() -> None:
    # the first case is the slowest: a worker that takes it finishes last, yet it comes first
    got = list(run_in_order([0.5, 0.0, 0.0, 0.0], 2, _spawn_then_wait))
    assert [seconds for *_, seconds in got] == [0.5, 0.0, 0.0, 0.0]
    workers = {worker for worker, *_ in got}
    assert len(workers) == 2 and os.getpid() not in workers
    # each case's process was killed and reaped by its worker's LiveMachine
    assert all(_gone(pid) for _worker, pid, _s in got)


def test_one_cpu_counts_round_the_allowed_cpus() -> None:
    # by hand: index i names the i-th allowed CPU in number order, i mod their number
    allowed = sorted(os.sched_getaffinity(0))
    n = len(allowed)
    assert [one_cpu(i) for i in range(n)] == allowed
    assert one_cpu(n) == one_cpu(0) == allowed[0] and one_cpu(n + 1) == allowed[1 % n]


@needs_live_kernel
def test_one_machine_runs_its_processes_on_the_lowest_cpu() -> None:
    # --jobs 1 as before: the zygote takes the lowest allowed CPU; a fork inherits the mask
    with LiveMachine() as machine:
        proc = machine.spawn()
        child = proc.fork()
        lowest = {min(os.sched_getaffinity(0))}
        assert os.sched_getaffinity(proc.pid) == os.sched_getaffinity(child.pid) == lowest


@needs_live_kernel
def test_each_worker_runs_its_cases_on_a_cpu_of_its_own() -> None:
    # worker i's zygote takes the i-th allowed CPU (counting round): with two workers, the two
    # lowest (one each; both the lowest on a machine of one CPU). Every process of a case,
    # fork children included, stays on its worker's CPU. The first case is slow, so the other
    # worker takes the rest and both appear.
    got = list(run_in_order([0.5, 0.0, 0.0, 0.0], 2, _cpus_of_a_case))
    masks: dict[int, set[frozenset[int]]] = {}
    for worker, parent, child in got:
        masks.setdefault(worker, set()).update({frozenset(parent), frozenset(child)})
    assert len(masks) == 2 and all(len(m) == 1 for m in masks.values()), masks
    allowed = sorted(os.sched_getaffinity(0))
    want = sorted([[allowed[0]], [allowed[1 % len(allowed)]]])
    assert sorted(sorted(next(iter(m))) for m in masks.values()) == want, masks


@needs_live_kernel
def test_an_early_stop_leaves_no_worker_and_no_process() -> None:
    results = run_in_order([0.0, 30.0, 30.0], 2, _spawn_then_wait)
    worker, pid, _seconds = next(results)
    t0 = time.monotonic()
    results.close()  # as an exception or Ctrl-C in the consumer does
    assert time.monotonic() - t0 < 10  # SIGTERM, not the 30 s sleeps
    assert _gone(worker) and _gone(pid)


@needs_live_kernel
def test_a_worker_that_dies_is_one_error() -> None:
    with pytest.raises(WorkerFailed, match="died while it ran case 1"):
        list(run_in_order([3], 1, _die))


@needs_live_kernel
def test_jobs_give_the_same_report_as_one_at_a_time(tmp_path: Path) -> None:
    def run(jobs: str) -> dict:
        done = cowlab(
            "live", "--random", "12", "--seed", "5", "--json", "--jobs", jobs,
            "--out", str(tmp_path), "--minimise-budget", "5",
        )  # fmt: skip
        assert done.returncode in (0, 1), done.stderr
        doc: dict = json.loads(done.stdout)
        return doc

    one, two = run("1"), run("2")
    assert [c["name"] for c in one["cases"]] == [c["name"] for c in two["cases"]]
    assert len(two["cases"]) == 12
    # the same verdicts, but where the live kernel's own doing (a THP it could not allocate)
    # made a case inconclusive in one of the runs
    pairs = [(a["status"], b["status"]) for a, b in zip(one["cases"], two["cases"], strict=True)]
    assert all(a == b for a, b in pairs if "inconclusive" not in (a, b)), pairs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--jobs", "0"], "--jobs: expected an integer of 1 or more, got '0'"),
        (["--jobs", "2", "--allow-system-changes"], "drop --allow-system-changes or use --jobs 1"),
    ],
)
def test_bad_jobs_are_one_line(args: list[str], message: str) -> None:
    done = cowlab("live", "--random", "2", *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_side_by_side_runs_again_alone_every_case_the_noise_test_may_judge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The workers' verdicts: agree, inconclusive, agree, unsupported, disagree. By hand: only
    the inconclusive and the disagreeing case can have read /proc/vmstat while another case ran
    (compare.noise, consulted once a difference is found), so those two are run again here,
    after the workers have stopped, and their second results are theirs; the first agree comes
    at once, the others wait so that the order stays the cases'."""
    events: list[str] = []
    verdicts = ["agree", "inconclusive", "agree", "unsupported", "disagree"]

    def in_workers(cases: Sequence[str], jobs: int, run: Any) -> Iterator[SimpleNamespace]:
        try:
            for case, status in zip(cases, verdicts, strict=True):
                yield SimpleNamespace(case=case, status=status, where="worker")
        finally:
            events.append("workers stopped")

    def alone(case: str, machine: Any, changes: Any) -> SimpleNamespace:
        events.append(f"alone {case}")
        assert (machine, changes) == ("the parent's machine", None)
        return SimpleNamespace(case=case, status="agree", where="alone")

    monkeypatch.setattr(parallel, "run_in_order", in_workers)
    got = []
    for result in side_by_side(list("abcde"), 2, alone, "the parent's machine"):
        got.append((result.case, result.where))
        events.append(f"report {result.case}")
    where = ["worker", "alone", "worker", "worker", "alone"]
    assert got == list(zip("abcde", where, strict=True))
    assert events == [
        "report a", "workers stopped", "alone b", "report b", "report c", "report d",
        "alone e", "report e",
    ]  # fmt: skip


def test_the_default_is_a_worker_per_cpu_but_one_with_system_changes() -> None:
    plenty = 1 << 40
    assert default_jobs(False, 64 << 20, plenty) == len(os.sched_getaffinity(0))
    assert default_jobs(True, 64 << 20, plenty) == 1


def test_the_default_is_no_more_workers_than_the_memory_holds() -> None:
    # a worker and twice a 64 MiB case: 128 + 128 MiB each, so 600 MiB hold two, 200 MiB one
    assert default_jobs(False, 64 << 20, 600 << 20) == min(2, len(os.sched_getaffinity(0)))
    assert default_jobs(False, 64 << 20, 200 << 20) == 1
    assert default_jobs(False, 1 << 30, 1 << 30) == 1


def test_a_random_program_that_is_no_scenario_is_an_error_case() -> None:
    # the generator never makes one; if it did, its case says so and the run goes on
    bad = _Program("random-s1-0000", [{"op": "teleport", "proc": "P"}], "file")
    result = _run_program(Options("v6.18"), bad, None, None)
    assert (result.name, result.status) == ("random-s1-0000", "error")
