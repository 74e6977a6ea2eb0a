"""The operation alphabet of the exhaustive search: what a program may do next, as scenario steps.

Every program starts from one process P mapping one 2 MiB-aligned region `buf` of private
anonymous memory, THP on (MADV_HUGEPAGE) or off (MADV_NOHUGEPAGE): the two roots. A letter is
one thing a program does — a store, a fork, a pin, a protection change — as one or two steps of
the scenario format, so a counterexample is a scenario file that `cowlab run` replays.

Addresses are chosen to reach every situation of a THP with few letters: page 0 (stores,
loads, a one-page mprotect: cow.c's way of PTE-mapping a THP, which leaves that PTE
read-only), pages 0-1 (pins), the lower and the upper half (a partial unmap splits the PMD)
and the whole region (write-protection).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cowlab.scenario.located import Loc
from cowlab.scenario.model import Address, Step

if TYPE_CHECKING:
    from cowlab.scenario.runner import Runner

REGION = "buf"
REGION_SIZE = 2 << 20
PIN_SIZE = 8 << 10
# (flavour, write) of the pins a letter takes: an RDMA/VFIO/io_uring registration, its R/O
# form, O_DIRECT's short-term FOLL_PIN of a buffer a read from a file fills, and vmsplice's
# R/O FOLL_GET reference (CVE-2020-29374)
PIN_KINDS = (("longterm", True), ("longterm", False), ("pin", True), ("get", False))
ALPHABETS = ("cow", "full")

YamlStep = dict[str, Any]


@dataclass(frozen=True)
class Letter:
    """One choice of the search: its name and the scenario steps that make it."""

    name: str
    steps: tuple[YamlStep, ...]
    proc: str = ""  # the process it is a letter of, if any

    @property
    def kind(self) -> str:
        """The letter without its process: `writes page 0` for `C1 writes page 0`."""
        return self.name.removeprefix(f"{self.proc} ") if self.proc else self.name


def roots() -> list[Letter]:
    """The first letters: map the region, THP on or off; then maybe store to pages 0-1 (the
    pinned pages), and maybe fork: the three places COW stories start from (untouched memory
    and the zero page, a process's own memory, memory fork shared), so no story spends its
    letters getting there."""
    out = []
    for thp in (True, False):
        advice = "hugepage" if thp else "nohugepage"
        steps: tuple[YamlStep, ...] = (
            {"op": "mmap", "proc": "P", "name": REGION, "size": "2M", "align": "2M"},
            {"op": "madvise", "proc": "P", "at": REGION, "size": "2M", "advice": advice},
        )
        name = "map THP" if thp else "map 4K"
        out.append(Letter(name, steps))
        steps += ({"op": "write", "proc": "P", "at": REGION, "size": "8K", "fill": 1},)
        out.append(Letter(f"{name}, write pages 0-1", steps))
        steps += ({"op": "fork", "proc": "P", "child": ""},)
        out.append(Letter(f"{name}, write pages 0-1, fork", steps))
    return out


def root_parts() -> list[list[Letter]]:
    """The roots in parts no two of whose searches meet a common state: THP on and THP off.
    The region's VM_HUGEPAGE or VM_NOHUGEPAGE (MADV_HUGEPAGE, MADV_NOHUGEPAGE) stays on every
    VMA of it that a process has, whatever letter follows (none madvises it again, and
    mprotect, fork and MADV_DONTNEED keep a VMA's flags), and the canonical state holds every
    VMA's flags."""
    every = roots()
    parts = [
        [r for r in every if r.name.startswith("map THP")],
        [r for r in every if r.name.startswith("map 4K")],
    ]
    if sum(map(len, parts)) != len(every):  # a root in no part would go unsearched
        raise AssertionError("alphabet.root_parts: a root is in no part")
    return parts


# bounds on what a program holds at once: every story of the kernel's history needs at most
# two processes and one pin, and each more multiplies the states to visit
MAX_PROCS = 2
MAX_PINS = 1


def letters(procs: list[str], pins: list[tuple[str, bool]], alphabet: str) -> list[Letter]:
    """Every letter a program may take next, given its live processes and pins (name, write).
    New processes are named C1, C2, ... and pins p1, p2, ... by the caller's counters."""
    out: list[Letter] = []
    for p in procs:
        out += _process_letters(p, len(procs), len(pins), alphabet)
    for name, write in pins:
        out.append(Letter(f"unpin {name}", ({"op": "unpin", "pin": name},)))
        if write:
            out.append(Letter(f"DMA into {name}", ({"op": "dma_write", "pin": name, "data": ""},)))
    if alphabet == "full":
        out.append(Letter("khugepaged", ({"op": "khugepaged"},)))
        out.append(Letter("split THPs", ({"op": "split_huge_pages"},)))
        out.append(Letter("ksmd", ({"op": "ksmd", "scans": 2},)))
    return out


def scans_by_pid(alphabet: str) -> bool:
    """Whether a letter of the alphabet visits the processes in pid order: ksmd (ksm_do_scan)
    and khugepaged (khugepaged_scan), the full alphabet's. No letter of `cow` reads pids, so
    its canonical states need not hold their order."""
    return alphabet == "full"


def _process_letters(p: str, procs: int, pins: int, alphabet: str) -> list[Letter]:
    return [Letter(x.name, x.steps, p) for x in _letters_of(p, procs, pins, alphabet)]


def _letters_of(p: str, procs: int, pins: int, alphabet: str) -> list[Letter]:
    at0, upper = REGION, f"{REGION}+1M"
    out = [
        Letter(f"{p} writes page 0", ({"op": "write", "proc": p, "at": at0, "data": ""},)),
        Letter(f"{p} reads page 0", ({"op": "read", "proc": p, "at": at0, "size": 1},)),
        Letter(
            f"{p} write-protects all",
            (
                {"op": "mprotect", "proc": p, "at": at0, "size": "2M", "prot": "r"},
                {"op": "mprotect", "proc": p, "at": at0, "size": "2M", "prot": "rw"},
            ),
        ),
        Letter(
            f"{p} PTE-maps",
            (
                {"op": "mprotect", "proc": p, "at": at0, "size": "4K", "prot": "r"},
                {"op": "mprotect", "proc": p, "at": at0, "size": "4K", "prot": "rw"},
            ),
        ),
        Letter(f"{p} drops the lower half", (_dontneed(p, at0),)),
        Letter(f"{p} drops the upper half", (_dontneed(p, upper),)),
    ]
    if procs < MAX_PROCS:
        out.append(Letter(f"{p} forks", ({"op": "fork", "proc": p, "child": ""},)))
    for flavour, write in PIN_KINDS if pins < MAX_PINS else ():
        kind = f"{'R/W' if write else 'R/O'} {flavour}"
        step: YamlStep = {"op": "pin", "proc": p, "name": "", "at": at0, "size": "8K"}
        step |= {"flavour": flavour, "write": write}
        out.append(Letter(f"{p} pins pages 0-1 {kind}", (step,)))
    if procs > 1:
        out.append(Letter(f"{p} exits", ({"op": "exit", "proc": p},)))
    if alphabet == "full":
        swapout = {"op": "swapout", "proc": p, "at": at0, "size": "2M"}
        out.append(Letter(f"{p} swaps out", (swapout,)))
        merge = {"op": "madvise", "proc": p, "at": at0, "size": "2M", "advice": "mergeable"}
        out.append(Letter(f"{p} marks mergeable", (merge,)))
    return out


def idle(letter: Letter, runner: Runner, alphabet: str) -> bool:
    """A letter that would change nothing a story of the alphabet reads: a load of a page the
    process maps (only the PTE's accessed bit, which only khugepaged reads: the full
    alphabet's)."""
    if alphabet != "cow" or letter.kind != "reads page 0":
        return False
    return runner.procs[letter.proc].translate(runner.regions[REGION]) is not None


def _dontneed(p: str, at: str) -> YamlStep:
    return {"op": "madvise", "proc": p, "at": at, "size": "1M", "advice": "dontneed"}


def to_step(raw: YamlStep, index: int) -> Step:
    """A letter's step as the runner takes it (what the scenario loader makes of the file)."""
    args: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "op":
            continue
        if key in ("at",):
            region, _, off = str(value).partition("+")
            args[key] = Address(region, _size(off) if off else 0)
        elif key in ("size", "align") and isinstance(value, str):
            args[key] = _size(value)
        elif key == "data":
            args[key] = str(value).encode()
        else:
            args[key] = value
    return Step(index, str(raw["op"]), args, [], None, Loc(index + 1, 1))


def _size(text: str) -> int:
    units = {"K": 10, "M": 20, "G": 30}
    return int(text[:-1]) << units[text[-1]] if text[-1] in units else int(text)
