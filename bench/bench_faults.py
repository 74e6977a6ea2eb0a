#!/usr/bin/env python3
"""CPU cost of issue 11's per-fault targets, this tree against a baseline copy of the model, in
one run (not a test).

    python bench/bench_faults.py [--baseline OLD/src] [--size 256M] [--kernels v4.5,v6.18]
        [--reps 5] [--exit-size 1G] [--matrix-kernel v6.18] [--skip-matrix] [--out FILE]

CPU seconds (user + system), not wall time: on a machine shared with other work the wall time
says how loaded it was. Each measurement is a fresh child importing cowlab from one tree
(PYTHONPATH); repetitions alternate the trees and the table gives medians:

- page by page, 4 KiB pages (THP off): bench_live.py's model workload on its per-page path
  (one Process.write per 4 KiB page) with the process's CPU clock: µs per first-touch fault
  and per COW fault;
- THP: the same workload on the range path with THP on, of --exit-size, on v6.18: the
  parent's COW write in CPU µs per 4 KiB page, the child's exit() in CPU ms;
- the cow.c matrix: `cowlab run examples/cow/*.yaml --kernel KERNEL > /dev/null`, the child's
  CPU seconds.

A second table says what the two model workloads did in each tree (faults, operations, COW
copies, frames): a tree that measured another workload, or took another path, shows there.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from _common import run_child
from bench_live import fmt, fmt_size, kernel_list, parse_size, positive_int
from bench_memory import cpu_of_children, report, tree, trees_of

HERE = Path(__file__).resolve().parent
LIVE = str(HERE / "bench_live.py")
EXAMPLES = HERE.parent / "examples" / "cow"
T = TypeVar("T")


Measures = tuple[dict[str, float], dict[str, int]]  # CPU figures; what the workload did


def workload(prefix: str, r: dict[str, float]) -> dict[str, int]:
    """What bench_live.py's model child did: each timed phase's faults, and the operations
    (history records), COW copies and allocated frames after it. The same in every run of
    one tree, they show what the figures measured."""
    out = {}
    for phase, name in (("first_touch", "first touch"), ("cow_write", "COW write")):
        out[f"{prefix} {name}: faults"] = int(r[f"{phase}_faults"])
    for phase, name in (
        ("first_touch", "first touch"),
        ("cow_write", "COW write"),
        ("exit", "exit"),
    ):
        for what in ("operations", "copies", "frames"):
            out[f"{prefix} after {name}: {what}"] = int(r[f"{what}_after_{phase}"])
    return out


def per_page(kernel: str, size: int) -> Measures:
    r = run_child(LIVE, ["--model-child", kernel, str(size), "off", "per-page", "--cpu-clock"])
    times = {
        f"{kernel} first touch µs/fault": r["first_touch_ns"] / r["first_touch_faults"] / 1e3,
        f"{kernel} COW µs/fault": r["cow_write_ns"] / r["cow_write_faults"] / 1e3,
    }
    return times, workload(f"{kernel} page by page", r)


def thp_range(size: int) -> Measures:
    """The parent's COW write over the forked THPs (PMD split, then the PTE-mapped pages'
    do_wp_page runs) in CPU µs per 4 KiB page, the child's exit() in CPU ms."""
    r = run_child(LIVE, ["--model-child", "v6.18", str(size), "on", "range", "--cpu-clock"])
    mib = fmt_size(size)
    times = {
        f"v6.18 THP {mib} COW write µs/page": r["cow_write_ns"] / r["pages"] / 1e3,
        f"v6.18 THP {mib} exit ms": r["exit_ns"] / 1e6,
    }
    return times, workload(f"v6.18 THP {mib} range", r)


def matrix(kernel: str) -> dict[str, float]:
    files = sorted(str(p) for p in EXAMPLES.glob("*.yaml"))
    cmd = [sys.executable, "-c", "from cowlab.cli import main; main()", "run", *files]
    before = cpu_of_children()
    subprocess.run([*cmd, "--kernel", kernel], stdout=subprocess.DEVNULL, check=True)
    return {f"{kernel} cow.c matrix CPU s": cpu_of_children() - before}


def measure(args: argparse.Namespace) -> Measures:
    times: dict[str, float] = {}
    counts: dict[str, int] = {}
    for t, c in [per_page(kernel, args.size) for kernel in args.kernels]:
        times |= t
        counts |= c
    t, c = thp_range(args.exit_size)
    times |= t
    counts |= c
    if not args.skip_matrix:
        times |= matrix(args.matrix_kernel)
    return times, counts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench_faults.py", description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", help="src/ directory of the model to compare with")
    ap.add_argument("--size", type=parse_size, default=parse_size("256M"), help="(256M)")
    ap.add_argument("--kernels", type=kernel_list, default=["v4.5", "v6.18"])
    ap.add_argument("--reps", type=positive_int, default=5, help="repetitions (5)")
    ap.add_argument("--exit-size", type=parse_size, default=parse_size("1G"), help="(1G)")
    ap.add_argument("--matrix-kernel", default="v6.18")
    ap.add_argument("--skip-matrix", action="store_true")
    ap.add_argument("--out", help="also write the report here")
    args = ap.parse_args(argv)
    trees = trees_of(ap, args.baseline)
    runs: dict[tuple[str, str], list[float]] = {}
    done: dict[tuple[str, str], set[int]] = {}  # the workload counts each run of a tree saw
    for rep in range(args.reps):
        for name, src in trees.items():
            print(f"  rep {rep + 1}: {name}", file=sys.stderr)
            with tree(src):
                times, counts = measure(args)
            for measure_name, value in times.items():
                runs.setdefault((name, measure_name), []).append(value)
            for count_name, n in counts.items():
                done.setdefault((name, count_name), set()).add(n)
    lines = [
        f"`python bench/bench_faults.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        "",
        f"CPU time, medians of {args.reps} (min-max); page by page over {fmt_size(args.size)}.",
        "",
        *table("measure", trees, runs, median_range),
        "",
        "What each workload did (a phase's faults; operations, COW copies, frames after it):",
        "",
        *table("workload", trees, done, lambda ns: " or ".join(f"{n:,}" for n in sorted(ns))),
    ]
    report(lines, args.out)


def median_range(values: list[float]) -> str:
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def table(
    head: str,
    trees: dict[str, str | None],
    cells: dict[tuple[str, str], T],
    show: Callable[[T], str],
) -> list[str]:
    """A Markdown table: a row per measure (in the order first seen), a column per tree."""
    lines = ["| " + head + " | " + " | ".join(trees) + " |", "|---|" + "---|" * len(trees)]
    for m in dict.fromkeys(m for _, m in cells):
        lines.append(f"| {m} | " + " | ".join(show(cells[name, m]) for name in trees) + " |")
    return lines


if __name__ == "__main__":
    main()
