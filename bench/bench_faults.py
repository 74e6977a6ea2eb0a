#!/usr/bin/env python3
"""CPU cost of issue 11's per-fault targets, this tree against a baseline copy of the model, in
one run (not a test).

    python bench/bench_faults.py [--baseline OLD/src] [--size 256M] [--kernels v4.5,v6.18]
        [--reps 5] [--exit-size 1G] [--matrix-kernel v6.18] [--skip-matrix] [--out FILE]
        [--paired ROUNDS] [--paired-thp ROUNDS]

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

--paired ROUNDS (with --baseline): on a loaded machine the medians above move more between runs
than a change of a few per cent. This runs both trees in one child process, interleaved: per
kernel, ROUNDS rounds of 512 page-by-page writes of one tree then 512 of the other (which goes
first alternates), over fresh pages, first touch then, after a fork, the COW write; each round's
two timings share the load, and the table gives the median of their ratios. The unpaired
tables above are made first, as without it: `--size 16M --exit-size 16M --reps 1
--skip-matrix` keeps them short.

--paired-thp ROUNDS (with --baseline): the same for the THP COW write on the range path: per
tree, v6.18 with THP always, ROUNDS x 8 MiB filled and forked, then ROUNDS rounds of one
tree's parent filling its next 8 MiB (4 THPs: the PMD splits, then every page's do_wp_page)
then the other's; CPU µs per 4 KiB page, the median of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from _common import emit, run_child
from bench_live import fmt, fmt_size, kernel_list, parse_size, positive_int
from bench_memory import cpu_of_children, report, tree, trees_of

HERE = Path(__file__).resolve().parent
LIVE = str(HERE / "bench_live.py")
EXAMPLES = HERE.parent / "examples" / "cow"
T = TypeVar("T")
PAGE = 4096
CHUNK = 512  # page-by-page writes a tree makes in one round of --paired
THP_ROUND = 8 << 20  # what a tree COW-writes in one round of --paired-thp: 4 THPs
THP_PHASE = "v6.18 THP COW write"


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


def kernel_class(src: str | None) -> type:
    """cowlab.Kernel imported afresh from src (None: as this process finds it), the modules of
    any tree imported before dropped first (the classes already taken keep theirs)."""
    for name in [m for m in sys.modules if m == "cowlab" or m.startswith("cowlab.")]:
        del sys.modules[name]
    if src is not None:
        sys.path.insert(0, src)
    try:
        kernel: type = importlib.import_module("cowlab").Kernel
    finally:
        if src is not None:
            sys.path.remove(src)
    return kernel


def interleaved(
    runs: dict[str, T], rounds: int, one_round: Callable[[str, T, int], float]
) -> dict[str, float]:
    """``rounds`` rounds of one tree then the other (which goes first alternating), each
    round's CPU µs a fault by ``one_round``: the median of the rounds' this-tree/baseline
    ratios and their quartiles, and each tree's median."""
    us: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        for name in list(runs)[:: 1 if r % 2 else -1]:
            us[name].append(one_round(name, runs[name], r))
    ratios = sorted(n / b for n, b in zip(us["new"], us["base"], strict=True))
    out = {"": statistics.median(ratios)}
    out[" q1"], out[" q3"] = ratios[len(ratios) // 4], ratios[3 * len(ratios) // 4]
    for name in runs:
        out[f" {name}"] = statistics.median(us[name])
    return out


def timed_faults(what: str, k: Any, pages: int, write: Callable[[], object]) -> float:
    """CPU µs a fault of write(), which must fault once a page."""
    faults = k.vmstat["pgfault"]
    t = time.process_time()
    write()
    us = (time.process_time() - t) / pages * 1e6
    if k.vmstat["pgfault"] - faults != pages:
        raise RuntimeError(f"{what}: a round of {pages} page writes did not fault once each")
    return us


def page_round(what: str, byte: bytes, name: str, run: tuple[Any, Any, int], r: int) -> float:
    """One --paired round: CHUNK page-by-page writes of the r-th CHUNK."""
    k, p, addr = run
    start = addr + r * CHUNK * PAGE

    def write() -> None:
        for va in range(start, start + CHUNK * PAGE, PAGE):
            p.write(va, byte)

    return timed_faults(what, k, CHUNK, write)


def paired_child(base: str, kernels: list[str], rounds: int) -> dict[str, float]:
    """The --paired measurement (in a child of its own): per kernel and phase, each round's
    this-tree/baseline ratio of CPU per fault; a round that does not fault once a write fails."""
    trees = {"new": kernel_class(None), "base": kernel_class(base)}
    out: dict[str, float] = {}
    for kid in kernels:
        runs = {}
        for name, kernel in trees.items():
            k = kernel(kid)
            k.thp_enabled = "never"
            p = k.spawn()
            runs[name] = (k, p, p.mmap(rounds * CHUNK * PAGE, align=512 * PAGE))
        for phase, byte in (("first touch", b"a"), ("COW", b"b")):
            if phase == "COW":
                for _, p, _ in runs.values():
                    p.fork()
            one_round = functools.partial(page_round, f"{kid} {phase}", byte)
            for key, value in interleaved(runs, rounds, one_round).items():
                out[f"{kid} {phase}{key}"] = value
    return out


def thp_round(name: str, run: tuple[Any, Any, int], r: int) -> float:
    """One --paired-thp round: the parent fills the r-th THP_ROUND after the fork."""
    k, p, addr = run
    start = addr + r * THP_ROUND
    return timed_faults(THP_PHASE, k, THP_ROUND // PAGE, lambda: p.fill(start, THP_ROUND, 2))


def paired_thp_child(base: str, rounds: int) -> dict[str, float]:
    """The --paired-thp measurement (in a child of its own): v6.18, THP always, rounds x
    THP_ROUND filled and forked; each round one tree's parent fills its next THP_ROUND (the
    PMD splits, then the COW write of every page on the range path) then the other's."""
    runs = {}
    for name, src in (("new", None), ("base", base)):
        k = kernel_class(src)("v6.18")
        k.thp_enabled = "always"
        p = k.spawn()
        addr = p.mmap(rounds * THP_ROUND, align=THP_ROUND)
        p.fill(addr, rounds * THP_ROUND, 1)
        p.fork()
        runs[name] = (k, p, addr)
    return {THP_PHASE + key: v for key, v in interleaved(runs, rounds, thp_round).items()}


def paired(args: argparse.Namespace) -> list[str]:
    """The --paired table."""
    extra = ["--paired-child", args.baseline, ",".join(args.kernels), str(args.paired)]
    r = run_child(__file__, extra)
    lines = [
        "",
        f"Both trees in one process, {args.paired} rounds of {CHUNK} page-by-page writes each, "
        "interleaved:",
        "",
        *PAIRED_HEAD,
    ]
    for kid in args.kernels:
        for phase in ("first touch", "COW"):
            lines.append(paired_row(r, f"{kid} {phase}"))
    return lines


def paired_thp(args: argparse.Namespace) -> list[str]:
    """The --paired-thp table."""
    r = run_child(__file__, ["--paired-thp-child", args.baseline, str(args.paired_thp)])
    return [
        "",
        f"Both trees in one process, v6.18, THP always, {args.paired_thp} rounds of a "
        f"{fmt_size(THP_ROUND)} COW write (fill after fork) each, interleaved:",
        "",
        *PAIRED_HEAD,
        paired_row(r, THP_PHASE),
    ]


PAIRED_HEAD = [
    "| phase | this tree / baseline, median of the rounds (quartiles) "
    "| baseline µs/fault, median of the rounds | this tree |",
    "|---|---|---|---|",
]


def paired_row(r: dict[str, float], m: str) -> str:
    ratio = f"{r[m]:.3f} ({r[m + ' q1']:.3f}-{r[m + ' q3']:.3f})"
    return f"| {m} | {ratio} | {fmt(r[m + ' base'])} | {fmt(r[m + ' new'])} |"


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
    ap.add_argument("--paired", type=positive_int, metavar="ROUNDS", help="(with --baseline)")
    ap.add_argument("--paired-child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--paired-thp", type=positive_int, metavar="ROUNDS", help="(with --baseline)")
    ap.add_argument("--paired-thp-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.paired_child:
        base, kernels, rounds = args.paired_child
        start = time.perf_counter()
        emit(paired_child(base, kernels.split(","), int(rounds)), start)
        return
    if args.paired_thp_child:
        start = time.perf_counter()
        emit(paired_thp_child(args.paired_thp_child[0], int(args.paired_thp_child[1])), start)
        return
    if (args.paired or args.paired_thp) and not args.baseline:
        ap.error("--paired and --paired-thp need --baseline")
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
    if args.paired:
        lines += paired(args)
    if args.paired_thp:
        lines += paired_thp(args)
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
    try:
        main()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"bench_faults.py: error: {e}")
