"""The exhaustive search of `cowlab check` on one core: distinct states per second, and the
states it takes to exhaust each depth with and without canonical states (without, every
program is a state of its own: the ratio of the two is what deduplication saves). Per second
of wall time and of the process's CPU time: on a shared machine the second is the steadier.
A search with canonical states also counts the programs one without them visits (its last
column, search.Graph.programs: walks of its state graph), exact and without running them, so
the states without canonical states are known as deep as the canonical search went.

One search per kernel and mode, to --depth, timed at the end of each depth (--jobs N: the
search spread over N processes, its CPU seconds theirs and this one's); --budget stops
before a depth whose estimated CPU time (the last depth's, times its growth over the one
before) would pass the budget, and says so. --all: every policy of the timeline in one joint
search (search.search_kernels, as `cowlab check` runs it), its states summed over the kernels.

    python bench/bench_check.py                                 # v4.5 and v6.18, depths 1-3
    python bench/bench_check.py --kernel v6.18 --depth 10 --budget 900
    python bench/bench_check.py --all --no-plain
    python bench/bench_check.py --kernel v6.18 --depth 6 --no-plain --jobs 2   # spread
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from itertools import accumulate, pairwise
from pathlib import Path
from typing import Any

from cowlab.check import search as search_module
from cowlab.check.search import search_kernels
from cowlab.policy.timeline import all_policies


@dataclass
class Depths:
    """States and CPU/wall seconds at the end of each depth of one search."""

    budget: float
    pool: ProcessPoolExecutor | None = None  # its workers' CPU counted too
    started: tuple[float, float] = (0.0, 0.0)
    # (depth, states so far, CPU s, wall s)
    rows: list[tuple[int, int, float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.started = (self.cpu(), time.perf_counter())

    def cpu(self) -> float:
        """This process's CPU seconds and its pool's live workers' (/proc/PID/stat)."""
        ticks = 0
        for pid in getattr(self.pool, "_processes", None) or ():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return time.process_time() + ticks / os.sysconf("SC_CLK_TCK")

    def __call__(self, new_states: int) -> bool:
        """Note a depth done; true (stop the search) if the next would pass the budget."""
        cpu, wall = self.cpu() - self.started[0], time.perf_counter() - self.started[1]
        states = (self.rows[-1][1] if self.rows else 0) + new_states
        self.rows.append((len(self.rows) + 1, states, cpu, wall))
        print(
            f"(depth {len(self.rows)} done: {states} states, {cpu:.1f} CPU-s, {wall:.1f} s)",
            file=sys.stderr,
            flush=True,
        )  # a long search killed still leaves its depths
        return bool(self.budget) and cpu + self.next_depth() > self.budget

    def next_depth(self) -> float:
        """The next depth's CPU seconds, estimated from the growth of the last two."""
        spent = [self.rows[0][2]] + [b[2] - a[2] for a, b in pairwise(self.rows)]
        if len(spent) < 2 or not spent[-2]:
            return spent[-1]
        return spent[-1] * spent[-1] / spent[-2]


def one_kernel(kernel: str, depth: int, canonical: bool, budget: float, jobs: int) -> None:
    with ProcessPoolExecutor(jobs) if jobs > 1 else nullcontext() as pool:
        depths = Depths(budget, pool)
        outcome = search_kernels(
            [kernel],
            depth,
            canonical=canonical,
            progress=depths,
            count_programs=True,
            pool=pool,
            workers=jobs,
        )[kernel]
    without = list(accumulate(outcome.stats.programs))
    for d, states, cpu, wall in depths.rows:
        rate = states / cpu if cpu else 0.0
        derived = f"  {without[d - 1]:>16}" if canonical else ""
        print(
            f"{kernel:7} {d:5}  {'yes' if canonical else 'no':9}  {states:9}  {cpu:8.1f}"
            f"  {wall:8.1f}  {rate:12.0f}{derived}",
            flush=True,
        )
    if len(depths.rows) < depth and outcome.stats.depth_states[-1]:
        print(f"(stopped: depth {len(depths.rows) + 1} would pass {budget:.0f} CPU-s)", flush=True)


def every_kernel(depth: int, canonical: bool) -> None:
    kernels = list(all_policies())
    runs = [0]
    shared = search_module._shared

    def counted(*args: Any) -> Iterator[Any]:  # each run of a letter (or root), once
        for taken in shared(*args):
            runs[0] += 1
            yield taken

    search_module._shared = counted
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        outcomes = search_kernels(kernels, depth, canonical=canonical)
    finally:
        search_module._shared = shared
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    states = sum(o.stats.states for o in outcomes.values())
    print(
        f"all {len(kernels)}  {depth:5}  {'yes' if canonical else 'no':9}  {states:9}  {cpu:8.1f}"
        f"  {wall:8.1f}  {states / cpu:12.0f}  (letters run: {runs[0]}, as each kernel's own"
        f" searches: {sum(o.stats.runs for o in outcomes.values())})",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", action="append", help="(default: v4.5 and v6.18)")
    ap.add_argument("--depth", type=int, default=3, help="the deepest depth exhausted (3)")
    ap.add_argument("--budget", type=float, default=0.0, help="CPU seconds per search (no limit)")
    ap.add_argument("--no-plain", action="store_true", help="only with canonical states")
    ap.add_argument("--no-canonical", action="store_true", help="only without them")
    ap.add_argument("--all", action="store_true", help="every policy, one joint search")
    ap.add_argument(
        "--jobs", type=int, default=1, help="processes one search spreads over (1: this one)"
    )
    args = ap.parse_args(argv)
    print(
        "kernel  depth  canonical  states     CPU s     wall s    states/CPU-s  without (derived)"
    )
    modes = [c for c in (True, False) if not (args.no_canonical if c else args.no_plain)]
    if args.all:
        for canonical in modes:
            every_kernel(args.depth, canonical)
        return 0
    for kernel in args.kernel or ["v4.5", "v6.18"]:
        for canonical in modes:
            one_kernel(kernel, args.depth, canonical, args.budget, args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
