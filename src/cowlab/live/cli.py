"""`cowlab live`: run scenarios (or random programs) on this machine's kernel and on the model.

Refuses (exit 2, one line) unless root on Linux with the interfaces it needs. Exit 0 when no
case disagrees (unsupported and inconclusive cases are reported, not failures), 1 when one does
or a case hit an error, 2 on bad input.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cowlab.arguments import at_least, out_dir
from cowlab.policy import ReleaseError, resolve
from cowlab.scenario.budget import memory_available

DEFAULT_OUT = "live-disagreements"


class LiveUsageError(Exception):
    """A refusal or bad input: one line on stderr, exit status 2."""


def match_kernel(release: str) -> str | None:
    """The policy answering for a uname release: 6.18.44-... -> v6.18; None outside 4.5-6.18."""
    m = re.match(r"^(\d+\.\d+(?:\.\d+)?)", release)
    if not m:
        return None
    try:
        return resolve(m.group(1)).policy_id
    except ReleaseError:
        return None


def add_live_command(sub: Any) -> None:
    """Register `cowlab live` on the subparsers of cowlab.cli.build_parser()."""
    p = sub.add_parser("live", help="run scenarios on this machine's kernel and on the model")
    p.add_argument("files", nargs="*", metavar="FILE")
    p.add_argument("--json", action="store_true", help="a JSON document instead of text")
    p.add_argument("--kernel", help="the model kernel id (default: the one matching uname -r)")
    p.add_argument(
        "--allow-system-changes",
        action="store_true",
        help="let scenarios change THP knobs and make a swap device (journalled, undone on exit)",
    )
    p.add_argument("--restore", action="store_true", help="undo what a killed run left")
    p.add_argument(
        "--random", type=at_least(1), metavar="N", help="N random programs instead of files"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ops", help="the operation alphabet for --random, comma-separated")
    p.add_argument(
        "--out", type=out_dir, default=DEFAULT_OUT, help="where minimised disagreements go"
    )
    p.add_argument("--max-mib", type=at_least(1), default=64, help="memory cap per case (MiB)")
    p.add_argument("--retries", type=at_least(0), default=3, help="retries of an inconclusive case")
    p.add_argument(
        "--jobs",
        type=at_least(1),
        metavar="N",
        help="run N cases at a time, each in a worker of its own (default: one per CPU; 1 "
        "with --allow-system-changes, which more than one refuses)",
    )
    p.add_argument("--minimise-budget", type=int, default=60, help=argparse.SUPPRESS)
    p.add_argument("--journal", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_live)


def cmd_live(args: argparse.Namespace) -> int:
    """The `live` subcommand: every refusal is one line and exit status 2."""
    try:
        return _live(args)
    except LiveUsageError as e:
        print(f"cowlab live: {e}", file=sys.stderr)
        return 2


def _journal(args: argparse.Namespace) -> Path:
    from cowlab.live.journal import DEFAULT_JOURNAL

    return Path(args.journal) if args.journal else DEFAULT_JOURNAL


def _live(args: argparse.Namespace) -> int:
    if args.restore:
        return _restore(_journal(args))
    if bool(args.files) == (args.random is not None):
        raise LiveUsageError("give scenario FILEs or --random N (one of the two)")
    if args.jobs is None:
        args.jobs = default_jobs(args.allow_system_changes, args.max_mib << 20)
    if args.jobs > 1 and args.allow_system_changes:
        raise LiveUsageError(
            "--jobs runs cases side by side, which cases that change the system (swap, ksmd, "
            "khugepaged knobs) must not be: drop --allow-system-changes or use --jobs 1"
        )
    _preflight()
    kernel = _kernel(args.kernel)
    if args.random is not None:
        return _run_random(args, kernel)
    return _run_files(args, kernel)


# a worker's own memory: 50 MiB resident and its zygote 15 MiB (`cowlab live --random 60`,
# 2026-12-02), doubled for the model of a large case
WORKER_BASE = 128 << 20


def default_jobs(allow_system_changes: bool, case_cap: int, available: int | None = None) -> int:
    """One worker per CPU this process may use, as many as the memory holds (a worker and a
    case at its cap twice over: a fork child may copy all of it); one when cases may change
    the system (a swap area, ksmd and khugepaged knobs are the whole machine's)."""
    if allow_system_changes:
        return 1
    if available is None:
        available = memory_available()
    fits = available // (WORKER_BASE + 2 * case_cap)
    return max(1, min(len(os.sched_getaffinity(0)), fits))


def _preflight() -> None:
    from cowlab.live.system import preflight

    missing = preflight()
    if missing:
        raise LiveUsageError("refusing to run: " + " ".join(missing))


def _kernel(requested: str | None) -> str:
    if requested is not None:
        try:
            resolve(requested)
        except ReleaseError as e:
            raise LiveUsageError(str(e)) from None
        return requested
    release = platform.release()
    found = match_kernel(release)
    if found is None:
        raise LiveUsageError(
            f"no model kernel matches this machine's {release} (cowlab models 4.5 to 6.18); "
            "pass --kernel RELEASE to compare with one anyway"
        )
    return found


def _restore(journal: Path) -> int:
    from cowlab.live.journal import JournalBusy, describe_entry, restore_from_journal

    try:
        undone = restore_from_journal(journal)
    except JournalBusy as e:
        raise LiveUsageError(str(e)) from None
    except OSError as e:
        raise LiveUsageError(f"cannot restore from {journal}: {e}") from None
    for entry in undone:
        print(describe_entry(entry))
    if not undone:
        print(f"nothing to restore ({journal} does not exist)")
    return 0


def _load(files: list[str]) -> list[Any]:
    from cowlab.scenario import ScenarioError, load_scenario

    try:
        return [load_scenario(f) for f in files]
    except ScenarioError as e:
        raise LiveUsageError(str(e)) from None


def _session(args: argparse.Namespace, kernel: str, body: Callable[[Any, Any, Any], int]) -> int:
    """A LiveMachine and a SystemChanges journal around body(machine, changes, options)."""
    from cowlab.live.compare import Options
    from cowlab.live.driver import LiveMachine
    from cowlab.live.journal import JournalBusy, SystemChanges
    from cowlab.live.scenario import Limits

    limits = Limits(args.max_mib << 20, args.allow_system_changes)
    opts = Options(kernel, limits, args.retries)
    try:
        # The machine first: its SIGTERM handler turns the signal into SystemExit, which the
        # journal's handler (installed second) calls after restoring the knobs.
        with (
            LiveMachine() as machine,
            SystemChanges(
                allow_system_changes=args.allow_system_changes, journal=_journal(args)
            ) as changes,
        ):
            return body(machine, changes if args.allow_system_changes else None, opts)
    except JournalBusy as e:
        raise LiveUsageError(str(e)) from None


def _run_files(args: argparse.Namespace, kernel: str) -> int:
    scenarios = _load(args.files)

    def body(machine: Any, changes: Any, opts: Any) -> int:
        t0 = time.perf_counter()
        results = []
        run = functools.partial(_run_scenario, opts)
        for result in _run_cases(args, scenarios, run, machine, changes):
            results.append(result)
            if not args.json:
                _print_case(result)
        _finish(args, kernel, machine, results, time.perf_counter() - t0)
        return 1 if any(r.status in ("disagree", "error") for r in results) else 0

    return _session(args, kernel, body)


def _run_random(args: argparse.Namespace, kernel: str) -> int:
    from cowlab.live.randomprog import parse_ops

    try:
        ops = parse_ops(args.ops, args.allow_system_changes)
    except ValueError as e:
        raise LiveUsageError(f"--ops: {e}") from None

    def body(machine: Any, changes: Any, opts: Any) -> int:
        return _random_body(args, kernel, ops, machine, changes, opts)

    return _session(args, kernel, body)


def _random_body(
    args: argparse.Namespace,
    kernel: str,
    ops: tuple[str, ...],
    machine: Any,
    changes: Any,
    opts: Any,
) -> int:
    from cowlab.live.randomprog import generate, swap_device

    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    programs = [
        _Program(f"random-s{args.seed}-{i:04d}", generate(rng, ops), swap_device(args.seed, i, ops))
        for i in range(args.random)
    ]
    run = functools.partial(_run_program, opts)
    results = list(_run_cases(args, programs, run, machine, changes))
    written = [
        _minimise_and_write(args, _Case(p.name, p.steps, p.device, result), opts, machine, changes)
        for p, result in zip(programs, results, strict=True)
        if result.status == "disagree"
    ]
    elapsed = time.perf_counter() - t0
    _finish(args, kernel, machine, results, elapsed, written)
    return 1 if any(r.status in ("disagree", "error") for r in results) else 0


@dataclass
class _Program:
    """A random program, made into a scenario where it runs (in a worker with --jobs)."""

    name: str
    steps: list[Any]
    device: str


def _run_program(opts: Any, program: _Program, machine: Any, changes: Any) -> Any:
    """run_case of the program's scenario; the generator should never make an invalid one,
    but if it does, that case is an error, not the run's end."""
    from cowlab.live.compare import CaseResult, run_case
    from cowlab.live.randomprog import to_scenario

    name = program.name
    scenario = to_scenario(name, program.steps, name, program.device)
    if scenario is None:
        return CaseResult(name, name, opts.kernel, "error", "not a valid scenario (a bug)")
    return run_case(scenario, opts, machine, changes)


def _run_scenario(opts: Any, scenario: Any, machine: Any, changes: Any) -> Any:
    from cowlab.live.compare import run_case

    return run_case(scenario, opts, machine, changes)


# run(case, machine, changes): a case's CaseResult
RunCase = Callable[[Any, Any, Any], Any]


def _run_cases(
    args: argparse.Namespace, cases: list[Any], run: RunCase, machine: Any, changes: Any
) -> Iterator[Any]:
    """run() of each case in order: here, or --jobs at a time in workers of their own
    (side_by_side; changes is None there: --jobs refuses system changes)."""
    if min(args.jobs, len(cases)) <= 1:
        return (run(case, machine, changes) for case in cases)
    return side_by_side(cases, args.jobs, run, machine)


# Verdicts a case reaches without the noise test, which reads the machine-wide /proc/vmstat
# (compare.noise: consulted only once a difference is found) and so would see the fallbacks
# of the cases beside it.
ALONE_OR_NOT = ("agree", "unsupported")


def side_by_side(cases: list[Any], jobs: int, run: RunCase, machine: Any) -> Iterator[Any]:
    """Results in the cases' order, run `jobs` at a time (cowlab.live.parallel); a case with
    any other verdict than ALONE_OR_NOT is run again here, on machine, once every worker has
    stopped, and that run's result is its result."""
    from cowlab.live.parallel import run_in_order

    again: list[tuple[Any, Any]] = []  # from the first case to run again on, in order
    results = run_in_order(cases, jobs, functools.partial(_in_worker, run))
    for i, result in enumerate(results):  # to its end: run_in_order stops the workers there
        if again or result.status not in ALONE_OR_NOT:
            again.append((cases[i], result))
        else:
            yield result
    for case, result in again:  # the workers are gone: run_in_order has returned
        yield result if result.status in ALONE_OR_NOT else run(case, machine, None)


def _in_worker(run: RunCase, machine: Any, case: Any) -> Any:
    return run(case, machine, None)


@dataclass
class _Case:
    """A disagreeing random program: its name, steps, swap device and first result."""

    name: str
    steps: list[Any]
    device: str
    first: Any


def _minimise_and_write(
    args: argparse.Namespace, case: _Case, opts: Any, machine: Any, changes: Any
) -> str:
    """Delta-debug a disagreeing program (on its swap device) and write it as a scenario file."""
    from cowlab.live.compare import run_case
    from cowlab.live.randomprog import minimise, to_scenario, write_case

    name, device, first = case.name, case.device, case.first

    def still_fails(candidate: list[Any]) -> bool:
        scenario = to_scenario(name, candidate, device=device)
        return scenario is not None and run_case(scenario, opts, machine, changes).status == (
            "disagree"
        )

    steps = case.steps
    cut = steps[: first.step.index] if first.step is not None else steps
    small = minimise(cut, still_fails, args.minimise_budget)
    final = to_scenario(name, small, device=device)
    last = run_case(final, opts, machine, changes) if final is not None else first
    shown = last if last.status == "disagree" else first
    why = "; ".join(d.describe() for d in shown.differences[:3])
    where = shown.step.describe() if shown.step is not None else "?"
    desc = f"Disagrees with the live kernel on {opts.kernel} at step {where}: {why}"
    return str(write_case(Path(args.out), name, small, desc, device))


# --- output -----------------------------------------------------------------------------------


def _print_case(result: Any, limit: int = 12) -> None:
    head = f"{result.status:<12} {result.path}  ({result.name})"
    print(f"{head}  {result.steps_run} steps, {result.elapsed_s:.2f} s")
    if result.reason:
        print(f"    {result.reason}")
    if result.step is None:
        return
    print(f"    first difference after step {result.step.index} (line {result.step.loc.line}): "
          f"{result.step.describe()}")  # fmt: skip
    for e in result.model_decisions:
        print(f"    the model decided: {e.render()} ({e.render_rule() or 'no rule'})")
    for d in result.differences[:limit]:
        print(f"      {d.describe()}")
    if len(result.differences) > limit:
        print(f"      ... {len(result.differences) - limit} more")
    for side, view in (("live", result.live_view), ("model", result.model_view)):
        for region, runs in view.items():
            print(
                f"    {side:<5} {region}: "
                + "; ".join(runs[:8])
                + (" ..." if len(runs) > 8 else "")
            )


def _finish(
    args: argparse.Namespace, kernel: str, machine: Any, results: list[Any], elapsed: float,
    written: list[str] | None = None,
) -> None:  # fmt: skip
    counts = Counter(r.status for r in results)
    compared = counts["agree"] + counts["disagree"]
    rate = counts["agree"] / compared if compared else 1.0
    facts = machine.facts
    summary = {
        "cases": len(results),
        **{s: counts[s] for s in ("agree", "disagree", "unsupported", "inconclusive", "error")},
        "agreement": round(rate, 4),
        "elapsed_s": round(elapsed, 2),
        "cases_per_s": round(len(results) / elapsed, 2) if elapsed else 0.0,
    }
    if args.json:
        doc = {
            "version": 1,
            "kernel": kernel,
            "live": vars(facts) if facts is not None else {},
            "summary": summary,
            "cases": [r.to_json() for r in results],
            "written": written or [],
        }
        print(json.dumps(doc, indent=2, default=str))
        return
    release = facts.release if facts is not None else "?"
    print(
        f"{len(results)} cases on model {kernel} vs live {release}: {counts['agree']} agree, "
        f"{counts['disagree']} disagree, {counts['unsupported']} unsupported, "
        f"{counts['inconclusive']} inconclusive, {counts['error']} error; agreement "
        f"{rate:.1%} of compared cases; {summary['cases_per_s']} cases/s"
    )
    for path in written or []:
        print(f"wrote {path}")
