"""The exhaustive search of `cowlab check` on one core: distinct states per second, and the
states and programs it takes to exhaust each depth with and without canonical states (the
ratio of the two is what deduplication saves; both measured in this run). Per second of wall
time and of the process's CPU time: on a shared machine the second is the steadier.

    python bench/bench_check.py                       # v4.5 and v6.18, depths 1-3
    python bench/bench_check.py --kernel v5.9 --depth 4
"""

from __future__ import annotations

import argparse
import sys
import time

from cowlab.check.search import search


def measure(kernel: str, depth: int, canonical: bool) -> dict[str, float]:
    started, cpu = time.perf_counter(), time.process_time()
    outcome = search(kernel, depth, canonical=canonical)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    stats = outcome.stats
    return {
        "states": stats.states,
        "runs": stats.runs,
        "seconds": seconds,
        "cpu": cpu,
        "states_per_s": stats.states / seconds if seconds else 0.0,
        "states_per_cpu_s": stats.states / cpu if cpu else 0.0,
        "runs_per_s": stats.runs / seconds if seconds else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", action="append", help="(default: v4.5 and v6.18)")
    ap.add_argument("--depth", type=int, default=3, help="the deepest depth exhausted (3)")
    ap.add_argument("--no-plain", action="store_true", help="only with canonical states")
    args = ap.parse_args(argv)
    print(
        "kernel  depth  canonical  states  programs  seconds  CPU s  states/s  states/CPU-s"
        "  programs/s"
    )
    for kernel in args.kernel or ["v4.5", "v6.18"]:
        for depth in range(1, args.depth + 1):
            for canonical in (True, False) if not args.no_plain else (True,):
                m = measure(kernel, depth, canonical)
                print(
                    f"{kernel:7} {depth:5}  {'yes' if canonical else 'no':9}  {m['states']:6.0f}"
                    f"  {m['runs']:8.0f}  {m['seconds']:7.1f}  {m['cpu']:5.1f}"
                    f"  {m['states_per_s']:8.0f}  {m['states_per_cpu_s']:12.0f}"
                    f"  {m['runs_per_s']:10.0f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
