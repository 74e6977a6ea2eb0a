"""`run_file` of a subset of the scenario corpus on every policy of the timeline, in this
process: CPU seconds (time.process_time) and wall seconds, optionally the runner's `judge`
(the checks after each step) timed apart, or the whole run under cProfile.

The subset: the files of examples/cow whose name holds --match, every --step-th of them (in
the corpus's order). Run it once per tree on PYTHONPATH, the trees alternated, to compare.

    python bench/bench_corpus.py --match swap                    # the 56 *swap* files
    python bench/bench_corpus.py --step 6 --time-judge           # 24 files, judge() apart
    python bench/bench_corpus.py --step 6 --profile 40           # cProfile, the top 40
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

from _common import timed

import cowlab.scenario.runner as runner
from cowlab.check import corpus
from cowlab.policy.timeline import all_policies

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--match", default="", help="only files whose name holds this (all)")
    ap.add_argument("--step", type=int, default=1, help="every STEP-th file (1)")
    ap.add_argument("--time-judge", action="store_true", help="time judge() apart")
    ap.add_argument("--profile", type=int, metavar="N", help="cProfile; print the top N")
    args = ap.parse_args(argv)
    if args.step < 1:
        ap.error(f"--step must be 1 or more, not {args.step}")
    kernels = list(all_policies())
    tasks = corpus.corpus_tasks(ROOT / "examples" / "cow", kernels)
    tasks = [t for t in tasks if args.match in t[0].name][:: args.step]
    if not tasks:
        ap.error(f"no file of examples/cow has {args.match!r} in its name")
    spent = timed(runner, "judge") if args.time_judge else None
    prof = cProfile.Profile() if args.profile else None
    cpu, wall = time.process_time(), time.perf_counter()
    if prof:
        prof.enable()
    failing = 0
    for task in tasks:
        failing += len(corpus.run_file(*task)[1])
    if prof:
        prof.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    judged = f" judge {spent[0]:.2f}" if spent else ""
    print(f"files {len(tasks)} cpu {cpu:.2f}{judged} wall {wall:.2f} failing {failing}")
    if prof:
        stats = pstats.Stats(prof, stream=sys.stdout)
        stats.sort_stats("cumulative").print_stats(args.profile)
        stats.sort_stats("tottime").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
