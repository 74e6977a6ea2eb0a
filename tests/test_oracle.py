"""The no-leak oracle (LogicalMemory) on its own: what it owes each process and pin after fork,
write, pin, DMA, unmap and mremap, and that `check` reports a model whose bytes differ from
that — a corrupted page byte, a page wrongly shared between processes, a pin's frame changed.

The kernel below only supplies the processes, pins and frames `check` reads; the oracle's own
bookkeeping is the POSIX meaning of the calls made on it, independent of any policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cowlab import Kernel, Process
from cowlab.kernel import Pin
from cowlab.mm.constants import PMD_SHIFT
from cowlab.mm.pgtable import PTE_WRITE, PteTable
from cowlab.scenario.oracle import LogicalMemory

PAGE = 4096
ZEROS = bytes(PAGE)


@dataclass
class World:
    """What LogicalMemory.check reads of a scenario runner: the kernel, named processes, pins."""

    k: Kernel
    procs: dict[str, Process] = field(default_factory=dict)
    pins: dict[str, Pin] = field(default_factory=dict)
    logical: LogicalMemory = field(default_factory=LogicalMemory)

    def write(self, name: str, addr: int, data: bytes) -> None:
        """A store in both the model and the oracle."""
        self.procs[name].write(addr, data)
        self.logical.write(name, addr, data)

    def fork(self, parent: str, child: str) -> None:
        self.procs[child] = self.procs[parent].fork()
        self.logical.fork(parent, child, self.procs[child])

    def pin(self, name: str, proc: str, addr: int, length: int) -> Pin:
        pin = self.procs[proc].get_user_pages(addr, length)
        self.pins[name] = pin
        self.logical.pin(name, proc, pin)
        return pin

    def check(self) -> list[str]:
        return self.logical.check(self)  # the runner's attributes: k, procs, pins


def world(kernel_id: str = "v6.18", pages: int = 4) -> tuple[World, int]:
    k = Kernel(kernel_id)
    w = World(k, {"P": k.spawn()})
    addr = w.procs["P"].mmap(pages * PAGE)
    return w, addr


def page(lm: LogicalMemory, proc: str, va: int) -> bytes:
    """What the oracle owes proc at the page va (zeros where nothing was written)."""
    owed = lm.owed(proc, va)
    assert len(owed) == PAGE
    return owed


def pin_page(lm: LogicalMemory, name: str, i: int) -> bytes:
    owed = lm.owed_pin(name, i)
    assert len(owed) == PAGE
    return owed


# --- the bookkeeping ----------------------------------------------------------------------


def test_a_write_stays_in_its_process_and_spans_pages() -> None:
    w, addr = world()
    w.fork("P", "C")
    w.logical.write("P", addr + PAGE - 2, b"abcd")
    assert page(w.logical, "P", addr)[-2:] == b"ab"
    assert page(w.logical, "P", addr + PAGE)[:2] == b"cd"
    assert page(w.logical, "C", addr) == ZEROS
    assert page(w.logical, "C", addr + PAGE) == ZEROS


def test_a_write_of_one_repeated_byte_keeps_the_bytes_around_it() -> None:
    """'x' then 'y' at the second byte of page 0 (earlier bytes kept), then 4K + 2 bytes of
    0xab from page 0's last byte: page 0 ends in one 0xab, page 1 is all 0xab, page 2 starts
    with one and keeps its 'tail' after it."""
    w, addr = world(pages=3)
    w.logical.write("P", addr, b"xy")
    w.logical.write("P", addr + 2 * PAGE, b"ttail")
    w.logical.write("P", addr + PAGE - 1, b"\xab" * (PAGE + 2))
    first, second, third = (page(w.logical, "P", addr + i * PAGE) for i in range(3))
    assert first == b"xy" + bytes(PAGE - 3) + b"\xab"
    assert second == b"\xab" * PAGE
    assert third == b"\xab" + b"tail" + bytes(PAGE - 5)


def test_fork_copies_and_the_copies_are_independent() -> None:
    w, addr = world()
    w.logical.write("P", addr, b"before")
    w.fork("P", "C")
    assert page(w.logical, "C", addr)[:6] == b"before"
    w.logical.write("P", addr, b"parent")
    w.logical.write("C", addr + 1, b"X")
    assert page(w.logical, "P", addr)[:6] == b"parent"
    assert page(w.logical, "C", addr)[:6] == b"bXfore"


def test_fork_copies_only_what_the_child_maps() -> None:
    """MADV_DONTFORK: the child gets no VMA there, so it is owed nothing there."""
    w, addr = world()
    w.logical.write("P", addr, b"kept")
    w.procs["P"].madvise(addr, 4 * PAGE, "dontfork")
    w.fork("P", "C")
    assert addr not in w.logical.pages["C"]


def test_a_pin_mirrors_its_process_and_only_it() -> None:
    w, addr = world()
    w.logical.write("P", addr, b"old")
    w.fork("P", "C")
    w.pin("mr", "P", addr, 2 * PAGE)
    assert pin_page(w.logical, "mr", 0)[:3] == b"old"  # what was there when pinned
    w.logical.write("P", addr + PAGE, b"new")
    w.logical.write("C", addr, b"child")
    assert pin_page(w.logical, "mr", 1)[:3] == b"new"
    assert pin_page(w.logical, "mr", 0)[:3] == b"old"


def test_dma_write_lands_in_the_pin_and_its_process() -> None:
    w, addr = world()
    w.fork("P", "C")
    pin = w.pin("mr", "P", addr, 2 * PAGE)
    w.logical.dma_write("mr", pin, PAGE - 1, b"NIC")
    assert pin_page(w.logical, "mr", 0)[-1:] == b"N"
    assert pin_page(w.logical, "mr", 1)[:2] == b"IC"
    assert page(w.logical, "P", addr)[-1:] == b"N"
    assert page(w.logical, "P", addr + PAGE)[:2] == b"IC"
    assert page(w.logical, "C", addr) == ZEROS


def test_drop_forgets_the_bytes_and_detaches_the_pin() -> None:
    """munmap: the process is owed zeros there; the device keeps what it last saw, and neither
    a later write nor a DMA connects them again."""
    w, addr = world()
    pin = w.pin("mr", "P", addr, PAGE)
    w.logical.write("P", addr, b"seen")
    w.logical.drop("P", addr, addr + PAGE)
    assert addr not in w.logical.pages["P"]
    w.logical.write("P", addr, b"later")
    assert pin_page(w.logical, "mr", 0)[:4] == b"seen"
    w.logical.dma_write("mr", pin, 0, b"DMA")
    assert page(w.logical, "P", addr)[:5] == b"later"


def test_move_carries_the_bytes_and_the_pin_along() -> None:
    """mremap from old to new keeping `keep` of `size` bytes: the rest is gone."""
    w, addr = world(pages=8)
    new = addr + 0x100000
    w.pin("mr", "P", addr, 3 * PAGE)
    for i in range(3):
        w.logical.write("P", addr + i * PAGE, bytes([65 + i]))
    w.logical.move("P", addr, new, keep=2 * PAGE, size=3 * PAGE)
    assert page(w.logical, "P", new)[:1] == b"A"
    assert page(w.logical, "P", new + PAGE)[:1] == b"B"
    assert new + 2 * PAGE not in w.logical.pages["P"]
    assert not [va for va in w.logical.pages["P"] if va < new]
    w.logical.write("P", new + PAGE, b"b")  # the pin follows the moved page
    w.logical.write("P", addr, b"stale")  # the old address is not the pin's any more
    assert pin_page(w.logical, "mr", 1)[:1] == b"b"
    assert pin_page(w.logical, "mr", 0)[:1] == b"A"
    w.logical.write("P", new + 2 * PAGE, b"c")  # the cut-off page: detached
    assert pin_page(w.logical, "mr", 2)[:1] == b"C"


def test_unpin_forgets_the_pin() -> None:
    w, addr = world()
    w.pin("mr", "P", addr, PAGE)
    w.logical.write("P", addr, b"x")
    w.logical.unpin("mr")
    assert "mr" not in w.logical.pin_pages
    assert "mr" not in w.logical.pins


# --- check: the model against what is owed ------------------------------------------------


@pytest.mark.parametrize("kernel_id", ["v4.5", "v5.19", "v6.18"])
def test_a_correct_model_owes_nothing(kernel_id: str) -> None:
    w, addr = world(kernel_id)
    w.write("P", addr, b"parent")
    w.fork("P", "C")
    w.write("C", addr, b"child")
    w.pin("mr", "P", addr + PAGE, PAGE)
    w.write("P", addr + PAGE, b"pinned")
    assert w.check() == []


def test_a_corrupted_page_byte_is_reported() -> None:
    w, addr = world()
    w.write("P", addr + PAGE, b"data")
    pfn = w.procs["P"].translate(addr + PAGE)
    assert pfn is not None and w.check() == []
    w.k.frames.write(pfn, 2, b"T")
    assert w.check() == [f"P sees other bytes than it wrote at {addr + PAGE:#x}"]


def test_bytes_where_nothing_was_written_are_reported() -> None:
    """A page the process never wrote is owed zeros."""
    w, addr = world()
    w.write("P", addr, b"x")
    w.procs["P"].read(addr + 2 * PAGE, 1)  # maps the zero page
    w.write("P", addr + 3 * PAGE, bytes(1))  # a real page, owed zeros
    pfn = w.procs["P"].translate(addr + 3 * PAGE)
    assert pfn is not None and w.check() == []
    w.k.frames.write(pfn, 100, b"?")
    assert w.check() == [f"P sees other bytes than it wrote at {addr + 3 * PAGE:#x}"]


@pytest.mark.parametrize("kernel_id", ["v4.5", "v6.18"])
def test_a_wrongly_shared_page_is_reported(kernel_id: str) -> None:
    """After fork both map the page read-only; a PTE wrongly left writable in the child lets its
    store reach the parent's page without a COW. Every counter still agrees (two mappings of
    one page): only the oracle sees it."""
    w, addr = world(kernel_id)
    w.write("P", addr, b"parent")
    w.fork("P", "C")
    table = w.procs["C"].mm.pmds[addr >> PMD_SHIFT]
    assert isinstance(table, PteTable)
    table.bits[(addr >> 12) & 511] |= PTE_WRITE
    w.write("C", addr, b"child!")
    assert w.k.check() == []
    assert w.check() == [f"P sees other bytes than it wrote at {addr:#x}"]


def test_a_pinned_frame_changed_behind_the_device_is_reported() -> None:
    w, addr = world()
    pin = w.pin("mr", "P", addr, 2 * PAGE)
    w.write("P", addr, b"payload")
    assert w.check() == []
    w.k.frames.write(pin.pages[0], 0, b"X")
    assert w.check() == [
        f"P sees other bytes than it wrote at {addr:#x}",
        "pin mr page 0 holds other bytes than it is owed",
    ]


def test_a_pinned_frame_owed_zeros_that_holds_bytes_is_reported() -> None:
    """The pin's second page was never written by anyone: its frame must hold zeros."""
    w, addr = world()
    pin = w.pin("mr", "P", addr, 2 * PAGE)
    w.write("P", addr, b"payload")
    w.procs["P"].munmap(addr + PAGE, PAGE)  # the process no longer sees it; the device does
    w.logical.drop("P", addr + PAGE, addr + 2 * PAGE)
    assert w.check() == []
    w.k.frames.write(pin.pages[1], 7, b"!")
    assert w.check() == ["pin mr page 1 holds other bytes than it is owed"]


@pytest.mark.parametrize("until", ["freed", "written"])
def test_swapped_out_bytes_are_checked(until: str) -> None:
    """A swapped-out page is read where it is (the device or the swap cache); bytes lost on the
    way are reported."""
    w, addr = world()
    w.write("P", addr, b"kept")
    w.procs["P"].swapout(addr, PAGE, until=until)
    assert w.check() == []
    if until == "freed":
        w.k.swap.data[0] = b"lost"
    else:
        w.k.frames.write(int(w.k.swap.cache[0]), 0, b"lost")
    assert w.check() == [f"P sees other bytes than it wrote at {addr:#x}"]
