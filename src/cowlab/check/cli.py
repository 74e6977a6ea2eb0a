"""`cowlab check`: the corpus and the bounded search on every kernel, a table of what broke.

Exit status 0 when every finding of a correctness property is one the corpus expects on that
kernel and every corpus scenario passes, 1 otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress

from cowlab.check import report
from cowlab.check.alphabet import ALPHABETS
from cowlab.check.corpus import CorpusResult, run_corpus
from cowlab.check.counterexample import group, write_all
from cowlab.check.properties import PROPERTIES
from cowlab.check.search import Finding, Outcome, policy_differences, search
from cowlab.policy.timeline import all_policies

DEFAULT_DEPTH = 3


@dataclass
class CheckResult:
    kernels: list[str]
    props: list[str]
    depth: int
    alphabet: str
    corpus: CorpusResult
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def findings(self) -> list[Finding]:
        return [f for k in self.kernels if k in self.outcomes for f in self.outcomes[k].findings]

    def unexpected(self) -> list[Finding]:
        """Correctness findings on a kernel where no corpus scenario expects the property
        to break."""
        return [
            f
            for f in self.findings
            if PROPERTIES[f.prop].kind == "correctness"
            and (f.kernel, f.prop) not in self.corpus.expected
        ]

    @property
    def passed(self) -> bool:
        return not self.unexpected() and not self.corpus.failed and not self.interrupted


def add_check_command(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="find COW bugs by itself: the corpus and a bounded search on every kernel",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--kernel", action="append", help="only this kernel (repeatable)")
    p.add_argument(
        "--property", action="append", choices=list(PROPERTIES), help="only this property"
    )
    p.add_argument(
        "--depth",
        type=int,
        default=DEFAULT_DEPTH,
        help=f"letters after the first (default {DEFAULT_DEPTH})",
    )
    p.add_argument("--alphabet", choices=ALPHABETS, default="cow", help="(default cow)")
    p.add_argument("--corpus", default="examples", metavar="DIR", help="(default examples)")
    p.add_argument("--no-corpus", action="store_true", help="search only")
    p.add_argument("--out", default="check-out", metavar="DIR", help="counterexample files")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes")
    p.add_argument("--json", action="store_true", help="a JSON document instead of the table")
    p.add_argument("--junit", metavar="FILE", help="also write JUnit XML")
    p.add_argument("--tap", action="store_true", help="TAP (kselftest style) instead of the table")
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from cowlab.cli import UsageError, kernel_ids

    kernels = kernel_ids(args.kernel) or list(all_policies())
    if args.depth < 0:
        raise UsageError(f"cowlab check: --depth must be 0 or more, got {args.depth}")
    if args.jobs < 1:
        raise UsageError(f"cowlab check: --jobs must be 1 or more, got {args.jobs}")
    corpus_dir = Path(args.corpus)
    if not args.no_corpus and not corpus_dir.is_dir():
        raise UsageError(f"cowlab check: no corpus directory {args.corpus} (or --no-corpus)")
    props = args.property or list(PROPERTIES)
    started = time.perf_counter()
    corpus = CorpusResult() if args.no_corpus else run_corpus(corpus_dir, kernels)
    result = CheckResult(kernels, props, args.depth, args.alphabet, corpus)
    try:
        _search_all(result, args.jobs, quiet=args.json or args.tap)
    except KeyboardInterrupt:
        result.interrupted = True
    result.seconds = time.perf_counter() - started
    examples = group(result.findings)
    write_all(Path(args.out), examples, args.depth, args.alphabet)
    if args.junit:
        Path(args.junit).write_text(report.junit(result, examples))
    if args.json:
        print(json.dumps(report.to_json(result, examples, args.out), indent=2))
    elif args.tap:
        print(report.tap(result, examples), end="")
    else:
        print(report.table(result, examples, args.out), end="")
    return 0 if result.passed else 1


def _search_all(result: CheckResult, jobs: int, quiet: bool) -> None:
    """The bounded search on every kernel, `jobs` at a time, with a progress bar. A kernel
    whose policy differs from an already searched one only in attributes that search never
    read takes every decision the same way: its outcome is that one's (search.policy_differences).
    """
    with Progress(transient=True, disable=quiet) as bar:
        task = bar.add_task("searching", total=len(result.kernels))
        plan = Plan(result, jobs)
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            running: dict[Future[Outcome], str] = {}
            try:
                while plan.pending or running:
                    bar.update(task, completed=len(result.outcomes))
                    for kernel in plan.to_start(list(running.values())):
                        r = result
                        job = pool.submit(search, kernel, r.depth, r.alphabet, tuple(r.props))
                        running[job] = kernel
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        plan.finished(running.pop(future), future.result())
            except KeyboardInterrupt:
                pool.shutdown(wait=False, cancel_futures=True)
                raise


class Plan:
    """Which kernels to search, which to take from another's search, in timeline order."""

    def __init__(self, result: CheckResult, jobs: int) -> None:
        self.result = result
        self.jobs = jobs
        self.pending = list(result.kernels)
        self.reads_seen: set[str] | None = None  # every name read by a finished search

    def finished(self, kernel: str, outcome: Outcome) -> None:
        self.result.outcomes[kernel] = outcome
        self.reads_seen = set(outcome.reads) | (self.reads_seen or set())
        self._reuse()

    def _reuse(self) -> None:
        for kernel in list(self.pending):
            for done, outcome in self.result.outcomes.items():
                if not policy_differences(done, kernel) & outcome.reads:
                    self.result.outcomes[kernel] = outcome.reuse_for(kernel)
                    self.pending.remove(kernel)
                    break

    def to_start(self, running: list[str]) -> list[str]:
        """Kernels to search now: while a worker is free, the next pending kernel that no
        running search is likely to answer for (it differs from each in a name searches read;
        before any search finished, in any name)."""
        self._reuse()
        out: list[str] = []
        for kernel in self.pending:
            if len(running) + len(out) >= self.jobs:
                break
            if all(self._likely_differs(kernel, other) for other in running + out):
                out.append(kernel)
        for kernel in out:
            self.pending.remove(kernel)
        if not out and not running and self.pending:  # nothing else can answer: search one
            out.append(self.pending.pop(0))
        return out

    def _likely_differs(self, kernel: str, other: str) -> bool:
        differences = policy_differences(other, kernel)
        return bool(differences if self.reads_seen is None else differences & self.reads_seen)
