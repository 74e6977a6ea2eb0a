#!/usr/bin/env python3
"""The anonymous cases of tools/testing/selftests/mm/cow.c as scenario files, and the matrix.

    python tools/cow_matrix.py generate   # writes examples/cow/*.yaml
    python tools/cow_matrix.py matrix     # runs them on every kernel, writes docs/kernels.md

Each scenario's last step expects `no_leak` to hold (cow.c PASS) or break (FAIL) on each kernel.
Those expectations come from one place only: the two tables of docs/cow-matrix-derivation.md
(the class of each backing, and one verdict per case, class and policy id, derived by hand from
the kernel sources). This file holds no verdicts. The matrix in docs/kernels.md is what the
model does when it runs the scenarios — not typed by hand.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
# cowlab does no linear algebra: the worker threads OpenBLAS starts when numpy loads it only
# spin (0.05 CPU s, half of numpy's import, on this 2-vCPU machine); set before cowlab imports it
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from cowlab.policy import POLICIES  # noqa: E402
from cowlab.policy.timeline import pick_key, resolve  # noqa: E402

OUT = ROOT / "examples" / "cow"
DOC = ROOT / "docs" / "kernels.md"
DERIVATION_DOC = "docs/cow-matrix-derivation.md"  # the only source of the expected verdicts
DERIVATION = ROOT / DERIVATION_DOC

KERNELS = list(POLICIES)

# backing -> (cow.c name, test size, setup steps); its class is in the derivation doc
M = "mem"


def _thp(extra: list[dict]) -> list[dict]:
    return [
        {"op": "mmap", "proc": "P", "name": M, "size": "2M", "align": "2M"},
        {"op": "madvise", "proc": "P", "at": M, "size": "2M", "advice": "hugepage"},
        {"op": "write", "proc": "P", "at": M, "data": {"fill": 1, "size": "2M"}},
        {"op": "check", "proc": "P", "at": M, "expect": {"mapped": "pmd"}},
        *extra,
    ]


BACKINGS: dict[str, tuple[str, str, list[dict]]] = {
    "base": (
        "with base page",
        "4K",
        [
            {"op": "mmap", "proc": "P", "name": M, "size": "4K"},
            {"op": "madvise", "proc": "P", "at": M, "size": "4K", "advice": "nohugepage"},
            {"op": "write", "proc": "P", "at": M, "data": {"fill": 1, "size": "4K"}},
        ],
    ),
    "thp": ("with THP (PMD-mapped)", "2M", _thp([])),
    "pte_thp": (
        "with PTE-mapped THP",
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
        "4K",
        _thp(
            [{"op": "madvise", "proc": "P", "at": f"{M}+4K", "size": "2044K", "advice": "dontneed"}]
        ),
    ),
    "partial_mremap": (
        "with partially mremap()'ed THP",
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


def _swapped(backing: str, title: str) -> tuple[str, str, list[dict]]:
    """A backing, then swapped out: MADV_PAGEOUT, its writes done, the pages left in the swap
    cache (`until: written`, what one pass leaves on the model's swap file). The check after it
    is completed per kernel by scenario(): where MADV_PAGEOUT leaves the range mapped, cow.c
    SKIPs ("S PAGEOUT")."""
    _title, size, setup = BACKINGS[backing]
    swap = {"op": "swapout", "proc": "P", "at": M, "size": size, "until": "written"}
    check = {"op": "check", "proc": "P", "at": M, "expect": {"mapped": "swap"}}
    return title, size, [*setup, swap, check]


BACKINGS |= {
    "swap_base": _swapped("base", "with swapped out base page"),
    "swap_thp": _swapped("thp", "with swapped-out THP"),
    "swap_pte_thp": _swapped("pte_thp", "with swapped-out, PTE-mapped THP"),
    "swap_single_pte": _swapped("single_pte", "with single PTE of swapped-out THP"),
}
# what the first page of a swapped-out backing shows when MADV_PAGEOUT did nothing to the range
UNSWAPPED = {"swap_base": "pte", "swap_thp": "pmd", "swap_pte_thp": "pte", "swap_single_pte": "pte"}
PAGEOUT_SKIP = "S PAGEOUT"  # cow.c: "MADV_PAGEOUT did not work", the case SKIPs
SKIPPED = (
    "PASS (no_leak holds), FAIL (it breaks) or SKIP (MADV_PAGEOUT left the range mapped: the "
    "check after the swap-out expects it so, and no_leak neither holds nor breaks)"
)


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


def _collapse_steps(case: str) -> list[dict]:
    """cow.c's run_anon_thp_test_cases on the PTE-mapped THP: MADV_COLLAPSE before or after
    fork (fully, lower-half or upper-half shared); the parent then writes 2 MiB."""
    _title, _size, setup = BACKINGS["pte_thp"]
    collapse = {"op": "madvise", "proc": "P", "at": M, "size": "2M", "advice": "collapse"}
    half = {"lower": f"{M}+1M", "upper": M}
    other = {"lower": M, "upper": f"{M}+1M"}
    if case == "collapse_before_fork":
        body, seen = [collapse, FORK], M
    elif case == "collapse_after_fork":
        body, seen = [FORK, collapse], M
    else:
        which = case.rsplit("_", 2)[1]
        dontfork = {"op": "madvise", "proc": "P", "at": half[which], "size": "1M"}
        body = [
            dict(dontfork, advice="dontfork"),
            FORK,
            {"op": "madvise", "proc": "P", "at": M, "size": "2M", "advice": "dofork"},
            collapse,
        ]
        seen = other[which]
    check = {"op": "check", "proc": "C", "at": seen}
    return [dict(s) for s in setup] + [dict(s) for s in body] + [_w("P", "2M"), check]


COLLAPSE_TITLES = {
    "collapse_before_fork": "Basic COW after fork() when collapsing before fork()",
    "collapse_after_fork": "Basic COW after fork() when collapsing after fork() (fully shared)",
    "collapse_after_fork_lower_shared": (
        "Basic COW after fork() when collapsing after fork() (lower shared)"
    ),
    "collapse_after_fork_upper_shared": (
        "Basic COW after fork() when collapsing after fork() (upper shared)"
    ),
}


class DerivationError(ValueError):
    """The derivation doc lacks a table, a column, a row or a note the generator needs."""


CELL = re.compile(r"(?P<verdict>[PF]|S (?P<errno>E[A-Z]+)|S PAGEOUT)(?:\s*\[(?P<notes>[^\]]+)\])?")
NOTE_HEADING = re.compile(r"^#{2,4} Note (?P<id>[A-Za-z0-9-]+)\b", re.MULTILINE)
KEY_COLUMNS = ("case", "class")
LABEL_COLUMNS = ("#",)  # for the reader; the generator ignores them


@dataclass(frozen=True)
class Cell:
    # "P" (cow.c PASS: no_leak holds), "F" (FAIL: it breaks), "S EINVAL" (SKIP: MADV_COLLAPSE
    # failed, collapse table), "S PAGEOUT" (SKIP: MADV_PAGEOUT left the range mapped)
    verdict: str
    notes: tuple[str, ...]  # the "Note <id>" sections of the doc that derive this cell
    line: int


@dataclass(frozen=True)
class Derivation:
    classes: dict[str, str]  # backing -> class
    cells: dict[tuple[str, str, str], Cell]  # (case, class, policy id) -> cell
    notes: frozenset[str]  # the note ids the doc has sections for
    collapse: dict[tuple[str, str], Cell]  # (collapse case, policy id) -> cell

    def cell(self, case: str, backing: str, kernel: str) -> Cell:
        return self.cells[(case, self.classes[backing], kernel)]


def _table(text: str, name: str, where: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The markdown table between <!-- name:start --> and <!-- name:end -->: its header, and
    each row with its line number."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text[text.find(start) :]:
        raise DerivationError(f"{where}: no table between {start} and {end}")
    first = text[: text.index(start)].count("\n") + 1
    body = text[text.index(start) : text.index(end, text.index(start))].splitlines()
    lines = [(first + i, line.strip()) for i, line in enumerate(body) if line.startswith("|")]
    if len(lines) < 2:
        raise DerivationError(f"{where}: the {name} table has no header")

    def split(line: str) -> list[str]:
        return [c.strip() for c in line.strip("|").split("|")]

    header = split(lines[0][1])
    rows = []
    for number, line in lines[2:]:
        cells = split(line)
        if len(cells) != len(header):
            raise DerivationError(f"{where}:{number}: {len(cells)} cells, header {len(header)}")
        rows.append((number, dict(zip(header, cells, strict=True))))
    return header, rows


def _kernel_columns(header: list[str], kernels: list[str], where: str) -> None:
    if any(key not in header for key in KEY_COLUMNS):
        raise DerivationError(f"{where}: the verdict table needs the columns {KEY_COLUMNS}")
    missing = [k for k in kernels if k not in header]
    if missing:
        raise DerivationError(
            f"{where}: the verdict table has no column for kernel(s) {', '.join(missing)}; derive "
            "their verdicts and add one column per policy id (as `cowlab kernels` lists them)"
        )
    unknown = [c for c in header if c not in (*KEY_COLUMNS, *LABEL_COLUMNS, *kernels)]
    if unknown:
        raise DerivationError(f"{where}: verdict columns {', '.join(unknown)} are no policy id")


def load_derivation(
    path: Path = DERIVATION, kernels: list[str] | None = None, cases: list[str] | None = None
) -> Derivation:
    """Parse the doc's backing-class and verdict tables: every backing needs a class, every
    kernel a column, every (case, class) one row, every cell P or F, every cited note a section."""
    kernels = KERNELS if kernels is None else kernels
    cases = list(CASE_TITLES) if cases is None else cases
    where, text = DERIVATION_DOC if path == DERIVATION else str(path), path.read_text()
    classes: dict[str, str] = {}
    for number, row in _table(text, "classes", where)[1]:
        backing = row.get("backing", "")
        if backing not in BACKINGS or backing in classes or not row.get("class"):
            raise DerivationError(f"{where}:{number}: unknown or repeated backing {backing!r}")
        classes[backing] = row["class"]
    if set(classes) != set(BACKINGS):
        missing = ", ".join(b for b in BACKINGS if b not in classes)
        raise DerivationError(f"{where}: the classes table has no row for {missing}")
    header, rows = _table(text, "verdicts", where)
    _kernel_columns(header, kernels, where)
    notes = frozenset(m["id"] for m in NOTE_HEADING.finditer(text))
    cells: dict[tuple[str, str, str], Cell] = {}
    seen: set[tuple[str, str]] = set()
    for number, row in rows:
        key = (row["case"], row["class"])
        if key[0] not in cases or key[1] not in classes.values() or key in seen:
            raise DerivationError(f"{where}:{number}: unknown or repeated row {key[0]} / {key[1]}")
        seen.add(key)
        for kernel in kernels:
            cells[(*key, kernel)] = _cell(row[kernel], number, kernel, notes, where, errno=False)
    wanted = [(case, cls) for case in cases for cls in sorted(set(classes.values()))]
    if [key for key in wanted if key not in seen]:
        absent = [f"{c} / {k}" for c, k in wanted if (c, k) not in seen]
        raise DerivationError(f"{where}: the verdict table has no row {', '.join(absent)}")
    return Derivation(classes, cells, notes, _collapse_cells(text, kernels, notes, where))


def _cell(
    text: str, number: int, kernel: str, notes: frozenset[str], where: str, errno: bool
) -> Cell:
    """One cell: P or F, a SKIP (the collapse table `S <errno>`, the verdict table
    `S PAGEOUT`), and the notes it cites."""
    match = CELL.fullmatch(text)
    pageout = match is not None and match["verdict"] == PAGEOUT_SKIP
    if match is None or (bool(match["errno"]) if not errno else pageout):
        forms = "P, F or S <errno>" if errno else f"P, F or {PAGEOUT_SKIP}"
        raise DerivationError(f"{where}:{number}: {kernel}: {text!r} is not {forms}")
    cited = tuple(n.strip() for n in (match["notes"] or "").split(",") if n.strip())
    if set(cited) - notes:
        raise DerivationError(f"{where}:{number}: no 'Note' section for {cited}")
    return Cell(match["verdict"], cited, number)


def _collapse_cells(
    text: str, kernels: list[str], notes: frozenset[str], where: str
) -> dict[tuple[str, str], Cell]:
    """The collapse table: one row per collapse case, one cell per kernel."""
    header, rows = _table(text, "collapse", where)
    _kernel_columns(["class", *header], kernels, where)
    cells: dict[tuple[str, str], Cell] = {}
    for number, row in rows:
        case = row.get("case", "")
        if case not in COLLAPSE_TITLES or (case, kernels[0]) in cells:
            raise DerivationError(f"{where}:{number}: unknown or repeated collapse case {case!r}")
        for kernel in kernels:
            cells[(case, kernel)] = _cell(row[kernel], number, kernel, notes, where, errno=True)
    missing = [c for c in COLLAPSE_TITLES if (c, kernels[0]) not in cells]
    if missing:
        raise DerivationError(f"{where}: the collapse table has no row {', '.join(missing)}")
    return cells


@functools.cache
def derivation() -> Derivation:
    return load_derivation()


def expected(case: str, backing: str, kernel: str) -> str:
    """The derived verdict, "P", "F" or "S PAGEOUT": read from the doc's verdict table, nowhere
    else."""
    return derivation().cell(case, backing, kernel).verdict


def per_release(values: dict[str, Any]) -> dict[str, Any]:
    """A per-kernel map with a key only where the value differs from what the keys before it
    say for that kernel (a scenario's value holds from its key's release on; null: none)."""
    return {kernel: values[kernel] for kernel in _release_keys(_equal_values(values))}


def _equal_values(values: dict[str, Any]) -> tuple[int, ...]:
    """Each kernel's value as the index of the first kernel with an equal one (None: -1): all
    that _release_keys compares, and the same for the many rows whose verdicts agree."""
    listed = [values[kernel] for kernel in KERNELS]
    return tuple(-1 if v is None else listed.index(v) for v in listed)


@functools.cache
def _release_keys(equal: tuple[int, ...]) -> tuple[str, ...]:
    keys: dict[str, int] = {}
    for kernel, value in zip(KERNELS, equal, strict=True):
        key = pick_key(keys, kernel)
        if (-1 if key is None else keys[key]) != value:
            keys[kernel] = value
    return tuple(keys)


def verdict_expectations(verdicts: dict[str, str]) -> dict[str, Any]:
    """P: no_leak holds, F: it breaks, on each kernel (S: neither)."""
    expect = {}
    for verdict, what in (("P", "holds"), ("F", "breaks")):
        wanted = {k: ["no_leak"] if v == verdict else None for k, v in verdicts.items()}
        if any(wanted.values()):
            expect[what] = per_release(wanted)
    return expect


def scenario(case: str, backing: str) -> dict:
    title, size, setup = BACKINGS[backing]
    steps = [dict(s) for s in setup] + _case_steps(case, size)
    verdicts = {k: expected(case, backing, k) for k in KERNELS}
    check = len(setup) - 1 if PAGEOUT_SKIP in verdicts.values() else None  # after the swap-out
    if check is not None:
        swapped = {
            k: UNSWAPPED[backing] if v == PAGEOUT_SKIP else "swap" for k, v in verdicts.items()
        }
        steps[check] = dict(steps[check], expect={"mapped": per_release(swapped)})
    steps[-1]["expect"] = verdict_expectations(verdicts)
    return {
        "name": f"cow.c {CASE_TITLES[case]} {title}",
        "description": (
            f"tools/testing/selftests/mm/cow.c, case {CASE_TITLES[case]}, backing '{title}'. "
            + ("PASS (no_leak holds) or FAIL (it breaks)" if check is None else SKIPPED)
            + " per kernel as derived by hand from the "
            f"kernel sources: {DERIVATION_DOC}, verdict table, row {case} / "
            f"{derivation().classes[backing]}. Generated by tools/cow_matrix.py."
        ),
        "kernels": KERNELS,
        "config": {"thp": "madvise"},
        "processes": ["P"],
        "steps": steps,
    }


def collapse_scenario(case: str) -> dict:
    """A collapse case: S kernels expect the MADV_COLLAPSE step's errno (cow.c SKIPs), P and F
    kernels no_leak holding or breaking at the end."""
    steps = _collapse_steps(case)
    cells = {k: derivation().collapse[(case, k)].verdict for k in KERNELS}
    collapse = next(s for s in steps if s.get("advice") == "collapse")
    if any(v.startswith("S") for v in cells.values()):
        outcome = {k: v.split()[1] if v.startswith("S") else "ok" for k, v in cells.items()}
        collapse["expect"] = {"outcome": per_release(outcome)}
    steps[-1]["expect"] = verdict_expectations(cells)
    return {
        "name": f"cow.c {COLLAPSE_TITLES[case]}",
        "description": (
            f"tools/testing/selftests/mm/cow.c, THP collapse case '{COLLAPSE_TITLES[case]}'. "
            "PASS (no_leak holds), FAIL (it breaks) or SKIP (MADV_COLLAPSE fails with the errno "
            f"given) per kernel as derived by hand: {DERIVATION_DOC}, collapse table, row "
            f"{case}. Generated by tools/cow_matrix.py."
        ),
        "kernels": KERNELS,
        "config": {"thp": "madvise"},
        "processes": ["P"],
        "steps": steps,
    }


def generate(out: Path = OUT) -> None:
    import yaml  # here: the matrix builds its rows as data (load)

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.yaml"):
        old.unlink()
    for name in scenario_names():
        text = yaml.safe_dump(row(name), sort_keys=False, width=100)
        (out / f"{name}.yaml").write_text(text)


def row(name: str) -> dict:
    """The scenario examples/cow/NAME.yaml holds, as data."""
    if "__" in name:
        case, backing = name.split("__")
        return scenario(case, backing)
    return collapse_scenario(name)


@functools.cache
def load(name: str) -> Any:
    """examples/cow/NAME.yaml's scenario, checked as its file is (test_cow_matrix: the files
    are what generate writes) but built from the row's data, not parsed from YAML again; once
    per process (workers inherit what the parent built)."""
    from cowlab.scenario.loader import parse_document
    from cowlab.scenario.located import Loc, located

    return parse_document(located(row(name), Loc(1, 1)), str(OUT / f"{name}.yaml"))


def scenario_names() -> list[str]:
    cases = [f"{case}__{backing}" for case in CASE_TITLES for backing in BACKINGS]
    return cases + list(COLLAPSE_TITLES)


def run_matrix() -> dict[tuple[str, str, str], tuple[str, bool]]:
    """(case, backing, kernel) -> (the model's verdict, whether it matches the derivation); one
    file per task, on every CPU (the files are independent)."""
    import multiprocessing  # here: one kernel's column (--kernel) needs no pool

    for name in scenario_names():
        load(name)  # parsed here once, not once per kernel
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(os.cpu_count() or 1) as pool:
        rows = pool.map(run_row, [*CASE_FILES, *COLLAPSE_TITLES])
    return {key: value for row in rows for key, value in row.items()}


CASE_FILES = [f"{case}__{backing}" for case in CASE_TITLES for backing in BACKINGS]


def run_column(kernel: str) -> dict[tuple[str, str, str], tuple[str, bool]]:
    """Every case and backing on one kernel."""
    return {
        key: v
        for name in [*CASE_FILES, *COLLAPSE_TITLES]
        for key, v in run_row(name, [kernel]).items()
    }


def run_row(
    name: str, kernels: list[str] = KERNELS
) -> dict[tuple[str, str, str], tuple[str, bool]]:
    """One file on each kernel; a kernel whose policy differs from one already run only in
    what that run never read takes its verdict (check.corpus.SharedRuns)."""
    from cowlab.check.corpus import SharedRuns

    shared: SharedRuns[str] = SharedRuns(load(name), alone=len(kernels) == 1)
    out = {}
    for kernel in kernels:
        if "__" in name:
            case, backing = name.split("__")
            verdict = shared.result(kernel, _case_verdict)
            out[(case, backing, kernel)] = (verdict, verdict == expected(case, backing, kernel))
        else:
            verdict = shared.result(kernel, _collapse_verdict)
            want = derivation().collapse[(name, kernel)].verdict
            out[(name, "collapse", kernel)] = (verdict, verdict == want)
    return out


# The matrix reads only each step's outcome, whether a page-out swapped the range, and no_leak
# after the last step: it runs the steps unjudged (Runner.run_step), as the search does. The
# expectations and the self-checks of these files are judged by `cowlab check`'s corpus, on
# every kernel they list.


def _case_verdict(runner: Any) -> str:
    for step in runner.scenario.steps:
        runner.run_step(step, judging=False)
        if step.op == "swapout" and not range_is_swapped(runner, step):
            return PAGEOUT_SKIP  # cow.c: "MADV_PAGEOUT did not work", the case is not run
    return "F" if leaks(runner) else "P"


def _collapse_verdict(runner: Any) -> str:
    outcomes = [runner.run_step(step, judging=False).outcome for step in runner.scenario.steps]
    failed = [o for o in outcomes if o != "ok"]
    return f"S {failed[0]}" if failed else "F" if leaks(runner) else "P"


def range_is_swapped(runner: Any, step: Any) -> bool:
    """cow.c's range_is_swapped() after its MADV_PAGEOUT: every page of the range has a swap
    entry in the process's page table (pagemap's "swapped"); read a page table at a time."""
    from cowlab.mm.constants import PMD_SHIFT
    from cowlab.mm.mm_types import pmd_index, pte_index
    from cowlab.mm.pgtable import PteTable, is_swap_pte

    mm = runner.procs[step.args["proc"]].mm
    addr = runner.addr(step.args["at"])
    end = addr + step.args["size"]
    while addr < end:
        table = mm.pmds.get(pmd_index(addr))
        stop = min(end, (pmd_index(addr) + 1) << PMD_SHIFT)  # this table's part of the range
        if not isinstance(table, PteTable):
            return False
        if not all(map(is_swap_pte, table.pfn[pte_index(addr) : pte_index(stop - 1) + 1].tolist())):
            return False
        addr = stop
    return True


def leaks(runner: Any) -> bool:
    """Whether no_leak breaks after the last step."""
    return bool(runner.logical.check(runner))


def write_doc(results: dict[tuple[str, str, str], tuple[str, bool]]) -> str:
    return matrix_table(results, KERNELS) + changes_between(results) + long_term(results)


def long_term(results: dict[tuple[str, str, str], tuple[str, bool]]) -> str:
    """Each long-term line's x.y.0 beside the newest stable release cowlab knows of it: the
    policy answering for each (x.y.0 plus the line's modelled backports), and the cells in which
    the two differ, read off the matrix above."""
    from cowlab.policy.release import LONG_TERM, newest_stable

    out = [
        "",
        "Long-term lines, x.y.0 beside the newest stable release known (its column is the "
        "policy answering for it: x.y.0 plus the modelled stable backports of its line):",
        "",
        "| line | x.y.0 | newest stable | cells that differ |",
        "|---|---|---|---|",
    ]
    rows = [(c, b) for c in CASE_TITLES for b in BACKINGS] + [
        (c, "collapse") for c in COLLAPSE_TITLES
    ]
    titles = CASE_TITLES | COLLAPSE_TITLES
    for line in LONG_TERM:
        base, newest = f"{line[0]}.{line[1]}", newest_stable(line)
        old, new = resolve(base).policy_id, resolve(str(newest)).policy_id
        changed: dict[tuple[str, str, str], int] = {}
        for c, b in rows:
            was, now = _word(results[(c, b, old)][0]), _word(results[(c, b, new)][0])
            if was != now:
                changed[(titles[c], was, now)] = changed.get((titles[c], was, now), 0) + 1
        moved = [
            f"{title}: {was} -> {now} ({n} backing{'s' if n > 1 else ''})"
            for (title, was, now), n in changed.items()
        ]
        out.append(
            f"| {base} | {base}.0: `{old}` | {newest}: `{new}` | "
            + ("; ".join(moved) or ("none" if new != old else "none (no modelled backport)"))
            + " |"
        )
    return "\n".join(out) + "\n"


def matrix_table(results: dict[tuple[str, str, str], tuple[str, bool]], kernels: list[str]) -> str:
    """The matrix: one row per case and backing, one column per kernel."""
    head = "| case | backing | " + " | ".join(kernels) + " |"
    lines = [head, "|" + "---|" * (len(kernels) + 2)]
    for case in CASE_TITLES:
        for backing in BACKINGS:
            cells = []
            for kernel in kernels:
                verdict, ok = results[(case, backing, kernel)]
                word = _word(verdict)
                cells.append(word if ok else f"{word} (derived {expected(case, backing, kernel)})")
            lines.append(
                f"| {CASE_TITLES[case]} | {BACKINGS[backing][0]} | " + " | ".join(cells) + " |"
            )
    for case, title in COLLAPSE_TITLES.items():
        cells = []
        for kernel in kernels:
            verdict, ok = results[(case, "collapse", kernel)]
            word = _word(verdict)
            want = derivation().collapse[(case, kernel)].verdict
            cells.append(word if ok else f"{word} (derived {want})")
        lines.append(f"| {title} | with PTE-mapped THP | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _successions() -> list[tuple[str, str]]:
    mainline = [k for k in KERNELS if not (resolve(k).review or resolve(k).backports)]
    extra = [(resolve(str(resolve(k).release.mainline)).policy_id, k) for k in KERNELS]
    pairs = list(itertools.pairwise(mainline))
    return pairs + [(b, k) for b, k in extra if k not in mainline]


def changes_between(results: dict[tuple[str, str, str], tuple[str, bool]]) -> str:
    """Where each policy's column differs from the policy before it (a stable release or review
    version: from its x.y.0)."""
    out = ["", "Where a column differs from the policy before it:", ""]
    rows = [(c, b) for c in CASE_TITLES for b in BACKINGS] + [
        (c, "collapse") for c in COLLAPSE_TITLES
    ]
    titles = CASE_TITLES | COLLAPSE_TITLES
    for before, kernel in _successions():
        moved = [
            f"{titles[c]} / {BACKINGS[b][0] if b in BACKINGS else 'collapse'}: "
            f"{_word(results[(c, b, before)][0])} -> {_word(results[(c, b, kernel)][0])}"
            for c, b in rows
            if results[(c, b, before)][0] != results[(c, b, kernel)][0]
        ]
        if moved:
            out.append(f"- `{kernel}` (from `{before}`): " + "; ".join(moved))
    return "\n".join(out) + "\n"


def _word(verdict: str) -> str:
    if verdict.startswith("S"):
        return f"SKIP ({verdict.split()[1]})"
    return "PASS" if verdict == "P" else "**FAIL**"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["generate", "matrix"])
    parser.add_argument(
        "--kernel",
        action="append",
        choices=KERNELS,
        metavar="POLICY",
        help="matrix: run only this policy's column (repeatable) and print the table, leaving "
        "docs/kernels.md alone",
    )
    args = parser.parse_args()
    try:
        derivation()
    except DerivationError as error:
        print(f"cow_matrix: {error}", file=sys.stderr)
        return 2
    if args.what == "generate":
        generate()
        return 0
    if args.kernel:
        results = {key: cell for kernel in args.kernel for key, cell in run_column(kernel).items()}
        print(matrix_table(results, args.kernel), end="")
        return 0 if all(ok for _verdict, ok in results.values()) else 1
    table = write_doc(run_matrix())
    text = DOC.read_text()
    start, end = "<!-- matrix:start -->\n", "<!-- matrix:end -->"
    DOC.write_text(text[: text.index(start) + len(start)] + table + text[text.index(end) :])
    return 0


if __name__ == "__main__":
    sys.exit(main())
