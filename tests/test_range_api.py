"""Range operations as a program sees them (Process.fill, touch, write, read over many pages),
with the counts derived by hand from the kernel's rules: one fault per page first touched, one
zero-page mapping per page read, one copy per shared page written after fork. That the range
path gives exactly the page-by-page state is tests/test_range_ops.py's job."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from cowlab import Kernel, SyscallError
from cowlab.kernel import HISTORY_KEPT, Memset
from cowlab.mm.page_alloc import ZERO_PFN, ContentStore

PAGE = 4096
NR = 64


def small_pages(kernel_id: str, range_ops: bool = True) -> tuple[Kernel, int]:
    k = Kernel(kernel_id, range_ops=range_ops)
    k.thp_enabled = "never"
    p = k.spawn()
    return k, p.mmap(NR * PAGE)


@pytest.mark.parametrize("kernel_id", ["v4.5", "v5.8", "v6.18"])
def test_fill_faults_each_page_once_and_stores_the_byte(kernel_id: str) -> None:
    k, addr = small_pages(kernel_id)
    p = k.processes[1]
    p.fill(addr + 100, 40 * PAGE, 0x61)  # pages 0..40: 41 pages, both ends partial
    assert k.vmstat["pgfault"] == 41 and p.mm.anon_rss == 41
    assert p.read(addr + 98, 4) == b"\0\0aa"
    end = addr + 100 + 40 * PAGE
    assert p.read(end - 2, 4) == b"aa\0\0"
    assert p.translate(addr + 41 * PAGE) is None


@pytest.mark.parametrize("kernel_id", ["v4.5", "v5.8", "v6.18"])
@pytest.mark.parametrize("range_ops", [True, False])
def test_a_memset_write_is_the_write_of_its_bytes(kernel_id: str, range_ops: bool) -> None:
    """Memset bytes are bytes: a THP written after fork with them (from 100 bytes in, both ends
    partial) leaves every frame, the history and the COW log as the same bytes written as
    plain bytes, and reads back as them."""
    seen = []
    for data in (Memset(0x61, 2 * 512 * PAGE), b"a" * (2 * 512 * PAGE)):
        k = Kernel(kernel_id, range_ops=range_ops)
        p = k.spawn()
        addr = p.mmap(4 * 512 * PAGE, align=512 * PAGE)
        p.touch(addr, 4 * 512 * PAGE, write=True)
        p.fork()
        p.write(addr + 100, data)
        frames = [k.frames.page_bytes(pfn) for pfn in k.frames.allocated().tolist()]
        cows = [(str(e.operation), e.function, e.addr, e.old, e.new, e.reason) for e in k.cow_log]
        seen.append((frames, [str(r) for r in k.history], cows))
        end = addr + 100 + len(data)
        assert p.read(addr + 98, 4) == b"\0\0aa" and p.read(end - 2, 4) == b"aa\0\0"
    written = f"write({addr + 100:#x}, <4194304 bytes>)"  # shown as the bytes it is
    assert seen[0] == seen[1] and seen[0][1][-1].endswith(written)


def test_memset_bytes_pickle_and_copy_as_themselves() -> None:
    """A scenario holding `data: {fill: 0x61, size: 10}` may be pickled (a worker) or copied:
    the copy is Memset bytes again, the same ten bytes repeating 0x61."""
    data = Memset(0x61, 10)
    copies = [pickle.loads(pickle.dumps(data, protocol=p)) for p in range(6)]
    copies += [copy.deepcopy(data), copy.copy(data)]
    assert all(type(c) is Memset and c == b"a" * 10 and c.value == 0x61 for c in copies)


@pytest.mark.parametrize("kernel_id", ["v4.5", "v6.18"])
def test_read_touch_maps_the_zero_page_everywhere(kernel_id: str) -> None:
    k, addr = small_pages(kernel_id)
    p = k.processes[1]
    before = k.frames.nr_allocated
    p.touch(addr, NR * PAGE)
    assert [p.translate(addr + i * PAGE) for i in range(NR)] == [ZERO_PFN] * NR
    assert k.vmstat["pgfault"] == NR and k.frames.nr_allocated == before


@pytest.mark.parametrize("kernel_id", ["v4.5", "v6.18"])
def test_write_touch_allocates_zeroed_pages(kernel_id: str) -> None:
    k, addr = small_pages(kernel_id)
    p = k.processes[1]
    p.touch(addr, NR * PAGE)
    p.touch(addr, NR * PAGE, write=True)  # each zero page is copied: a COW of the zero page
    assert len(k.cow_log) == NR and all(e.old is None for e in k.cow_log)
    assert p.mm.anon_rss == NR and p.read(addr, PAGE) == bytes(PAGE)


@pytest.mark.parametrize(
    ("kernel_id", "range_ops"), [("v4.5", True), ("v6.18", True), ("v6.18", False)]
)
def test_fill_after_fork_copies_every_shared_page(kernel_id: str, range_ops: bool) -> None:
    """After fork each page is mapped twice: every generation copies on the parent's write."""
    k, addr = small_pages(kernel_id, range_ops)
    p = k.processes[1]
    p.fill(addr, NR * PAGE, 0x61)
    child = p.fork()
    p.fill(addr, NR * PAGE, 0x62)
    assert len(k.cow_log) == NR
    events = list(k.cow_log)
    assert [e.addr for e in events] == [addr + i * PAGE for i in range(NR)]
    assert [e.old for e in events] == [child.translate(addr + i * PAGE) for i in range(NR)]
    assert k.cow_log[-1] == events[-1] and k.cow_log[2:4] == events[2:4]
    assert child.read(addr, 2) == b"aa" and p.read(addr + (NR - 1) * PAGE, 2) == b"bb"


