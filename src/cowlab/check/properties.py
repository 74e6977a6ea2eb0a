"""The properties `cowlab check` searches for violations of, each a function with a name.

A property reads the state a step left (and, for `no_unnecessary_copy`, the copies the step
made) and returns its violations, one line each; an empty list is "holds". A scenario expects
any of them by name (`holds: [cow_isolation]`, `breaks: [pin_coherence]`).

Correctness properties are owed on every kernel: a kernel that breaks one has a bug (the
corpus names the known ones). `no_unnecessary_copy` is a performance property: kernels trade
copies for simpler rules on purpose (5.9's do_wp_page simplification, 6.9's large-folio rule),
so its violations are reported but never make `cowlab check` fail (docs/check.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from cowlab import checker
from cowlab.mm.constants import HPAGE_PMD_NR, PG_allocated, PG_swapcache
from cowlab.mm.mm import heads_of, is_zero_pfn, page_mapcount
from cowlab.mm.mm_types import MmStruct
from cowlab.mm.pgtable import PTE_SPECIAL, PTE_WRITE, HugePmd

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.scenario.runner import Runner

Ints = npt.NDArray[np.int64]
INVARIANTS = ("counters", "rmap")  # the kernel's own consistency: owed on every kernel


def implied_breaks(names: object) -> set[str]:
    """The properties a `breaks:` list says break: `consistency` is the invariants and no BUG
    together, so naming it breaks the invariants, and naming an invariant breaks it."""
    said = set(names) if isinstance(names, (list, tuple, set, frozenset)) else set()
    if "consistency" in said:
        said |= set(INVARIANTS)
    if said & set(INVARIANTS):
        said.add("consistency")
    return said


@dataclass(frozen=True)
class Property:
    name: str
    kind: str  # "correctness" or "performance"
    check: Callable[[Runner], list[str]]

    @property
    def doc(self) -> str:
        """The first line of the check's docstring: what the property says."""
        return (self.check.__doc__ or "").strip().splitlines()[0]


def pin_coherence(runner: Runner) -> list[str]:
    """A DMA pin (FOLL_PIN, or the GUP reference a pre-5.7 driver took for one) sees what its
    process sees, where it is owed that (Pin.coherence_owed):
    every pinned page still attached to its address (not unmapped, discarded or moved by the
    program since) is the page the process maps there, if it maps one."""
    problems: list[str] = []
    for name, pin in runner.pins.items():
        view = runner.logical.pins.get(name)
        proc = runner.procs.get(view.proc) if view is not None else None
        if view is None or proc is None or not proc.alive:
            continue
        problems += checker.pin_incoherence(runner.k, proc, pin, view.target, view.proc, name)
    return problems


def cow_isolation(runner: Runner) -> list[str]:
    """No process sees another's writes after fork, either way: no anonymous page is writable
    by one process (a writable PTE or PMD, or a writable pin it took) while another process maps
    it or holds a reference to it (CVE-2020-29374: a R/O GUP reference taken in the child)."""
    return isolation_problems(runner.k)


def no_leak(runner: Runner) -> list[str]:
    """No data leaks or is lost: every process and every pin sees exactly the bytes the program
    owes it (its own writes and its device's, nothing of another process), across fork, COW,
    swap, migration, collapse and KSM."""
    return runner.logical.check(runner)


def consistency(runner: Runner) -> list[str]:
    """The kernel's own consistency: the counters and the rmap agree with the page tables
    and pins, and no operation hit a kernel BUG()."""
    crashed = runner.crashed_at
    # invariant: consistency.bug
    bug = [] if crashed is None else [f"kernel BUG() at step {crashed}"]
    return bug + checker.check_counters(runner.k) + checker.check_rmap(runner.k)


def no_page_leak(runner: Runner) -> list[str]:
    """No page is leaked: every allocated folio is mapped, pinned or in the swap cache."""
    return leaked_pages(runner.k)


def no_unnecessary_copy(runner: Runner) -> list[str]:
    """An exclusively owned, unpinned anonymous page is reused: a write fault copies only a page
    someone else still maps, pins or holds a swap entry of after the fault."""
    return unnecessary_copies(runner)


PROPERTIES: dict[str, Property] = {
    p.name: p
    for p in (
        Property("pin_coherence", "correctness", pin_coherence),
        Property("cow_isolation", "correctness", cow_isolation),
        Property("no_leak", "correctness", no_leak),
        Property("consistency", "correctness", consistency),
        Property("no_page_leak", "correctness", no_page_leak),
        Property("no_unnecessary_copy", "performance", no_unnecessary_copy),
    )
}


# --- cow_isolation ---------------------------------------------------------------------------


