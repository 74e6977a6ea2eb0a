"""The judge's checks (`check_counters`, `check_rmap`, the properties) on real states: the
states are those judged while `run_file` runs every --step-th file of examples/cow on every
policy and `search` runs depth 2 on some kernels (every --every-th judged state, copied).

--baseline SRC: each check alone over the states collected (corpus [::12] and v6.18, every
7th), a baseline tree's checker.py and scenario/oracle.py loaded beside this tree's, their
answers asserted equal, the two alternated 5 times: CPU ms a state, medians.
--search DEPTH: search("v6.18", DEPTH) timed, its `violations` apart (CPU seconds).
--answers OUT: every check's answers as JSON, on the states (corpus [::6]; v6.18, v5.10 and
v4.5, every 3rd) and on four corrupted copies of each (one to three random changes to the
counters and flags the checks read, seeded by the state's number): run it under each tree on
PYTHONPATH and compare the files (`cmp`).

    python bench/bench_judge.py --baseline base/src
    python bench/bench_judge.py --search 3
    python bench/bench_judge.py --answers new.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from _common import timed

import cowlab.scenario.runner as runner_mod
from cowlab import checker
from cowlab.check import corpus
from cowlab.check import search as search_mod
from cowlab.check.properties import PROPERTIES
from cowlab.mm import constants as C
from cowlab.policy.timeline import all_policies
from cowlab.scenario import oracle
from cowlab.scenario.runner import Runner

ROOT = Path(__file__).resolve().parent.parent


def visit_states(step: int, kernels: list[str], visit: Callable[[Runner, str], None]) -> None:
    """Call visit(runner, where) on each state the corpus subset and the searches judge."""
    judge, violations = runner_mod.judge, search_mod.violations

    def judged(runner: Runner, step_: Any, *args: Any) -> Any:
        visit(runner, f"{Path(runner.scenario.path).name}:{runner.kernel_id}:{step_.index}")
        return judge(runner, step_, *args)

    def searched(runner: Runner, wanted: tuple[str, ...]) -> dict[str, str]:
        visit(runner, "search")
        return violations(runner, wanted)

    runner_mod.judge, search_mod.violations = judged, searched  # type: ignore[assignment]
    try:
        policies = list(all_policies())
        for task in corpus.corpus_tasks(ROOT / "examples" / "cow", policies)[::step]:
            corpus.run_file(*task)
        for kernel in kernels:
            search_mod.search(kernel, 2)
    finally:
        runner_mod.judge, search_mod.violations = judge, violations


def every(n: int, keep: Callable[[Runner, int, str], None]) -> Callable[[Runner, str], None]:
    """A visitor passing every n-th state, and its number, to keep."""
    count = [0]

    def visit(runner: Runner, where: str) -> None:
        i, count[0] = count[0], count[0] + 1
        if i % n == 0:
            keep(runner, i, where)

    return visit


def load(base: Path, rel: str, name: str) -> ModuleType:
    """The baseline's src/REL as module NAME."""
    spec = importlib.util.spec_from_file_location(name, base / rel)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def checks_alone(base: Path) -> None:
    states: list[Runner] = []
    visit_states(12, ["v6.18"], every(7, lambda r, i, w: states.append(search_mod.clone(r))))
    bc = load(base, "cowlab/checker.py", "base_checker")
    bo = load(base, "cowlab/scenario/oracle.py", "base_oracle")

    def base_no_leak(r: Runner) -> list[str]:
        r.logical.__class__ = bo.LogicalMemory  # the same state, the baseline's methods
        try:
            return bo.LogicalMemory.check(r.logical, r)  # type: ignore[no-any-return]
        finally:
            r.logical.__class__ = oracle.LogicalMemory

    pairs: dict[str, tuple[Callable[[Runner], object], Callable[[Runner], object]]] = {
        "check_counters": (lambda r: bc.check_counters(r.k), lambda r: checker.check_counters(r.k)),
        "check_rmap": (lambda r: bc.check_rmap(r.k), lambda r: checker.check_rmap(r.k)),
        "no_leak": (base_no_leak, lambda r: r.logical.check(r)),
        "cow_isolation": (PROPERTIES["cow_isolation"].check,) * 2,
    }
    print(f"{len(states)} states")
    print("| check | baseline ms a state | this tree | this/baseline |")
    print("|---|---|---|---|")
    for name, (b, n) in pairs.items():
        if any(b(r) != n(r) for r in states):
            sys.exit(f"{name}: the two trees answer differently")
        cpu: tuple[list[float], list[float]] = ([], [])  # baseline, this tree (may be one check)
        for _ in range(5):
            for check, times in zip((b, n), cpu, strict=True):
                start = time.process_time()
                for r in states:
                    check(r)
                times.append((time.process_time() - start) * 1e3 / len(states))
        mb, mn = (statistics.median(times) for times in cpu)
        print(f"| {name} | {mb:.3f} | {mn:.3f} | {mn / mb:.2f} |", flush=True)


