#!/usr/bin/env python3
"""Memory per modelled 4 KiB page of the fork-write workload (issue 11), this tree against a
baseline copy of the model, in one run (not a test).

    python bench/bench_memory.py [--baseline OLD/src] [--size 1G] [--kernels v4.5,v6.18]
        [--thp on,off] [--reps 3] [--huge-size 64G | --skip-huge] [--out FILE]

Each measurement is a fresh child running bench_live.py's model workload on the range path (map
SIZE, write every page, fork, write every page again, the child exits) with cowlab imported from
one tree (PYTHONPATH), and that tree's memory base: a child that only imports cowlab. Bytes per
page are (peak RSS - base) / pages, as bench_live.py reports them. Repetitions alternate the
trees, and the table gives medians. Then the 64 GiB THP region written once per THP and pinned
whole (bench_live.py's --huge-child), once per kernel and tree, its wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

from _common import MIB, import_rss_mib, run_child
from bench_live import choice_list, fmt, fmt_size, kernel_list, parse_size, positive_int

HERE = Path(__file__).resolve().parent
LIVE = str(HERE / "bench_live.py")
PAGE = 4096


@contextlib.contextmanager
def tree(src: str | None) -> Iterator[None]:
    """Children started here import cowlab from src (None: as installed, this tree)."""
    saved = os.environ.get("PYTHONPATH")
    if src is not None:
        os.environ["PYTHONPATH"] = src
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def per_page(args: argparse.Namespace, trees: dict[str, str | None]) -> list[str]:
    """The fork-write table: peak RSS and bytes per page, per kernel, THP mode and tree."""
    runs: dict[tuple[str, str, str], list[float]] = {}
    pages = args.size // PAGE
    for rep in range(args.reps):
        for name, src in trees.items():
            with tree(src):
                base = import_rss_mib()
                for kernel in args.kernels:
                    for mode in args.thp:
                        print(f"  rep {rep + 1}: {name} {kernel} THP {mode}", file=sys.stderr)
                        child = [str(args.size), mode, "range"]
                        peak = run_child(LIVE, ["--model-child", kernel, *child])["peak_rss_mib"]
                        runs.setdefault((name, kernel, mode), []).append(peak)
                        runs.setdefault((name, "base", ""), []).append(base)
    lines = [
        f"Fork-write of {fmt_size(args.size)}, range path; medians of {args.reps}.",
        "",
        "| kernel | THP | " + " | ".join(f"{n} MiB | {n} B/page" for n in trees) + " |",
        "|---|---|" + "---|---|" * len(trees),
    ]
    for kernel in args.kernels:
        for mode in args.thp:
            cells = []
            for name in trees:
                peak = statistics.median(runs[name, kernel, mode])
                base = statistics.median(runs[name, "base", ""])
                cells += [fmt(peak), fmt((peak - base) * MIB / pages, count=True)]
            lines.append(f"| {kernel} | {mode} | " + " | ".join(cells) + " |")
    bases = ", ".join(f"{n} {fmt(statistics.median(runs[n, 'base', '']))}" for n in trees)
    return [*lines, "", f"Memory base (a child that only imports cowlab), MiB: {bases}."]


def huge(args: argparse.Namespace, trees: dict[str, str | None]) -> list[str]:
    lines = [
        "",
        f"{fmt_size(args.huge_size)} THP region, one write per THP, pinned whole:",
        "",
        "| tree | kernel | wall s | CPU s | peak RSS MiB |",
        "|---|---|---|---|---|",
    ]
    for name, src in trees.items():
        for kernel in args.kernels:
            print(f"  huge: {name} {kernel}", file=sys.stderr)
            before = cpu_of_children()
            with tree(src):
                r = run_child(LIVE, ["--huge-child", kernel, str(args.huge_size)])
            cpu = cpu_of_children() - before
            cells = [fmt(r["seconds"]), fmt(cpu), fmt(r["peak_rss_mib"])]
            lines.append(f"| {name} | {kernel} | " + " | ".join(cells) + " |")
    return lines


def cpu_of_children() -> float:
    """User + system seconds of the reaped children: on a loaded machine, what wall time is
    not."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="bench_memory.py", description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", help="src/ directory of the model to compare with")
    ap.add_argument("--size", type=parse_size, default=parse_size("1G"), help="region (1G)")
    ap.add_argument(
        "--kernels", type=kernel_list, default=["v4.5", "v6.18"], help="model kernels (v4.5,v6.18)"
    )
    ap.add_argument("--thp", type=choice_list({"on": True, "off": False}), default=["on", "off"])
    ap.add_argument("--reps", type=positive_int, default=3, help="repetitions (3)")
    ap.add_argument("--huge-size", type=parse_size, default=parse_size("64G"), help="(64G)")
    ap.add_argument("--skip-huge", action="store_true", help="leave out the pinned region")
    ap.add_argument("--out", help="also write the report here")
    args = ap.parse_args(argv)
    trees = trees_of(ap, args.baseline)
    lines = [f"`python bench/bench_memory.py {' '.join(sys.argv[1:] if argv is None else argv)}`"]
    lines += ["", *per_page(args, trees)]
    if not args.skip_huge:
        lines += huge(args, trees)
    report(lines, args.out)


def trees_of(ap: argparse.ArgumentParser, baseline: str | None) -> dict[str, str | None]:
    """The trees to measure, by name: the baseline's src/ (if given) and this one."""
    if baseline and not (Path(baseline) / "cowlab").is_dir():
        ap.error(f"--baseline {baseline}: no cowlab package there")
    trees: dict[str, str | None] = {"this tree": None}
    if baseline:
        trees = {"baseline": str(Path(baseline).resolve()), **trees}
    return trees


def report(lines: list[str], out: str | None) -> None:
    """Print the report, and write it to out if given."""
    text = "\n".join(lines) + "\n"
    if out:
        Path(out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
