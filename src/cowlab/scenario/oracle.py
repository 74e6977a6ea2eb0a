"""The no-leak oracle: what each process and each pin is owed, by the POSIX meaning of the program.

It knows nothing of page tables, counters or policies: fork copies, a write stays in its process,
a device's DMA lands in the process that registered the buffer, a pin sees that process's writes.
`LogicalMemory.check` compares every byte the model lets a process or a pin see with that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cowlab.mm.constants import PAGE_SIZE

if TYPE_CHECKING:
    from cowlab.kernel import Pin, Process
    from cowlab.scenario.runner import Runner

PAGE_MASK = ~(PAGE_SIZE - 1)


@dataclass
class PinView:
    """What a pin's pages mirror: page i of the pin sees `proc`'s page at target[i] (-1: the
    mapping went away, and the device keeps what it last saw)."""

    proc: str
    target: npt.NDArray[np.int64]

    def indices_of(self, va: int) -> list[int]:
        first = int(self.target[0]) if self.target.size else -1
        i = (va - first) // PAGE_SIZE
        if first >= 0 and 0 <= i < self.target.size and self.target[i] == va:
            return [i]  # the pin still mirrors the range it was taken on
        return np.flatnonzero(self.target == va).tolist()


class LogicalMemory:
    """The POSIX meaning of the program: fork copies, writes stay in their process, a device's
    DMA lands in the process that registered the buffer, a pin sees that process's writes.

    Bytes are kept only where something was written: an absent page is owed zeros."""

    def __init__(self) -> None:
        self.pages: dict[tuple[str, int], bytearray] = {}
        self.pin_pages: dict[tuple[str, int], bytearray] = {}
        self.pins: dict[str, PinView] = {}

    def _page(self, table: dict[Any, bytearray], key: Any) -> bytearray:
        page = table.get(key)
        if page is None:
            page = table[key] = bytearray(PAGE_SIZE)
        return page

    def write(self, proc: str, addr: int, data: bytes) -> None:
        for va, off, chunk in _pieces(addr, data):
            page = self._page(self.pages, (proc, va))
            page[off : off + len(chunk)] = chunk
            for name, view in self.pins.items():
                if view.proc == proc:
                    for i in view.indices_of(va):
                        self.pin_pages[(name, i)] = bytearray(page)

    def fork(self, parent: str, child: str, child_proc: Process) -> None:
        for (proc, va), page in list(self.pages.items()):
            if proc == parent and child_proc.mm.find_vma(va) is not None:
                self.pages[(child, va)] = bytearray(page)

    def drop(self, proc: str, start: int, end: int) -> None:
        for key in [k for k in self.pages if k[0] == proc and start <= k[1] < end]:
            del self.pages[key]
        for view in self._views_of(proc):
            view.target[(view.target >= start) & (view.target < end)] = -1

    def move(self, proc: str, old: int, new: int, keep: int, size: int) -> None:
        moved = {}
        for key in [k for k in self.pages if k[0] == proc and old <= k[1] < old + size]:
            page = self.pages.pop(key)
            if key[1] < old + keep:
                moved[(proc, key[1] - old + new)] = page
        self.pages.update(moved)
        for view in self._views_of(proc):
            t = view.target
            inside = (t >= old) & (t < old + keep)
            t[(t >= old + keep) & (t < old + size)] = -1
            t[inside] += new - old

    def _views_of(self, proc: str) -> list[PinView]:
        return [view for view in self.pins.values() if view.proc == proc]

    def pin(self, name: str, proc: str, pin: Pin) -> None:
        first = pin.addr & PAGE_MASK
        target = first + PAGE_SIZE * np.arange(len(pin.pages), dtype=np.int64)
        self.pins[name] = PinView(proc, target)
        end = first + len(pin.pages) * PAGE_SIZE
        for (owner, va), page in self.pages.items():
            if owner == proc and first <= va < end:
                self.pin_pages[(name, (va - first) // PAGE_SIZE)] = bytearray(page)

    def unpin(self, name: str) -> None:
        del self.pins[name]
        for key in [k for k in self.pin_pages if k[0] == name]:
            del self.pin_pages[key]

    def dma_write(self, name: str, pin: Pin, offset: int, data: bytes) -> None:
        base = pin.addr & PAGE_MASK
        view = self.pins[name]
        for va, off, chunk in _pieces(pin.addr + offset, data):
            i = (va - base) // PAGE_SIZE
            self._page(self.pin_pages, (name, i))[off : off + len(chunk)] = chunk
            target = int(view.target[i])
            if target >= 0:
                self._page(self.pages, (view.proc, target))[off : off + len(chunk)] = chunk

    def check(self, runner: Runner) -> list[str]:
        """Every byte a process or a pin can see now, against what it is owed."""
        problems: list[str] = []
        for name, proc in runner.procs.items():
            if not proc.alive:
                continue
            for vma in proc.mm.vmas:
                for va in range(vma.vm_start, vma.vm_end, PAGE_SIZE):
                    owed = self.pages.get((name, va))
                    seen = proc.peek(va)
                    if _differs(seen, owed):
                        problems.append(f"{name} sees other bytes than it wrote at {va:#x}")
                        break
        for pin_name in self.pins:
            pin = runner.pins.get(pin_name)
            if pin is not None:
                problems += self._check_pin(pin_name, pin, runner)
        return problems

    def _check_pin(self, name: str, pin: Pin, runner: Runner) -> list[str]:
        """A pin page owed bytes, or one whose frame holds any: the rest are zeros on both sides."""
        f = runner.k.frames
        pfns = np.asarray(pin.pages, dtype=np.int64)
        with_data = f.has_data(pfns)
        owed = {i for (pin_name, i) in self.pin_pages if pin_name == name}
        for i in sorted(owed | set(np.flatnonzero(with_data).tolist())):
            if _differs(f.page_bytes(int(pfns[i])), self.pin_pages.get((name, i))):
                return [f"pin {name} page {i} holds other bytes than it is owed"]
        return []


def _differs(seen: bytes | None, owed: bytearray | None) -> bool:
    if seen is None:
        return owed is not None and any(owed)
    return seen != (bytes(owed) if owed is not None else bytes(PAGE_SIZE))


def _pieces(addr: int, data: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    done = 0
    while done < len(data):
        va = (addr + done) & PAGE_MASK
        off = (addr + done) - va
        n = min(len(data) - done, PAGE_SIZE - off)
        out.append((va, off, data[done : done + n]))
        done += n
    return out