def timed_search(depth: int) -> None:
    spent = timed(search_mod, "violations")
    cpu, wall = time.process_time(), time.perf_counter()
    out = search_mod.search("v6.18", depth)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"states {out.stats.states} runs {out.stats.runs} cpu {cpu:.2f}", end=" ")
    print(f"violations {spent[0]:.2f} wall {wall:.2f}")


def answers(runner: Runner, plain: bool) -> dict[str, object]:
    """Each check's answer on the runner's state (the properties only on a state not corrupted:
    they read the history, which a corruption does not follow); an exception by its type."""
    checks: dict[str, Callable[[Runner], object]] = {
        "counters": lambda r: checker.check_counters(r.k),
        "rmap": lambda r: checker.check_rmap(r.k),
    }
    if plain:
        checks.update({name: p.check for name, p in PROPERTIES.items()})
    out: dict[str, object] = {}
    for name, check in checks.items():
        try:
            out[name] = check(runner)
        except Exception as err:  # a check that raises is an answer to compare
            out[name] = "EXC " + type(err).__name__
    return out


def corrupt(runner: Runner, rng: np.random.Generator) -> list[int]:
    """One to three random changes to a counter or flag the checks read; the kinds made."""
    k = runner.k
    f = k.frames
    alloc = f.allocated()
    heads = [int(h) for h in alloc if f.flags[h] & C.PG_head]
    kinds = []
    for _ in range(int(rng.integers(1, 4))):
        c = int(rng.integers(0, 17))
        c = c if alloc.size else 9  # drawn anyway: the same stream of draws either way
        pfn = int(alloc[rng.integers(0, alloc.size)]) if alloc.size else 0
        h = heads[int(rng.integers(0, len(heads)))] if heads else None
        d = int(rng.choice([-1, 1]))
        kinds.append(c)
        if c == 0:
            f._mapcount[pfn] += d
        elif c == 1:
            f._count[pfn] += d
        elif c == 8:
            f.flags[pfn] ^= C.PG_anon_exclusive
        elif c == 9:
            mms = list(k.mms())
            if mms:
                mms[int(rng.integers(0, len(mms)))].anon_rss += d
        elif c == 11:
            f.flags[pfn] &= ~np.uint32(C.PG_allocated)
        elif c == 12:
            f.index[pfn] += 1
        elif c == 15:
            f.flags[pfn] ^= C.PG_swapcache
        elif h is not None:
            corrupt_head(f, h, pfn, c, d, rng)
    return kinds


def corrupt_head(f: Any, h: int, pfn: int, c: int, d: int, rng: np.random.Generator) -> None:
    """The changes to a large folio's head (kinds 2-7, 10, 13, 14, 16)."""
    if c == 2:
        f.compound_mapcount[h + 1] = f.compound_mapcount[h + 1] + d
    elif c == 3:
        f._pincount[h] = f._pincount[h] + 1
    elif c == 4:
        f._nr_pages_mapped[h] = f._nr_pages_mapped[h] + d
    elif c == 5:
        f._large_mapcount[h] = f._large_mapcount[h] + d
    elif c == 6:
        f.mm_id_mapcount[h, int(rng.integers(0, 2))] = f.mm_id_mapcount[h, 0] + 1
    elif c == 7:
        f.mm_id[h, int(rng.integers(0, 2))] = int(rng.integers(1, 4))
    elif c == 10:
        f.flags[h + 1] ^= C.PG_double_map
    elif c == 13:
        f._mapcount[h + int(rng.integers(0, 1 << int(f.order[h])))] += d
    elif c == 14:
        f._count[h] += d
    elif c == 16:
        f.flags[h] ^= C.PG_anon_exclusive
        f._mapcount[pfn] += d


def all_answers(out: Path) -> None:
    entries: list[dict[str, object]] = []

    def keep(runner: Runner, i: int, where: str) -> None:
        rng = np.random.default_rng(i)
        bad = []
        for _ in range(4):
            copy = search_mod.clone(runner)
            bad.append([corrupt(copy, rng), answers(copy, plain=False)])
        entries.append({"i": i, "where": where, "plain": answers(runner, plain=True), "bad": bad})

    visit_states(6, ["v6.18", "v5.10", "v4.5"], every(3, keep))
    out.write_text(json.dumps(entries, indent=0))
    print(f"{len(entries)} states recorded in {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--baseline", type=Path, help="each check alone against this tree's src")
    mode.add_argument("--search", type=int, metavar="DEPTH", help="time a v6.18 search")
    mode.add_argument("--answers", type=Path, metavar="OUT", help="write every check's answers")
    args = ap.parse_args(argv)
    if args.baseline:
        missing = [
            r
            for r in ("cowlab/checker.py", "cowlab/scenario/oracle.py")
            if not (args.baseline / r).is_file()
        ]
        if missing:
            ap.error(f"--baseline {args.baseline}: no {missing[0]} (expected a tree's src)")
        checks_alone(args.baseline)
    elif args.answers:
        if not args.answers.parent.is_dir():
            ap.error(f"--answers {args.answers}: no directory {args.answers.parent}")
        all_answers(args.answers)
    elif args.search < 1:
        ap.error(f"--search must be 1 or more, not {args.search}")
    else:
        timed_search(args.search)
    return 0


if __name__ == "__main__":
    sys.exit(main())