def test_a_fill_shares_one_content_string() -> None:
    """Equal page contents are stored once: 64 pages of 'a' are one string, 64 references."""
    k, addr = small_pages("v6.18")
    p = k.processes[1]
    p.fill(addr, NR * PAGE, 0x61)
    f = k.frames
    ids = {int(f.content[p.translate(addr + i * PAGE)]) for i in range(NR)}
    assert len(ids) == 1
    (blob,) = ids
    assert f.blobs.refs[blob] == NR and f.blobs.data[blob] == b"a" * PAGE
    p.exit()
    assert f.blobs.refs[blob] == 0 and len(f.blobs.ids) == 1  # only the zero page's b""
    assert k.check() == []


def test_put_in_order_frees_ids_by_their_last_reference() -> None:
    """Ids 5, 7, 5, 9 dropped in turn, each held as often as listed: 7 goes at the second
    drop, 5 at the third, 9 at the fourth, so the free list reads 7, 5, 9 (sorted: 5, 7, 9)."""
    store = ContentStore()
    for text in (b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h", b"i"):
        store.get(text)  # ids 1..9, one reference each
    store.hold(5)
    store.put_in_order(np.array([5, 7, 5, 9], dtype=np.int32))
    assert store.free_ids == [7, 5, 9]
    assert store.refs[5] == store.refs[7] == store.refs[9] == 0 and store.refs[6] == 1


def test_a_repeated_buffer_is_stored_as_page_by_page() -> None:
    """64 pages of 'a' (content id 1), then 'z' at the first byte (that page: id 2), then
    64 pages of 'b' from one buffer: 'b' takes id 3 before anything is dropped, id 2 goes at
    the first page and id 1 at the last, so the free list reads 2, 1 - on the range path as
    page by page, with every frame's content id the same."""
    stores = []
    for range_ops in (True, False):
        k, addr = small_pages("v6.18", range_ops)
        p = k.processes[1]
        p.write(addr, b"a" * NR * PAGE)
        p.write(addr, b"z")
        p.write(addr, b"b" * NR * PAGE)
        f = k.frames
        ids = [int(f.content[p.translate(addr + i * PAGE)]) for i in range(NR)]
        stores.append((ids, f.blobs.refs, f.blobs.free_ids, f.blobs.data))
    assert stores[0] == stores[1]
    assert stores[0][0] == [3] * NR and stores[0][2] == [2, 1]


def test_fill_of_a_non_byte_is_einval() -> None:
    k, addr = small_pages("v6.18")
    with pytest.raises(SyscallError, match="EINVAL"):
        k.processes[1].fill(addr, PAGE, 256)


def test_history_keeps_the_count_and_the_recent_records() -> None:
    k, addr = small_pages("v4.5")
    p = k.processes[1]
    for _ in range(HISTORY_KEPT + 10):
        p.read(addr, 1)
    total = HISTORY_KEPT + 10 + 2  # spawn and mmap first
    assert len(k.history) == total and len(list(k.history)) == HISTORY_KEPT
    assert str(k.history[-1]) == f"pid 1: read({addr:#x}, 1)"
    assert str(k.history[total - 1]) == str(k.history[-1])
    with pytest.raises(IndexError):
        k.history[0]
