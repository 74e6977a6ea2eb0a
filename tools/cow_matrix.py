#!/usr/bin/env python3
"""The anonymous cases of tools/testing/selftests/mm/cow.c as scenario files, and the matrix.

    python tools/cow_matrix.py generate   # writes examples/cow/*.yaml
    python tools/cow_matrix.py matrix     # runs them on every kernel, writes docs/kernels.md

Each scenario's last step expects `no_leak` to hold (cow.c PASS) or break (FAIL) on each kernel,
as derived from the kernel rules: docs/verification-later.md "Expected cow.c verdicts" (5.8 and
later) and kernel-semantics.md §F.1 (4.5 before and after 6d0a07edd17c). The matrix in
docs/kernels.md is what the model does when it runs them — not typed by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from cowlab.policy import POLICIES  # noqa: E402

OUT = ROOT / "examples" / "cow"
DOC = ROOT / "docs" / "kernels.md"

KERNELS = list(POLICIES)

# backing -> (cow.c name, class for the verdict table, test size, setup steps)
M = "mem"


def _thp(extra: list[dict]) -> list[dict]:
    return [
        {"op": "mmap", "proc": "P", "name": M, "size": "2M", "align": "2M"},
        {"op": "madvise", "proc": "P", "at": M, "size": "2M", "advice": "hugepage"},
        {"op": "write", "proc": "P", "at": M, "data": {"fill": 1, "size": "2M"}},
        {"op": "check", "proc": "P", "at": M, "expect": {"mapped": "pmd"}},
        *extra,
    ]


BACKINGS: dict[str, tuple[str, str, str, list[dict]]] = {
    "base": (
        "with base page",
        "small",
        "4K",
        [
            {"op": "mmap", "proc": "P", "name": M, "size": "4K"},
            {"op": "madvise", "proc": "P", "at": M, "size": "4K", "advice": "nohugepage"},
            {"op": "write", "proc": "P", "at": M, "data": {"fill": 1, "size": "4K"}},
        ],
    ),
    "thp": ("with THP (PMD-mapped)", "pmd", "2M", _thp([])),
    "pte_thp": (
        "with PTE-mapped THP",
        "pte",
        "2M",
        _thp(
            [
                {"op": "mprotect", "proc": "P", "at": f"{M}+4K", "size": "4K", "prot": "r"},
                {"op": "mprotect", "proc": "P", "at": f"{M}+4K", "size": "4K", "prot": "rw"},
            ]
        ),
    ),
    "single_pte": (
        "with single PTE of THP",
        "pte",
        "4K",
        _thp(
            [{"op": "madvise", "proc": "P", "at": f"{M}+4K", "size": "2044K", "advice": "dontneed"}]
        ),
    ),
    "partial_mremap": (
        "with partially mremap()'ed THP",
        "pte",
        "1M",
        _thp(
            [
                {"op": "mmap", "proc": "P", "name": "spare", "size": "1M", "prot": "none"},
                {"op": "mremap", "proc": "P", "at": f"{M}+1M", "size": "1M", "to": "spare"},
            ]
        ),
    ),
    "partial_shared": (
        "with partially shared THP",
        "pte",
        "2M",
        _thp(
            [
                {
                    "op": "madvise",
                    "proc": "P",
                    "at": f"{M}+4K",
                    "size": "2044K",
                    "advice": "dontfork",
                },
                {"op": "fork", "proc": "P", "child": "X"},
                {"op": "exit", "proc": "X"},
                {
                    "op": "madvise",
                    "proc": "P",
                    "at": f"{M}+4K",
                    "size": "2044K",
                    "advice": "dofork",
                },
            ]
        ),
    ),
}


def _w(proc: str, size: str) -> dict:
    return {"op": "write", "proc": proc, "at": M, "data": {"fill": 0xFF, "size": size}}


def _pin(proc: str, size: str, flavour: str, write: bool, fast: bool = False) -> dict:
    step = {"op": "pin", "proc": proc, "name": "p", "at": M, "size": size, "flavour": flavour}
    step["write"] = write
    if fast:
        step["fast"] = True
    return step


def _ro_rw(proc: str, size: str, soft_dirty: bool) -> list[dict]:
    steps = [{"op": "mprotect", "proc": proc, "at": M, "size": size, "prot": "r"}]
    if soft_dirty:
        steps.append({"op": "clear_refs", "proc": proc, "value": 4})
    return [*steps, {"op": "mprotect", "proc": proc, "at": M, "size": size, "prot": "rw"}]


READ_PIN = {"op": "dma_read", "pin": "p", "size": 16}
CHECK_P = {"op": "check", "proc": "P", "at": M}
FORK = {"op": "fork", "proc": "P", "child": "C"}


def _case_steps(case: str, size: str) -> list[dict]:
    s = size
    cases: dict[str, list[dict]] = {
        "cow_fork": [FORK, _w("P", s), {"op": "check", "proc": "C", "at": M}],
        "cow_fork_mprotect": [FORK, *_ro_rw("P", s, False), _w("P", s), CHECK_P],
        "vmsplice_child": [
            FORK,
            _pin("C", s, "get", False),
            {"op": "munmap", "proc": "C", "at": M, "size": s},
            _w("P", s),
            READ_PIN,
        ],
        "vmsplice_child_mprotect": [
            FORK,
            _pin("C", s, "get", False),
            {"op": "munmap", "proc": "C", "at": M, "size": s},
            *_ro_rw("P", s, False),
            _w("P", s),
            READ_PIN,
        ],
        "vmsplice_before_fork": [
            _pin("P", s, "get", False),
            FORK,
            {"op": "munmap", "proc": "P", "at": M, "size": s},
            _w("C", s),
            READ_PIN,
        ],
        "vmsplice_after_fork": [
            FORK,
            _pin("P", s, "get", False),
            {"op": "munmap", "proc": "P", "at": M, "size": s},
            _w("C", s),
            READ_PIN,
        ],
        "iouring_ro": [_pin("P", s, "longterm", True), *_ro_rw("P", s, True), _w("P", s), READ_PIN],
        "iouring_fork": [_pin("P", s, "longterm", True), FORK, _w("P", s), READ_PIN],
        "ro_pin_shared": [FORK, _pin("P", s, "longterm", False), _w("P", s), READ_PIN],
        "ro_fast_pin_shared": [FORK, _pin("P", s, "longterm", False, True), _w("P", s), READ_PIN],
        "ro_pin_previously_shared": [
            FORK,
            {"op": "exit", "proc": "C"},
            _pin("P", s, "longterm", False),
            _w("P", s),
            READ_PIN,
        ],
        "ro_fast_pin_previously_shared": [
            FORK,
            {"op": "exit", "proc": "C"},
            _pin("P", s, "longterm", False, True),
            _w("P", s),
            READ_PIN,
        ],
        "ro_pin_exclusive": [
            *_ro_rw("P", s, True),
            _pin("P", s, "longterm", False),
            _w("P", s),
            READ_PIN,
        ],
        "ro_fast_pin_exclusive": [
            *_ro_rw("P", s, True),
            _pin("P", s, "longterm", False, True),
            _w("P", s),
            READ_PIN,
        ],
    }
    return [dict(step) for step in cases[case]]


CASE_TITLES = {
    "cow_fork": "#1 Basic COW after fork()",
    "cow_fork_mprotect": "#2 Basic COW after fork() with mprotect() optimization",
    "vmsplice_child": "#3 vmsplice() + unmap in child (CVE-2020-29374)",
    "vmsplice_child_mprotect": "#4 vmsplice() + unmap in child with mprotect() optimization",
    "vmsplice_before_fork": "#5 vmsplice() before fork(), unmap in parent after fork()",
    "vmsplice_after_fork": "#6 vmsplice() + unmap in parent after fork()",
    "iouring_ro": "#7 R/O-mapping a page registered as io_uring fixed buffer",
    "iouring_fork": "#8 fork() with an io_uring fixed buffer",
    "ro_pin_shared": "#9 R/O GUP pin on R/O-mapped shared page",
    "ro_fast_pin_shared": "#10 R/O GUP-fast pin on R/O-mapped shared page",
    "ro_pin_previously_shared": "#11 R/O GUP pin on R/O-mapped previously-shared page",
    "ro_fast_pin_previously_shared": "#12 R/O GUP-fast pin on R/O-mapped previously-shared page",
    "ro_pin_exclusive": "#13 R/O GUP pin on R/O-mapped exclusive page",
    "ro_fast_pin_exclusive": "#14 R/O GUP-fast pin on R/O-mapped exclusive page",
}

# Derived verdicts: per case, per kernel, (small, PTE-mapped THP, PMD-mapped THP); "P"/"F".
P3, F3 = ("P", "P", "P"), ("F", "F", "F")


def _row(v45: tuple, post: tuple, v58: tuple, v59: tuple, v518: tuple, v519: tuple) -> dict:
    early = dict.fromkeys(["v4.5+6d0a07e", "v4.5+6d0a07e-early", "v4.14"], post)
    late = dict.fromkeys(["v5.19", "v6.15", "v6.18"], v519)
    return {"v4.5": v45, **early, "v5.8": v58, "v5.9": v59, "v5.18": v518, **late}


VMSPLICE_CHILD = _row(("F", "P", "P"), F3, P3, ("P", "P", "F"), P3, P3)
RO_PIN = _row(("P", "F", "F"), P3, P3, ("F", "F", "P"), F3, P3)
VERDICTS = {
    "cow_fork": _row(P3, P3, P3, P3, P3, P3),
    "cow_fork_mprotect": _row(P3, P3, P3, P3, P3, P3),
    "vmsplice_child": VMSPLICE_CHILD,
    "vmsplice_child_mprotect": VMSPLICE_CHILD,
    "vmsplice_before_fork": _row(("F", "P", "P"), F3, F3, ("P", "P", "F"), P3, P3),
    "vmsplice_after_fork": _row(("F", "P", "P"), F3, P3, ("P", "P", "F"), P3, P3),
    "iouring_ro": _row(("P", "F", "F"), P3, P3, ("F", "F", "P"), F3, P3),
    "iouring_fork": _row(F3, F3, F3, P3, P3, P3),
    "ro_pin_shared": _row(F3, F3, P3, F3, F3, P3),
    "ro_fast_pin_shared": _row(F3, F3, P3, F3, F3, P3),
    "ro_pin_previously_shared": RO_PIN,
    "ro_fast_pin_previously_shared": RO_PIN,
    "ro_pin_exclusive": RO_PIN,
    "ro_fast_pin_exclusive": RO_PIN,
}
CLASS_INDEX = {"small": 0, "pte": 1, "pmd": 2}

# Where the table above is too coarse. A partially mremap()'ed THP keeps its upper half mapped
# at the new place in both processes after fork, so page_trans_huge_mapcount (the largest
# mapcount of any subpage) stays 2 after the vmsplice side unmaps the lower half: 4.5.5..5.8
# copy on the parent's/child's write, and no data leaks (PASS) where a fully PTE-mapped THP
# would leak.
OVERRIDES = {
    (case, "partial_mremap", kernel): "P"
    for case in (
        "vmsplice_child",
        "vmsplice_child_mprotect",
        "vmsplice_before_fork",
        "vmsplice_after_fork",
    )
    for kernel in ("v4.5+6d0a07e", "v4.5+6d0a07e-early", "v4.14")
} | {("vmsplice_before_fork", "partial_mremap", "v5.8"): "P"}


def expected(case: str, backing: str, kernel: str) -> str:
    if (case, backing, kernel) in OVERRIDES:
        return OVERRIDES[(case, backing, kernel)]
    return VERDICTS[case][kernel][CLASS_INDEX[BACKINGS[backing][1]]]


def scenario(case: str, backing: str) -> dict:
    title, _cls, size, setup = BACKINGS[backing]
    steps = [dict(s) for s in setup] + _case_steps(case, size)
    holds = {k: ["no_leak"] for k in KERNELS if expected(case, backing, k) == "P"}
    breaks = {k: ["no_leak"] for k in KERNELS if expected(case, backing, k) == "F"}
    expect = {}
    if holds:
        expect["holds"] = holds
    if breaks:
        expect["breaks"] = breaks
    steps[-1]["expect"] = expect
    return {
        "name": f"cow.c {CASE_TITLES[case]} {title}",
        "description": (
            f"tools/testing/selftests/mm/cow.c, case {CASE_TITLES[case]}, backing '{title}'. "
            "PASS (no_leak holds) or FAIL (it breaks) per kernel as derived from the rules: "
            "docs/verification-later.md 'Expected cow.c verdicts' and kernel-semantics.md §F.1. "
            "Generated by tools/cow_matrix.py."
        ),
        "kernels": KERNELS,
        "config": {"thp": "madvise"},
        "processes": ["P"],
        "steps": steps,
    }


def generate(out: Path = OUT) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.yaml"):
        old.unlink()
    for case in VERDICTS:
        for backing in BACKINGS:
            text = yaml.safe_dump(scenario(case, backing), sort_keys=False, width=100)
            (out / f"{case}__{backing}.yaml").write_text(text)


def run_matrix() -> dict[tuple[str, str, str], tuple[str, bool]]:
    """(case, backing, kernel) -> (the model's verdict, whether it matches the derivation)."""
    from cowlab.scenario import load_scenario
    from cowlab.scenario.runner import Runner

    out = {}
    for case in VERDICTS:
        for backing in BACKINGS:
            sc = load_scenario(OUT / f"{case}__{backing}.yaml")
            for kernel in KERNELS:
                runner = Runner(sc, kernel)
                for step in sc.steps:
                    runner.run_step(step)
                verdict = "F" if runner.logical.check(runner) else "P"
                out[(case, backing, kernel)] = (verdict, verdict == expected(case, backing, kernel))
    return out


def write_doc(results: dict[tuple[str, str, str], tuple[str, bool]]) -> str:
    head = "| case | backing | " + " | ".join(KERNELS) + " |"
    lines = [head, "|" + "---|" * (len(KERNELS) + 2)]
    for case in VERDICTS:
        for backing in BACKINGS:
            cells = []
            for kernel in KERNELS:
                verdict, ok = results[(case, backing, kernel)]
                word = "PASS" if verdict == "P" else "**FAIL**"
                cells.append(word if ok else f"{word} (derived {expected(case, backing, kernel)})")
            lines.append(
                f"| {CASE_TITLES[case]} | {BACKINGS[backing][0]} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["generate", "matrix"])
    args = parser.parse_args()
    if args.what == "generate":
        generate()
        return 0
    table = write_doc(run_matrix())
    text = DOC.read_text()
    start, end = "<!-- matrix:start -->\n", "<!-- matrix:end -->"
    DOC.write_text(text[: text.index(start) + len(start)] + table + text[text.index(end) :])
    return 0


if __name__ == "__main__":
    sys.exit(main())
