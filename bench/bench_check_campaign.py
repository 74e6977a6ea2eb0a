"""`cowlab check --campaign`: random programs per second on a process pool of one and of two
workers and on a two-worker Dask LocalCluster, measured in the same run, as ratios to the one
worker; the three must find the same (the campaign's promise: results never depend on where
the programs ran).

    python bench/bench_check_campaign.py                  # v4.5 and v6.18, 40 programs each
    python bench/bench_check_campaign.py --programs 100 --length 40 --alphabet full
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from cowlab.check.campaign import DEFAULT_LENGTH, Campaign, Params, run_campaign
from cowlab.check.journal import Journal
from cowlab.check.properties import PROPERTIES
from cowlab.check.search import Finding


@dataclass
class Measured:
    seconds: float
    cpu: float | None  # the pool workers' CPU seconds (a Dask worker's are not counted)
    findings: list[Finding]
    minimised: int  # findings minimised: one per finding, however many workers ran


def measure(
    kernels: list[str], params: Params, programs: int, jobs: int, scheduler: str | None, path: Path
) -> Measured:
    """The campaign, from a fresh journal."""
    campaign = Campaign(params, programs, path, jobs, scheduler)
    with Journal(campaign.journal, params) as journal:
        before = _children_cpu()
        started = time.perf_counter()
        done = run_campaign(kernels, campaign, journal)
        seconds = time.perf_counter() - started
        # the pool's workers are reaped when it shuts down, within run_campaign
        cpu = _children_cpu() - before if scheduler is None else None
        query = "SELECT count(*) FROM findings WHERE program IS NOT NULL"
        minimised = journal.db.execute(query).fetchone()[0]
        return Measured(seconds, cpu, done.findings, minimised)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", action="append", help="(default: v4.5 and v6.18)")
    ap.add_argument("--programs", type=int, default=40, help="programs per kernel (40)")
    ap.add_argument("--length", type=int, default=DEFAULT_LENGTH, help=f"({DEFAULT_LENGTH})")
    ap.add_argument("--alphabet", default="cow", choices=("cow", "full"), help="(cow)")
    ap.add_argument("--seed", type=int, default=0, help="(0)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds, the three taken in turn (3)")
    args = ap.parse_args(argv)
    kernels = args.kernel or ["v4.5", "v6.18"]
    params = Params(args.seed, args.length, args.alphabet, tuple(PROPERTIES))
    total = args.programs * len(kernels)
    print(f"{total} programs ({', '.join(kernels)}), length {args.length}, {args.alphabet}")
    with ExitStack() as stack:
        out = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        runs = [("1 process", 1, None), ("2 processes", 2, None)]
        try:
            from distributed import LocalCluster
        except ImportError:
            print("(no Dask: pip install 'cowlab[dask]')")
        else:
            cluster = stack.enter_context(
                LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
            )
            runs.append(("Dask, 2 workers", 2, cluster.scheduler_address))
        rounds: dict[str, list[Measured]] = {label: [] for label, _, _ in runs}
        for round in range(args.repeat):  # in turn: a busy spell of the machine hits all three
            for n, (label, jobs, scheduler) in enumerate(runs):
                journal = out / f"{round}-{n}.sqlite"  # a fresh one: nothing to resume
                m = measure(kernels, params, args.programs, jobs, scheduler, journal)
                rounds[label].append(m)
    report(rounds, total)
    return 0


def report(rounds: dict[str, list[Measured]], total: int) -> None:
    """Medians (and the range) of the rounds; the ratio of medians to one process."""
    print(
        "where              median s  (min-max)    programs/s  x 1 process  CPU s"
        "  findings  minimised"
    )
    base = statistics.median(m.seconds for m in rounds["1 process"])
    first = rounds["1 process"][0].findings
    for label, ms in rounds.items():
        times = [m.seconds for m in ms]
        median = statistics.median(times)
        cpus = [m.cpu for m in ms if m.cpu is not None]
        cpu = f"{statistics.median(cpus):5.1f}" if cpus else "    -"
        same = all(m.findings == first for m in ms)
        print(
            f"{label:17} {median:9.1f}  ({min(times):.1f}-{max(times):.1f})  {total / median:10.1f}"
            f"  {base / median:11.2f}  {cpu}  {len(ms[0].findings):8}  {ms[0].minimised:9}"
            f"{'' if same else '  DIFFERENT'}"
        )


if __name__ == "__main__":
    sys.exit(main())