def _mapped(mm: MmStruct) -> tuple[Ints, Ints]:
    """(pfn, writable) of every normal page mm maps; a PMD counts for its 512 pages."""
    pfns: list[Ints] = []
    write: list[Ints] = []
    for entry in mm.pmds.values():
        if isinstance(entry, HugePmd):
            if not entry.huge_zero:
                pfns.append(entry.pfn + np.arange(HPAGE_PMD_NR, dtype=np.int64))
                write.append(np.full(HPAGE_PMD_NR, int(entry.write), dtype=np.int64))
            continue
        sel = np.flatnonzero((entry.pfn >= 0) & ((entry.bits & PTE_SPECIAL) == 0))
        pfns.append(entry.pfn[sel])
        write.append((entry.bits[sel] & PTE_WRITE).astype(np.int64))
    if not pfns:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(pfns), np.concatenate(write)


def _users(k: Kernel) -> tuple[Ints, Ints, Ints]:
    """(pfn, pid, writes) of every way a process reaches a page: its mappings and its pins."""
    pfns: list[Ints] = []
    pids: list[Ints] = []
    write: list[Ints] = []
    for mm in k.mms():
        p, w = _mapped(mm)
        pfns.append(p)
        write.append(w)
        pids.append(np.full(p.size, mm.pid, dtype=np.int64))
    for pin in k.pins.values():
        pfns.append(np.asarray(pin.pages, dtype=np.int64))
        write.append(np.full(len(pin.pages), int(pin.write), dtype=np.int64))
        pids.append(np.full(len(pin.pages), pin.pid, dtype=np.int64))
    if not pfns:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    return np.concatenate(pfns), np.concatenate(pids), np.concatenate(write)


def isolation_problems(k: Kernel) -> list[str]:
    if len({mm.pid for mm in k.mms()} | {pin.pid for pin in k.pins.values()}) < 2:
        return []  # a page is shared by two users (pids) or by none
    pfn, pid, write = _users(k)
    if not pfn.size:
        return []
    order = np.lexsort((pid, pfn))
    pfn, pid, write = pfn[order], pid[order], write[order]
    starts = np.flatnonzero(np.r_[True, pfn[1:] != pfn[:-1]])
    new_pid = np.r_[True, (pfn[1:] != pfn[:-1]) | (pid[1:] != pid[:-1])]
    users = np.add.reduceat(new_pid.astype(np.int64), starts)
    writes = np.maximum.reduceat(write, starts)
    # invariant: cow_isolation
    shared = np.flatnonzero((users > 1) & (writes > 0))
    return [_isolation_problem(pfn, pid, write, int(starts[i])) for i in shared.tolist()]


def _isolation_problem(pfn: Ints, pid: Ints, write: Ints, lo: int) -> str:
    """The violation at the page whose users start at index lo (sorted by pfn, then pid)."""
    hi = lo + int(np.searchsorted(pfn[lo:], pfn[lo], side="right"))
    writer = int(pid[lo:hi][write[lo:hi] != 0][0])
    others = sorted(set(pid[lo:hi].tolist()) - {writer})
    return (
        f"pfn {int(pfn[lo]):#x}: pid {writer} can write it while pid "
        f"{', '.join(map(str, others))} can see it"
    )


# --- no_page_leak ----------------------------------------------------------------------------


def leaked_pages(k: Kernel) -> list[str]:
    """Allocated folios (by head) that no mapping, pin or swap-cache slot holds."""
    f = k.frames
    allocated = f.allocated()
    if allocated.size == 0:
        return []
    held = [_mapped(mm)[0] for mm in k.mms()]
    held += [np.asarray(pin.pages, dtype=np.int64) for pin in k.pins.values()]
    cached = k.swap.cache[: k.swap.nr]
    held.append(cached[cached >= 0])
    unheld = np.zeros(f.nr, dtype=bool)  # by head, so pfn order
    unheld[heads_of(f, allocated)] = True
    unheld[heads_of(f, np.concatenate(held))] = False
    # invariant: no_page_leak
    lost = unheld.nonzero()[0]
    return [f"pfn {int(p):#x}: allocated, but nothing maps, pins or caches it" for p in lost]


# --- no_unnecessary_copy ---------------------------------------------------------------------


def unnecessary_copies(runner: Runner) -> list[str]:
    """The step's copies whose source page nobody needed after the fault: not mapped, pinned
    or swapped by anyone, or freed and handed out again by the same step."""
    k = runner.k
    f = k.frames
    copies = k.cow_log[runner.cows_at :]
    if not copies:
        return []
    pinned = {int(p) for pin in k.pins.values() for p in np.asarray(pin.pages).tolist()}
    reallocated = {event.new for event in copies}
    problems = []
    for event in copies:
        old = event.old
        if old is None or is_zero_pfn(f, old):
            continue
        # invariant: no_unnecessary_copy
        if old in reallocated or not _needed(k, old, pinned):
            problems.append(
                f"pid {event.pid} {event.addr:#x}: {event.function} copied pfn {old:#x}, "
                "which nobody else mapped, pinned or swapped"
            )
    return problems


def _needed(k: Kernel, pfn: int, pinned: set[int]) -> bool:
    f = k.frames
    if not f.flags[pfn] & PG_allocated:
        return False
    if pfn in pinned or page_mapcount(f, pfn) > 0:
        return True
    if f.flags[pfn] & PG_swapcache:
        return bool(k.swap.swap_map[int(f.private[pfn])] > 0)
    return False
