"""The operation alphabet of the exhaustive search: what a program may do next, as scenario steps.

Every program starts from one process P mapping one 2 MiB-aligned region `buf` of private
anonymous memory, THP on (MADV_HUGEPAGE) or off (MADV_NOHUGEPAGE): the two roots. A letter is
one thing a program does — a store, a fork, a pin, a protection change — as one or two steps of
the scenario format, so a counterexample is a scenario file that `cowlab run` replays.

Addresses are chosen to reach every situation of a THP with few letters: page 0 (the head),
page 1 (a tail), the lower and the upper half (a partial unmap splits the PMD), a one-page
mprotect (cow.c's way of PTE-mapping a THP) and the whole region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cowlab.scenario.located import Loc
from cowlab.scenario.model import Address, Step

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
    """The first letters: map the region, THP on or off, and maybe store to pages 0-1 (the
    pinned pages) first, so the stories that start from populated memory are a letter
    shorter."""
    out = []
    for thp in (True, False):
        advice = "hugepage" if thp else "nohugepage"
        steps: tuple[YamlStep, ...] = (
            {"op": "mmap", "proc": "P", "name": REGION, "size": "2M", "align": "2M"},
            {"op": "madvise", "proc": "P", "at": REGION, "size": "2M", "advice": advice},
        )
        name = "map THP" if thp else "map 4K"
        out.append(Letter(name, steps))
        fill = {"op": "write", "proc": "P", "at": REGION, "size": "8K", "fill": 1}
        out.append(Letter(f"{name}, write pages 0-1", (*steps, fill)))
    return out


def letters(procs: list[str], pins: list[tuple[str, bool]], alphabet: str) -> list[Letter]:
    """Every letter a program may take next, given its live processes and pins (name, write).
    New processes are named C1, C2, ... and pins p1, p2, ... by the caller's counters."""
    out: list[Letter] = []
    for p in procs:
        out += _process_letters(p, len(procs) > 1, alphabet)
    for name, write in pins:
        out.append(Letter(f"unpin {name}", ({"op": "unpin", "pin": name},)))
        if write:
            out.append(Letter(f"DMA into {name}", ({"op": "dma_write", "pin": name, "data": ""},)))
    if alphabet == "full":
        out.append(Letter("khugepaged", ({"op": "khugepaged"},)))
        out.append(Letter("split THPs", ({"op": "split_huge_pages"},)))
        out.append(Letter("ksmd", ({"op": "ksmd", "scans": 2},)))
    return out


def _process_letters(p: str, others: bool, alphabet: str) -> list[Letter]:
    return [Letter(x.name, x.steps, p) for x in _letters_of(p, others, alphabet)]


def _letters_of(p: str, others: bool, alphabet: str) -> list[Letter]:
    at0, at1, upper = REGION, f"{REGION}+4K", f"{REGION}+1M"
    out = [
        Letter(f"{p} writes page 0", ({"op": "write", "proc": p, "at": at0, "data": ""},)),
        Letter(f"{p} writes page 1", ({"op": "write", "proc": p, "at": at1, "data": ""},)),
        Letter(f"{p} reads page 0", ({"op": "read", "proc": p, "at": at0, "size": 1},)),
        Letter(f"fork {p}", ({"op": "fork", "proc": p, "child": ""},)),
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
                {"op": "mprotect", "proc": p, "at": at1, "size": "4K", "prot": "r"},
                {"op": "mprotect", "proc": p, "at": at1, "size": "4K", "prot": "rw"},
            ),
        ),
        Letter(f"{p} drops the lower half", (_dontneed(p, at0),)),
        Letter(f"{p} drops the upper half", (_dontneed(p, upper),)),
    ]
    for flavour, write in PIN_KINDS:
        kind = f"{'R/W' if write else 'R/O'} {flavour}"
        step: YamlStep = {"op": "pin", "proc": p, "name": "", "at": at0, "size": "8K"}
        step |= {"flavour": flavour, "write": write}
        out.append(Letter(f"{p} pins pages 0-1 {kind}", (step,)))
    if others:
        out.append(Letter(f"{p} exits", ({"op": "exit", "proc": p},)))
    if alphabet == "full":
        swapout = {"op": "swapout", "proc": p, "at": at0, "size": "2M"}
        out.append(Letter(f"{p} swaps out", (swapout,)))
        merge = {"op": "madvise", "proc": p, "at": at0, "size": "2M", "advice": "mergeable"}
        out.append(Letter(f"{p} marks mergeable", (merge,)))
    return out


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
