"""The no-leak oracle: what each process and each pin is owed, by the POSIX meaning of the program.

It knows nothing of page tables, counters or policies: fork copies, a write stays in its process,
a device's DMA lands in the process that registered the buffer, a pin sees that process's writes.
`LogicalMemory.check` compares every byte the model lets a process or a pin see with that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cowlab.mm.constants import PAGE_SIZE

if TYPE_CHECKING:
    from cowlab.kernel import Pin, Process
    from cowlab.scenario.runner import Runner

PAGE_MASK = ~(PAGE_SIZE - 1)


class LogicalMemory:
    """The POSIX meaning of the program: fork copies, writes stay in their process, a device's
    DMA lands in the process that registered the buffer, a pin sees that process's writes."""

    def __init__(self) -> None:
        self.pages: dict[tuple[str, int], bytearray] = {}
        self.pin_pages: dict[tuple[str, int], bytearray] = {}
        self.attached: dict[tuple[str, int], tuple[str, int] | None] = {}

    def _page(self, table: dict[Any, bytearray], key: Any) -> bytearray:
        page = table.get(key)
        if page is None:
            page = table[key] = bytearray(PAGE_SIZE)
        return page

    def write(self, proc: str, addr: int, data: bytes) -> None:
        for va, off, chunk in _pieces(addr, data):
            self._page(self.pages, (proc, va))[off : off + len(chunk)] = chunk
        for key, target in self.attached.items():
            if target is not None and target[0] == proc:
                self._mirror(key, target)

    def _mirror(self, key: tuple[str, int], target: tuple[str, int]) -> None:
        self.pin_pages[key] = bytearray(self.pages.get(target, bytes(PAGE_SIZE)))

    def fork(self, parent: str, child: str, child_proc: Process) -> None:
        for (proc, va), page in list(self.pages.items()):
            if proc == parent and child_proc.mm.find_vma(va) is not None:
                self.pages[(child, va)] = bytearray(page)

    def drop(self, proc: str, start: int, end: int) -> None:
        for key in [k for k in self.pages if k[0] == proc and start <= k[1] < end]:
            del self.pages[key]
        for key, target in self.attached.items():
            if target is not None and target[0] == proc and start <= target[1] < end:
                self.attached[key] = None

    def move(self, proc: str, old: int, new: int, keep: int, size: int) -> None:
        moved = {}
        for key in [k for k in self.pages if k[0] == proc and old <= k[1] < old + size]:
            page = self.pages.pop(key)
            if key[1] < old + keep:
                moved[(proc, key[1] - old + new)] = page
        self.pages.update(moved)
        for key, target in self.attached.items():
            if target is not None and target[0] == proc and old <= target[1] < old + size:
                inside = target[1] < old + keep
                self.attached[key] = (proc, target[1] - old + new) if inside else None

    def pin(self, name: str, proc: str, pin: Pin) -> None:
        first = pin.addr & PAGE_MASK
        for i in range(len(pin.pages)):
            target = (proc, first + i * PAGE_SIZE)
            self.attached[(name, i)] = target
            self._mirror((name, i), target)

    def unpin(self, name: str) -> None:
        for key in [k for k in self.attached if k[0] == name]:
            del self.attached[key]
            self.pin_pages.pop(key, None)

    def dma_write(self, name: str, pin: Pin, offset: int, data: bytes) -> None:
        base = pin.addr & PAGE_MASK
        for va, off, chunk in _pieces(pin.addr + offset, data):
            key = (name, (va - base) // PAGE_SIZE)
            self._page(self.pin_pages, key)[off : off + len(chunk)] = chunk
            target = self.attached.get(key)
            if target is not None:
                self._page(self.pages, target)[off : off + len(chunk)] = chunk

    def check(self, runner: Runner) -> list[str]:
        """Every byte a process or a pin can see now, against what it is owed."""
        problems: list[str] = []
        f = runner.k.frames
        for name, proc in runner.procs.items():
            if not proc.alive:
                continue
            for vma in proc.mm.vmas:
                for va in range(vma.vm_start, vma.vm_end, PAGE_SIZE):
                    pfn = proc.translate(va)
                    owed = self.pages.get((name, va))
                    seen = f.page_bytes(pfn) if pfn is not None else None
                    if _differs(seen, owed):
                        problems.append(f"{name} sees other bytes than it wrote at {va:#x}")
                        break
        for (pin_name, i), owed in self.pin_pages.items():
            pin = runner.pins.get(pin_name)
            if pin is not None and _differs(f.page_bytes(pin.pages[i]), owed):
                problems.append(f"pin {pin_name} page {i} holds other bytes than it is owed")
        return problems


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
