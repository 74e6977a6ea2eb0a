"""The no-leak oracle: what each process and each pin is owed, by the POSIX meaning of the program.

It knows nothing of page tables, counters or policies: fork copies, a write stays in its process,
a device's DMA lands in the process that registered the buffer, a pin sees that process's writes.
`LogicalMemory.check` compares every byte the model lets a process or a pin see with that.

Pages are immutable ``bytes`` of PAGE_SIZE, shared wherever they are equal by construction: a
fill's whole pages are one object, fork and pin share the parent's pages, a write makes a new
page only where it stores. A 1 GiB fill is one dictionary entry per page, not 1 GiB of bytes.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from cowlab.mm.constants import HPAGE_PMD_NR, PAGE_SHIFT, PAGE_SIZE, PMD_SHIFT
from cowlab.mm.pgtable import PTE_MIGRATION, HugePmd, pte_to_swp_offset

if TYPE_CHECKING:
    from cowlab.kernel import Pin, Process
    from cowlab.scenario.runner import Runner

PAGE_MASK = ~(PAGE_SIZE - 1)
ZERO_PAGE = bytes(PAGE_SIZE)

# (offset into the store, length) -> the bytes stored there
Chunks = Callable[[int, int], bytes]


@dataclass
class PinView:
    """What a pin's pages mirror: page i of the pin sees `proc`'s page at target[i] (-1: the
    mapping went away, and the device keeps what it last saw)."""

    proc: str
    target: npt.NDArray[np.int64]

    def indices_in(self, start: int, end: int) -> list[int]:
        """The pin pages mirroring a page of [start, end)."""
        return np.flatnonzero((self.target >= start) & (self.target < end)).tolist()


class LogicalMemory:
    """The POSIX meaning of the program: fork copies, writes stay in their process, a device's
    DMA lands in the process that registered the buffer, a pin sees that process's writes.

    ``pages[proc][va]`` and ``pin_pages[pin][i]`` are kept only where something was written:
    an absent page is owed zeros."""

    def __init__(self) -> None:
        self.pages: dict[str, dict[int, bytes]] = {}
        self.pin_pages: dict[str, dict[int, bytes]] = {}
        # a FOLL_GET reference (vmsplice) may lag behind its process's later stores - the
        # kernel never promised it follows them - but it may not show bytes its process never
        # had while it was attached: per such pin and page, the contents it may still show
        self.lagging: dict[str, dict[int, set[bytes]]] = {}
        # (pin, page) -> (process, address, detach number) of a pin page whose mapping went
        # away: pin pages with one identity hold one physical page (_detach)
        self.aliases: dict[tuple[str, int], tuple[str, int, int]] = {}
        self.detached = 0
        self.pins: dict[str, PinView] = {}
        self._filled: dict[int, bytes] = {}  # fill byte -> the page of it, shared

    def owed(self, proc: str, va: int) -> bytes:
        """The page at va (page-aligned) that proc is owed."""
        return self.pages.get(proc, {}).get(va, ZERO_PAGE)

    def owed_pin(self, name: str, i: int) -> bytes:
        """Page i of the pin, as the device is owed it."""
        return self.pin_pages.get(name, {}).get(i, ZERO_PAGE)

    # --- the program's stores ---------------------------------------------------------------

    def write(self, proc: str, addr: int, data: bytes) -> None:
        if data and data.count(data[:1]) == len(data):  # one byte repeated: shared pages
            page = self._filled_page(data[0])
            self._store(proc, addr, len(data), lambda _done, n: page[:n])
            return
        self._store(proc, addr, len(data), lambda done, n: data[done : done + n])

    def _filled_page(self, value: int) -> bytes:
        page = self._filled.get(value)
        if page is None:
            page = self._filled[value] = bytes([value]) * PAGE_SIZE
        return page

    def fill(self, proc: str, addr: int, length: int, value: int) -> None:
        """memset: every whole page of the range is one shared page of `value`."""
        page = self._filled_page(value)
        end = addr + length
        whole, tail = -(-addr // PAGE_SIZE) * PAGE_SIZE, end & PAGE_MASK
        if whole >= tail:  # within one page, or across one page boundary
            self._store(proc, addr, length, lambda _done, n: page[:n])
            return
        pages = self.pages.setdefault(proc, {})
        pages.update(dict.fromkeys(range(whole, tail, PAGE_SIZE), page))
        self._mirror(proc, whole, tail)
        self._store(proc, addr, whole - addr, lambda _done, n: page[:n])
        self._store(proc, tail, end - tail, lambda _done, n: page[:n])

    def _store(self, proc: str, addr: int, length: int, chunk: Chunks) -> None:
        """Store `length` bytes at addr, `chunk(done, n)` giving the n bytes after `done`; the
        pins mirroring those pages see them."""
        if length <= 0:
            return
        pages = self.pages.setdefault(proc, {})
        end = addr + length
        first = addr & PAGE_MASK
        for va in range(first, end, PAGE_SIZE):
            lo, hi = max(addr, va), min(end, va + PAGE_SIZE)
            piece = chunk(lo - addr, hi - lo)
            if hi - lo < PAGE_SIZE:
                piece = _patched(pages.get(va, ZERO_PAGE), lo - va, piece)
            pages[va] = piece
        self._mirror(proc, first, end)

    def _mirror(self, proc: str, start: int, end: int) -> None:
        """The pins of proc see its pages of [start, end) as they are now."""
        for name, view in self._views_of(proc):
            self._refresh(name, view, view.indices_in(start, end))

    def _refresh(self, name: str, view: PinView, indices: list[int]) -> None:
        """Pin pages `indices` see their process's pages as they are now."""
        pages = self.pages.get(view.proc, {})
        mirror = self.pin_pages.setdefault(name, {})
        lagging = self.lagging.get(name)
        # the targets converted at once, not a NumPy scalar per page
        for i, target in zip(indices, view.target[indices].tolist(), strict=True):
            page = pages.get(target)
            if lagging is not None:
                lagging.setdefault(i, set()).add(_trim(mirror.get(i, b"")))
            if page is None:
                mirror.pop(i, None)  # owed zeros
            else:
                mirror[i] = page

    # --- address-space changes ---------------------------------------------------------------

    def fork(self, parent: str, child: str, child_proc: Process) -> None:
        """The child is owed the parent's pages wherever it maps them (not MADV_DONTFORK)."""
        vmas = [(vma.vm_start, vma.vm_end) for vma in child_proc.mm.vmas]
        starts = [start for start, _end in vmas]
        owed = {}
        for va, page in self.pages.get(parent, {}).items():
            i = bisect_right(starts, va) - 1
            if i >= 0 and va < vmas[i][1]:
                owed[va] = page  # pages are immutable: shared, not copied
        self.pages[child] = owed

    def drop(self, proc: str, start: int, end: int) -> None:
        pages = self.pages.get(proc, {})
        first = -(-start // PAGE_SIZE) * PAGE_SIZE
        if (end - first) // PAGE_SIZE < len(pages):
            for va in range(first, end, PAGE_SIZE):
                pages.pop(va, None)
        else:
            for va in [va for va in pages if start <= va < end]:
                del pages[va]
        self.detached += 1
        for name, view in self._views_of(proc):
            self._detach(name, view, (view.target >= start) & (view.target < end))

    def _detach(self, name: str, view: PinView, gone: npt.NDArray[np.bool_]) -> None:
        """The pin pages whose mapping went away keep what they saw; pins that saw the same
        page of the process when it went away hold one physical page, so a DMA write through
        either is seen through both (the detached page's identity: process, address, and the
        number of the drop or move that detached it)."""
        for i in np.flatnonzero(gone).tolist():
            self.aliases[(name, i)] = (view.proc, int(view.target[i]), self.detached)
        view.target[gone] = -1

    def move(self, proc: str, old: int, new: int, keep: int, size: int) -> None:
        pages = self.pages.get(proc, {})
        moved = {}
        for va in [va for va in pages if old <= va < old + size]:
            page = pages.pop(va)
            if va < old + keep:
                moved[va - old + new] = page
        pages.update(moved)
        self.detached += 1
        for name, view in self._views_of(proc):
            t = view.target
            inside = (t >= old) & (t < old + keep)
            self._detach(name, view, (t >= old + keep) & (t < old + size))
            t[inside] += new - old

    def _views_of(self, proc: str) -> list[tuple[str, PinView]]:
        return [(name, view) for name, view in self.pins.items() if view.proc == proc]

    # --- pins and the device -----------------------------------------------------------------

    def pin(self, name: str, proc: str, pin: Pin) -> None:
        first = pin.addr & PAGE_MASK
        nr = len(pin.pages)
        view = self.pins[name] = PinView(proc, first + PAGE_SIZE * np.arange(nr, dtype=np.int64))
        self.pin_pages[name] = {}
        self._refresh(name, view, list(range(nr)))
        if pin.flavour == "get":
            self.lagging[name] = {}

    def unpin(self, name: str) -> None:
        del self.pins[name]
        self.pin_pages.pop(name, None)
        self.lagging.pop(name, None)
        for key in [key for key in self.aliases if key[0] == name]:
            del self.aliases[key]

    def dma_write(self, name: str, pin: Pin, offset: int, data: bytes) -> None:
        """The device's bytes land in the pin's pages and, where the pin is still attached, in
        its process's pages (which every pin of that process mirrors)."""
        base = pin.addr & PAGE_MASK
        view = self.pins[name]
        mine = self.pin_pages.setdefault(name, {})
        start = pin.addr + offset
        landed = []  # the process's pages the device wrote
        for va in range(start & PAGE_MASK, start + len(data), PAGE_SIZE):
            lo, hi = max(start, va), min(start + len(data), va + PAGE_SIZE)
            chunk = data[lo - start : hi - start]
            i = (va - base) // PAGE_SIZE
            mine[i] = _patched(mine.get(i, ZERO_PAGE), lo - va, chunk)
            target = int(view.target[i])
            if target >= 0:
                pages = self.pages.setdefault(view.proc, {})
                pages[target] = _patched(pages.get(target, ZERO_PAGE), lo - va, chunk)
                landed.append(target)
            else:
                self._dma_aliases(name, i, lo - va, chunk)
        for other, seeing in self._views_of(view.proc):  # the other pins of that process
            if other != name and landed:
                self._refresh(
                    other, seeing, np.flatnonzero(np.isin(seeing.target, landed)).tolist()
                )

    def _dma_aliases(self, name: str, i: int, offset: int, chunk: bytes) -> None:
        """A DMA write into a detached pin page, as the other pins holding that page see it."""
        identity = self.aliases.get((name, i))
        for (other, j), same in self.aliases.items():
            if same == identity and (other, j) != (name, i) and other in self.pins:
                theirs = self.pin_pages.setdefault(other, {})
                theirs[j] = _patched(theirs.get(j, ZERO_PAGE), offset, chunk)

    # --- the check -----------------------------------------------------------------------------

    def check(self, runner: Runner) -> list[str]:
        """Every byte a process or a pin can see now, against what it is owed."""
        problems: list[str] = []
        for name, proc in runner.procs.items():
            if not proc.alive:
                continue
            owed = self.pages.get(name, {})
            for vma in proc.mm.vmas:
                va = _first_difference(proc, vma.vm_start, vma.vm_end, owed)
                if va is not None:
                    problems.append(f"{name} sees other bytes than it wrote at {va:#x}")
        for pin_name in self.pins:
            pin = runner.pins.get(pin_name)
            if pin is not None:
                problems += self._check_pin(pin_name, pin, runner)
        return problems

    def _check_pin(self, name: str, pin: Pin, runner: Runner) -> list[str]:
        """A pin page owed bytes, or one whose frame holds any: the rest are zeros on both sides."""
        f = runner.k.frames
        pfns = np.asarray(pin.pages, dtype=np.int64)
        owed = self.pin_pages.get(name, {})
        lagging = self.lagging.get(name, {})
        with_data = set(np.flatnonzero(f.has_data(pfns)).tolist())
        pages = sorted(with_data | set(owed))
        at = pfns[pages]
        blobs = f.blobs.data  # a frame's bytes, trimmed, by its content id
        for i, pfn, blob in zip(pages, at.tolist(), f.content[at].tolist(), strict=True):
            seen = blobs[blob]
            differs = seen != owed.get(i, b"").rstrip(b"\0")
            if differs and pin.follows_stores(pfn) and seen not in lagging.get(i, ()):
                return [f"pin {name} page {i} holds other bytes than it is owed"]
        return []


def _first_difference(proc: Process, start: int, end: int, owed: dict[int, bytes]) -> int | None:
    """The lowest page of [start, end) that proc sees (peek: mapped or swapped out) with other
    bytes than it is owed, or None. Only pages holding a nonzero byte on either side are
    compared: the rest read as zeros on both, and a page owed a nonzero byte that proc sees
    nothing at differs without a comparison."""
    seen = _seen_with_data(proc, start, end)
    differ = [va for va, data in seen.items() if data != owed.get(va, b"").rstrip(b"\0")]
    differ += [
        va
        for va, page in owed.items()
        if start <= va < end and va not in seen and page.strip(b"\0")
    ]
    return min(differ, default=None)


def _seen_with_data(proc: Process, start: int, end: int) -> dict[int, bytes]:
    """The pages of [start, end) that proc would read a nonzero byte in, by address, trimmed of
    their trailing zeros: a mapped frame's bytes, a swapped-out page's from its swap slot (which
    may read as zeros)."""
    f = proc.kernel.frames
    blobs = f.blobs.data
    swap = proc.kernel.swap
    out: dict[int, bytes] = {}
    for idx in range(start >> PMD_SHIFT, ((end - 1) >> PMD_SHIFT) + 1):
        entry = proc.mm.pmds.get(idx)
        base = idx << PMD_SHIFT
        lo = max(0, (start - base) >> PAGE_SHIFT)
        hi = min(HPAGE_PMD_NR, (end - base) >> PAGE_SHIFT)
        if entry is None or lo >= hi:
            continue
        if isinstance(entry, HugePmd):
            pages = np.arange(lo, hi)
            pfns = entry.pfn + pages
        else:
            pfn = entry.pfn[lo:hi]
            present = (pfn >= 0) & ((entry.bits[lo:hi] & PTE_MIGRATION) == 0)
            pages = lo + np.flatnonzero(present)
            pfns = pfn[present]
            swapped = np.flatnonzero(pfn <= -2)
            for i, value in zip((lo + swapped).tolist(), pfn[swapped].tolist(), strict=True):
                out[base + (i << PAGE_SHIFT)] = swap.slot_data(f, pte_to_swp_offset(value))
        ids = f.content[pfns]
        with_data = ids != 0
        vas = (base + (pages[with_data] << PAGE_SHIFT)).tolist()
        out.update(zip(vas, [blobs[i] for i in ids[with_data].tolist()], strict=True))
    return out


def _trim(page: bytes) -> bytes:
    """A page as the content store keeps it: without its trailing zeros."""
    return page.rstrip(b"\0")


def _patched(page: bytes, offset: int, chunk: bytes) -> bytes:
    return page[:offset] + chunk + page[offset + len(chunk) :]
