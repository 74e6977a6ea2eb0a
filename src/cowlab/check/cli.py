"""`cowlab check`: the corpus and the bounded search on every kernel, a table of what broke.

Exit status 0 when every finding of a correctness property is one the corpus expects on that
kernel and every corpus scenario passes, 1 otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Iterator
from concurrent.futures import (
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    as_completed,
)
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any

from cowlab.arguments import at_least, out_dir, out_file
from cowlab.check import report
from cowlab.check.alphabet import ALPHABETS, root_parts
from cowlab.check.campaign import (
    DEFAULT_LENGTH,
    CampaignSummary,
    campaign_into,
    campaign_of,
    executor,
    reach,
)
from cowlab.check.corpus import (
    CorpusResult,
    CorpusTask,
    FileVerdict,
    corpus_tasks,
    gathered,
    run_file,
    scenario_files,
)
from cowlab.check.counterexample import Counterexample, group, write_all
from cowlab.check.patch import (
    Patch,
    PatchError,
    changed_scenarios,
    raised_in,
    read_patch,
    register,
)
from cowlab.check.properties import PROPERTIES
from cowlab.check.search import Finding, Outcome, merged, search_kernels
from cowlab.policy.timeline import all_policies, resolve
from cowlab.scenario.loader import load_scenario

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
    patch: Patch | None = None
    patch_changes: list[str] = field(default_factory=list)  # scenarios it changes
    campaign: CampaignSummary | None = None

    def patch_breaks(self) -> list[str]:
        """With a patch: the correctness properties it breaks that its base keeps."""
        if self.patch is None:
            return []
        base, patched = self.kernels
        broken = {k: {f.prop for f in self.findings if f.kernel == k} for k in self.kernels}
        return sorted(
            p for p in broken[patched] - broken[base] if PROPERTIES[p].kind == "correctness"
        )

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
        if self.patch is not None:  # the base's known bugs are not the patch's doing
            return not self.patch_breaks() and not self.interrupted
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
        type=at_least(0),
        default=DEFAULT_DEPTH,
        help=f"letters after the first (default {DEFAULT_DEPTH})",
    )
    p.add_argument("--alphabet", choices=ALPHABETS, default="cow", help="(default cow)")
    p.add_argument("--corpus", default="examples", metavar="DIR", help="(default examples)")
    p.add_argument("--no-corpus", action="store_true", help="search only")
    p.add_argument(
        "--out", type=out_dir, default="check-out", metavar="DIR", help="counterexample files"
    )
    p.add_argument(
        "--jobs",
        type=at_least(1),
        default=len(os.sched_getaffinity(0)),
        help="processes (default: the CPUs it may use)",
    )
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="a JSON document instead of the table")
    form.add_argument(
        "--tap", action="store_true", help="TAP (kselftest style) instead of the table"
    )
    p.add_argument("--junit", type=out_file, metavar="FILE", help="also write JUnit XML")
    p.add_argument(
        "--campaign",
        type=at_least(0),
        default=0,
        metavar="N",
        help="random programs per kernel (0)",
    )
    p.add_argument("--seed", type=int, default=0, help="the campaign's seed (0)")
    p.add_argument(
        "--length",
        type=at_least(1),
        default=DEFAULT_LENGTH,
        help=f"campaign letters ({DEFAULT_LENGTH})",
    )
    p.add_argument("--journal", type=out_file, metavar="FILE", help="(default OUT/campaign.sqlite)")
    p.add_argument(
        "--scheduler", metavar="ADDRESS", help="run the search and the campaign on Dask there"
    )
    p.add_argument(
        "--policy",
        metavar="FILE.py:NAME",
        help="a proposed patch: the Policy subclass NAME in FILE.py, on top of --base",
    )
    p.add_argument("--base", metavar="KERNEL", help="the release a --policy patch applies to")
    p.add_argument(
        "--no-live",
        action="store_true",
        help="with --policy on the running kernel's release: skip the live comparison",
    )
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from cowlab.cli import UsageError

    try:
        result = _prepare(args)
        return _check(args, result)
    except PatchError as e:
        raise UsageError(f"cowlab check: {e}") from None


def _check(args: argparse.Namespace, result: CheckResult) -> int:
    try:
        return _check_and_report(args, result)
    except Exception as e:
        fault = e if isinstance(e, PatchError) else result.patch and raised_in(result.patch, e)
        if not fault:
            raise
        notes = "; ".join(getattr(e, "__notes__", ()))  # a campaign's: which program, where
        raise PatchError(f"{fault} ({notes})" if notes else str(fault)) from None


def _check_and_report(args: argparse.Namespace, result: CheckResult) -> int:
    campaign = campaign_of(args)
    started = time.perf_counter()
    corpus = [] if args.no_corpus else corpus_tasks(Path(args.corpus), result.kernels)
    try:
        _check_all(result, corpus, args.jobs, args.scheduler, quiet=args.json or args.tap)
    except KeyboardInterrupt:
        result.interrupted = True
    if campaign is not None and not result.interrupted:
        campaign_into(result, campaign, quiet=args.json or args.tap)
    if result.patch is not None and not args.no_corpus:
        scenarios = [load_scenario(p) for p in scenario_files(Path(args.corpus))]
        result.patch_changes = changed_scenarios(scenarios, *result.kernels)
    result.seconds = time.perf_counter() - started
    examples = group(result.findings)
    write_all(Path(args.out), examples, args.depth, args.alphabet)
    _print(result, examples, args)
    if result.patch is not None and result.patch_changes and not args.no_live:
        live_base(result.kernels[0], result.patch_changes)
    return 0 if result.passed else 1


def _prepare(args: argparse.Namespace) -> CheckResult:
    """The selection the arguments make, checked: kernels, properties, the patch."""
    from cowlab.cli import UsageError, kernel_ids

    if not args.no_corpus and not Path(args.corpus).is_dir():
        raise UsageError(f"cowlab check: no corpus directory {args.corpus} (or --no-corpus)")
    if args.scheduler:
        reach(args.scheduler)
    if bool(args.policy) != bool(args.base):
        raise UsageError("cowlab check: --policy and --base go together")
    patch = None
    if args.policy:
        kernel_ids([args.base])
        patch = read_patch(args.policy, args.base)
        kernels = [resolve(args.base).policy_id, register(patch)]
    else:
        kernels = kernel_ids(args.kernel) or list(all_policies())
    props = args.property or list(PROPERTIES)
    return CheckResult(kernels, props, args.depth, args.alphabet, CorpusResult(), patch=patch)


def _print(result: CheckResult, examples: list[Counterexample], args: argparse.Namespace) -> None:
    if args.junit:
        Path(args.junit).write_text(report.junit(result, examples))
    if args.json:
        print(json.dumps(report.to_json(result, examples, args.out), indent=2))
    elif args.tap:
        print(report.tap(result, examples), end="")
    else:
        print(report.table(result, examples, args.out), end="")


def live_base(base: str, files: list[str]) -> None:
    """The scenarios a patch changes, run on this machine's kernel beside the base's model,
    when the base is the running kernel (and cowlab may run live here)."""
    from cowlab.cli import main
    from cowlab.live.cli import match_kernel

    if match_kernel(platform.release()) != base or os.geteuid() != 0:
        return
    print(f"\nlive: the scenarios the patch changes, on this machine ({platform.release()}):")
    main(["live", *files, "--kernel", base])


def _check_all(
    result: CheckResult, corpus: list[CorpusTask], jobs: int, scheduler: str | None, quiet: bool
) -> None:
    """The bounded search on every kernel and the corpus, in one pool of `jobs` processes,
    with a progress bar: joint searches of runs of neighbouring kernels
    (search.search_kernels: a letter runs once for the kernels that take it alike), `jobs`
    runs, each from each part of the roots (alphabet.root_parts), then the corpus's files
    behind them, each far shorter than a search, so that a worker done with its searches
    runs scenarios while the other still searches and none waits long at the end. Fewer
    kernels than processes: one joint search a part, here, its frontier's chunks expanded
    by the pool's processes (search_kernels' `pool`), so a deep search of one kernel takes
    every process, not two. Each kernel's parts merged (search.merged), the files' verdicts
    gathered in path order.
    Interrupted: the kernels whose parts ended, the files that ended."""
    r = result
    parts = len(root_parts())
    # fewer kernels than processes, or a Dask cluster: each search's frontier spread over them
    spread = len(r.kernels) < jobs or scheduler is not None
    # the larger part (THP) first, and in it the newest kernels, which differ most
    runs = [r.kernels] if spread else neighbours(r.kernels, jobs)[::-1]
    tasks = [(ks, part) for part in range(parts) for ks in runs]
    found: dict[str, dict[int, Outcome]] = {k: {} for k in r.kernels}
    files: dict[int, FileVerdict] = {}
    try:
        with report.progress(quiet) as bar:
            task = bar.add_task("checking", total=len(tasks) + len(corpus))
            with (
                ProcessPoolExecutor(
                    max_workers=jobs, initializer=_worker_start, initargs=(r.patch,)
                ) as pool,
                ThreadPoolExecutor(max_workers=len(tasks) if spread else 1) as here,
                _elsewhere(scheduler, pool, jobs) as (chunks, workers),
            ):
                search = partial(search_kernels, depth=r.depth, alphabet=r.alphabet)
                search = partial(search, wanted=tuple(r.props), patch=r.patch)
                searches = {
                    (
                        here.submit(search, ks, part=part, pool=chunks, workers=workers)
                        if spread
                        else pool.submit(search, ks, part=part)
                    ): part
                    for ks, part in tasks
                }
                scenarios = {pool.submit(run_file, *t): i for i, t in enumerate(corpus)}
                pending: list[Future[Any]] = [*searches, *scenarios]
                try:
                    for job in as_completed(pending):
                        if job in scenarios:
                            files[scenarios[job]] = job.result()
                        else:
                            for kernel, outcome in job.result().items():
                                found[kernel][searches[job]] = outcome
                        bar.advance(task)
                except BaseException:  # Ctrl-C, or a scenario the corpus cannot run
                    pool.shutdown(wait=False, cancel_futures=True)
                    here.shutdown(wait=False, cancel_futures=True)
                    raise
    finally:
        r.outcomes = {
            k: merged([of[part] for part in range(parts)])
            for k, of in found.items()
            if len(of) == parts
        }
        r.corpus = gathered(files[i] for i in sorted(files))


@contextmanager
def _elsewhere(scheduler: str | None, pool: Executor, jobs: int) -> Iterator[tuple[Executor, int]]:
    """Where a spread search's chunks go, and to how many workers: the Dask cluster's, or the
    local pool (the corpus stays there: its files are this machine's)."""
    if scheduler is None:
        yield pool, jobs
        return
    with executor(jobs, scheduler) as (remote, in_flight):
        yield remote, in_flight // 2


def neighbours(kernels: list[str], n: int) -> list[list[str]]:
    """`kernels` in at most `n` runs of neighbours, as even as can be."""
    size, extra = divmod(len(kernels), n)
    starts = [i * size + min(i, extra) for i in range(n + 1)]
    return [kernels[a:b] for a, b in pairwise(starts) if a < b]


def _worker_start(patch: Patch | None) -> None:
    """A worker knows the patched policy too (the kernel id it answers to is the parent's)."""
    if patch is not None:
        register(patch)
