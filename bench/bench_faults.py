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
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from _common import run_child
from bench_live import fmt, fmt_size, kernel_list, parse_size, positive_int
from bench_memory import cpu_of_children, report, tree, trees_of

HERE = Path(__file__).resolve().parent
LIVE = str(HERE / "bench_live.py")
EXAMPLES = HERE.parent / "examples" / "cow"


def per_page(kernel: str, size: int) -> dict[str, float]:
    r = run_child(LIVE, ["--model-child", kernel, str(size), "off", "per-page", "--cpu-clock"])
    return {
        "first touch µs/fault": r["first_touch_ns"] / r["first_touch_faults"] / 1e3,
        "COW µs/fault": r["cow_write_ns"] / r["cow_write_faults"] / 1e3,
    }


def thp_range(size: int) -> dict[str, float]:
    """The parent's COW write over the forked THPs (PMD split, then the PTE-mapped pages'
    do_wp_page runs) in CPU µs per 4 KiB page, the child's exit() in CPU ms."""
    r = run_child(LIVE, ["--model-child", "v6.18", str(size), "on", "range", "--cpu-clock"])
    mib = fmt_size(size)
    return {
        f"v6.18 THP {mib} COW write µs/page": r["cow_write_ns"] / r["pages"] / 1e3,
        f"v6.18 THP {mib} exit ms": r["exit_ns"] / 1e6,
    }


def matrix(kernel: str) -> dict[str, float]:
    files = sorted(str(p) for p in EXAMPLES.glob("*.yaml"))
    cmd = [sys.executable, "-c", "from cowlab.cli import main; main()", "run", *files]
    before = cpu_of_children()
    subprocess.run([*cmd, "--kernel", kernel], stdout=subprocess.DEVNULL, check=True)
    return {"cow.c matrix CPU s": cpu_of_children() - before}


def measure(args: argparse.Namespace) -> dict[str, float]:
    out: dict[str, float] = {}
    for kernel in args.kernels:
        out |= {f"{kernel} {k}": v for k, v in per_page(kernel, args.size).items()}
    out |= thp_range(args.exit_size)
    if not args.skip_matrix:
        out |= {f"{args.matrix_kernel} {k}": v for k, v in matrix(args.matrix_kernel).items()}
    return out


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
    for rep in range(args.reps):
        for name, src in trees.items():
            print(f"  rep {rep + 1}: {name}", file=sys.stderr)
            with tree(src):
                for measure_name, value in measure(args).items():
                    runs.setdefault((name, measure_name), []).append(value)
    names = list(dict.fromkeys(m for _, m in runs))
    lines = [
        f"`python bench/bench_faults.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        "",
        f"CPU time, medians of {args.reps} (min-max); page by page over {fmt_size(args.size)}.",
        "",
        "| measure | " + " | ".join(trees) + " |",
        "|---|" + "---|" * len(trees),
    ]
    for m in names:
        cells = []
        for name in trees:
            values = runs[name, m]
            low, high = fmt(min(values)), fmt(max(values))
            cells.append(f"{fmt(statistics.median(values))} ({low}-{high})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    report(lines, args.out)


if __name__ == "__main__":
    main()
