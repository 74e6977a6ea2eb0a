"""The rules the range paths share with the page-by-page path, a baseline tree's against this
tree's in one process: the baseline's mm/gup.py, vmscan.py, swapfile.py and range_fault.py
loaded under other names (base_gup, ...) from --baseline, this tree's from PYTHONPATH.

Operations (the default): two identical v6.18 kernels (THP off, 256 pages written; forked for
"shared", swapped out for "swapped-out"), the kernel's entry points pointed at one tree's
functions or the other's before each operation, the trees alternated every operation and
which goes first round by round, gc off while timing. CPU µs a page (time.process_time), the
median of --rounds rounds (a round: 256 one-page operations, or one over the 256 pages).
--functions: each function alone on one v6.18 kernel, every call side-effect free, 2,000 calls
a round, the trees alternated round by round: the median and the lowest round.

    git archive BASE src | tar -x -C /tmp/base   # the baseline's tree
    python bench/bench_rules.py --baseline /tmp/base/src --rounds 15
    python bench/bench_rules.py --baseline /tmp/base/src --rounds 9 --functions
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import cowlab.kernel as kernel_mod
from cowlab import Kernel, Process
from cowlab.mm import gup, memory, range_fault, swapfile, vmscan
from cowlab.mm.constants import FOLL_PIN as F

PAGE, N, CALLS = 4096, 256, 2000
TREES = ("base", "new")


def load(base: Path, name: str) -> ModuleType:
    """The baseline's mm/NAME.py as module base_NAME."""
    spec = importlib.util.spec_from_file_location(
        f"base_{name}", base / "cowlab" / "mm" / f"{name}.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def machine(range_ops: bool = True, shared: bool = False, swapped: str = "") -> Process:
    """A v6.18 process (THP off) with N pages written, forked or swapped out if asked."""
    k = Kernel("v6.18", range_ops=range_ops)
    k.thp_enabled = "never"
    p = k.spawn()
    a = p.mmap(N * PAGE)
    p.write(a, b"x" * (N * PAGE))
    if shared:
        p.fork()
    if swapped:
        p.swapout(a, N * PAGE, swapped)
    return p


def first(p: Process) -> int:
    """The start of the one mapping machine() made."""
    return p.mm.vmas[0].vm_start


def order(r: int) -> tuple[str, str]:
    """Which tree goes first in round r: each in turn."""
    return TREES if r % 2 == 0 else TREES[::-1]


def pin(p: Process, a: int, n: int) -> None:
    p.get_user_pages(a, n, write=False, flavour="pin")


def pageout(p: Process, a: int, n: int) -> None:
    p.swapout(a, n)


def write(p: Process, a: int, n: int) -> None:
    p.write(a, b"y" * n)


OPERATIONS: list[tuple[str, Callable[[Process, int, int], None], bool, dict[str, Any]]] = [
    ("R/O FOLL_PIN of 1 exclusive page", pin, False, {}),
    ("R/O FOLL_PIN of 1 shared page (unshare)", pin, False, {"shared": True}),
    ("MADV_PAGEOUT of 1 page", pageout, False, {}),
    ("write to 1 swapped-out page", write, False, {"swapped": "written"}),
    (f"R/O FOLL_PIN of {N} exclusive pages", pin, True, {}),
    (f"R/O FOLL_PIN of {N} shared pages", pin, True, {"shared": True}),
    (f"MADV_PAGEOUT of {N} pages", pageout, True, {}),
    (f"write to {N} swapped-out pages", write, True, {"swapped": "written"}),
]


def operations(base: Path, rounds: int, only: str) -> None:
    mods = {n: load(base, n) for n in ("gup", "vmscan", "swapfile", "range_fault")}
    entry = {
        "base": (mods["gup"].get_user_pages, mods["vmscan"], mods["range_fault"].fault_in_range,
                 mods["swapfile"].should_try_to_free_swap, mods["swapfile"].try_to_free_swap),
        "new": (gup.get_user_pages, vmscan, range_fault.fault_in_range,
                swapfile.should_try_to_free_swap, swapfile.try_to_free_swap),
    }  # fmt: skip

    def use(tree: str) -> None:
        (kernel_mod.get_user_pages, kernel_mod.vmscan, kernel_mod.fault_in_range,
         memory.should_try_to_free_swap, memory.try_to_free_swap) = entry[tree]  # fmt: skip

    def one_round(
        r: int, range_ops: bool, op: Callable[..., None], whole: bool, **kw: Any
    ) -> dict[str, float]:
        use("new")  # the set-up is the same on both trees
        procs = {t: machine(range_ops, **kw) for t in order(r)}
        steps = [(0, N)] if whole else [(i, 1) for i in range(N)]
        cpu = dict.fromkeys(TREES, 0.0)
        gc.collect()
        gc.disable()
        for j, (i, n) in enumerate(steps):
            for tree in order(j + r):
                use(tree)
                start = time.process_time()
                op(procs[tree], first(procs[tree]) + i * PAGE, n * PAGE)
                cpu[tree] += time.process_time() - start
        gc.enable()
        use("new")
        return {t: c / N * 1e6 for t, c in cpu.items()}

    print("| range_ops | operation | baseline µs/page | this tree | this/baseline |")
    print("|---|---|---|---|---|")
    for range_ops in (False, True):
        for name, op, whole, kw in OPERATIONS:
            if (whole and not range_ops) or only not in name:
                continue
            got = [one_round(r, range_ops, op, whole, **kw) for r in range(rounds)]
            b, n = (statistics.median(g[t] for g in got) for t in TREES)
            print(
                f"| {'on' if range_ops else 'off'} | {name} | {b:.2f} | {n:.2f} | {n / b:.3f} |",
                flush=True,
            )


def functions(base: Path, rounds: int, only: str) -> None:
    trees = {
        "gup": {"base": load(base, "gup"), "new": gup},
        "swapfile": {"base": load(base, "swapfile"), "new": swapfile},
    }
    pe, ps = machine(), machine(shared=True)
    pw = machine(swapped="writeback")  # in the swap cache, under writeback: nothing freed
    pw.read(first(pw), N * PAGE)  # mapped again, still in the swap cache
    ke, ae, ks, as_, kw, aw = pe.kernel, first(pe), ps.kernel, first(ps), pw.kernel, first(pw)
    vme, vms = pe.mm.find_vma(ae), ps.mm.find_vma(as_)
    pfn = int(pw.mm.pmds[aw >> 21].pfn[(aw >> 12) & 511])
    cases: list[tuple[str, str, Callable[[Any], object]]] = [
        ("swapfile", "page_swapped, small page", lambda m: m.page_swapped(kw, pfn)),
        (
            "gup",
            "unshare_decision, writable exclusive PTE",
            lambda m: m.unshare_decision(ke, vme, ae, F),
        ),
        (
            "gup",
            "unshare_decision, read-only shared PTE",
            lambda m: m.unshare_decision(ks, vms, as_, F),
        ),
        ("gup", "follow_page_mask, one PTE", lambda m: m.follow_page_mask(ke, pe.mm, ae, F)),
        ("gup", "_kept_end, 1 exclusive page", lambda m: m._kept_end(ke, vme, ae, ae + PAGE, F)),
        (
            "gup",
            f"_kept_end, {N} exclusive pages",
            lambda m: m._kept_end(ke, vme, ae, ae + N * PAGE, F),
        ),
        ("gup", "follow_range, 1 page", lambda m: m.follow_range(ke, vme, ae, ae + PAGE, F)),
        (
            "gup",
            f"follow_range, {N} pages",
            lambda m: m.follow_range(ke, vme, ae, ae + N * PAGE, F),
        ),
        (
            "swapfile",
            "should_try_to_free_swap, swap-cache page",
            lambda m: m.should_try_to_free_swap(kw, pfn, True),
        ),
        (
            "swapfile",
            "try_to_free_swap, page under writeback",
            lambda m: m.try_to_free_swap(kw, pfn),
        ),
    ]
    print("| function | baseline median µs | this tree | this/baseline | baseline min | this min |")
    print("|---|---|---|---|---|---|")
    for where, name, call in cases:
        if only not in name:
            continue
        got: dict[str, list[float]] = {t: [] for t in TREES}
        for r in range(rounds):
            for tree in order(r):
                mod = trees[where][tree]
                spent = timeit.timeit(lambda: call(mod), number=CALLS, timer=time.process_time)  # noqa: B023
                got[tree].append(spent / CALLS * 1e6)
        b, n = (statistics.median(got[t]) for t in TREES)
        lows = " | ".join(f"{min(got[t]):.2f}" for t in TREES)
        print(f"| {name} | {b:.2f} | {n:.2f} | {n / b:.3f} | {lows} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--baseline", type=Path, required=True, help="the baseline tree's src directory"
    )
    ap.add_argument("--rounds", type=int, default=15, help="rounds a figure, its median (15)")
    ap.add_argument(
        "--functions", action="store_true", help="each function alone, not the operations"
    )
    ap.add_argument("--only", default="", help="only the rows whose name holds this")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds must be 1 or more, not {args.rounds}")
    missing = [
        n
        for n in ("gup", "vmscan", "swapfile", "range_fault")
        if not (args.baseline / "cowlab" / "mm" / f"{n}.py").is_file()
    ]
    if missing:
        ap.error(
            f"--baseline {args.baseline}: no cowlab/mm/{missing[0]}.py (expected a tree's src)"
        )
    (functions if args.functions else operations)(args.baseline, args.rounds, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
