"""Anonymous mTHP (6.8+) on v6.15/v6.18: allocation per sysfs size, the 6.x folio counters, and
1da190f4d0a6's reuse rule for PTE-mapped large folios. Expected values derived by hand."""

from __future__ import annotations

import copy

import pytest

from cowlab import Kernel
from cowlab.check.clone import deep_copy
from cowlab.mm.constants import PG_anon_exclusive
from cowlab.mm.mm import folio_large_mapcount, folio_maybe_mapped_shared, folio_nr_pages, page_count

KERNELS = ["v6.15", "v6.18"]
K64 = 64 << 10


def setup(kernel_id: str, mode: str = "always") -> tuple[Kernel, int]:
    k = Kernel(kernel_id, selfcheck=True)
    k.thp_enabled = "madvise"
    k.mthp_enabled[64] = mode
    p = k.spawn()
    buf = p.mmap(2 * K64, align=K64)
    return k, buf


@pytest.mark.parametrize("kernel_id", KERNELS)
def test_write_fault_maps_a_64k_folio(kernel_id: str) -> None:
    k, buf = setup(kernel_id)
    p = k.processes[1]
    p.write(buf + 5 * 4096, b"x")  # the fault is in the middle: the folio starts at buf
    f = k.frames
    head = p.translate(buf)
    assert head is not None and folio_nr_pages(f, head) == 16
    assert [p.translate(buf + i * 4096) for i in range(16)] == list(range(head, head + 16))
    # 16 PTE mappings: _large_mapcount 16, every page mapped, refcount 16, every page exclusive
    assert folio_large_mapcount(f, head) == 16 and int(f._nr_pages_mapped[head]) == 16
    assert page_count(f, head) == 16 and not folio_maybe_mapped_shared(f, head)
    assert all(f.flags[head + i] & PG_anon_exclusive for i in range(16))
    assert p.translate(buf + K64) is None  # the next 64 KiB is another folio, not faulted yet


@pytest.mark.parametrize("kernel_id", KERNELS)
def test_knob_modes(kernel_id: str) -> None:
    k, buf = setup(kernel_id, "madvise")
    p = k.processes[1]
    p.write(buf, b"x")
    assert folio_nr_pages(k.frames, p.translate(buf) or 0) == 1  # madvise without MADV_HUGEPAGE
    p.madvise(buf + K64, K64, "hugepage")
    p.write(buf + K64, b"x")
    assert folio_nr_pages(k.frames, p.translate(buf + K64) or 0) == 16


@pytest.mark.parametrize("kernel_id", KERNELS)
def test_no_mthp_where_a_pte_exists_or_allocation_fails(kernel_id: str) -> None:
    k, buf = setup(kernel_id)
    p = k.processes[1]
    p.read(buf + 4096, 1)  # the zero page takes one PTE of the first 64 KiB
    p.write(buf, b"x")
    assert folio_nr_pages(k.frames, p.translate(buf) or 0) == 1
    k.thp_alloc_fail = True
    p.write(buf + K64, b"x")
    assert folio_nr_pages(k.frames, p.translate(buf + K64) or 0) == 1


@pytest.mark.parametrize("kernel_id", KERNELS)
def test_reuse_rule_for_a_pte_mapped_large_folio(kernel_id: str) -> None:
    k, buf = setup(kernel_id)
    p = k.processes[1]
    p.write(buf, b"p")
    head = p.translate(buf)
    assert head is not None
    child = p.fork()  # shares all 16 pages, exclusive bits cleared
    f = k.frames
    assert folio_large_mapcount(f, head) == 32 and folio_maybe_mapped_shared(f, head)
    p.write(buf, b"P")  # maybe mapped shared: copy just this 4 KiB
    assert p.translate(buf) != head and folio_large_mapcount(f, head) == 31
    child.exit()  # now only P maps it: 15 mappings, 15 references, not shared
    assert folio_large_mapcount(f, head) == 15 and page_count(f, head) == 15
    assert not folio_maybe_mapped_shared(f, head)
    p.write(buf + 4096, b"P")  # _large_mapcount == refcount and one MM: reuse
    assert p.translate(buf + 4096) == head + 1
    assert f.flags[head + 1] & PG_anon_exclusive and not f.flags[head + 2] & PG_anon_exclusive


@pytest.mark.parametrize("kernel_id", KERNELS)
def test_pinned_large_folio_not_reused_and_copied_at_fork(kernel_id: str) -> None:
    k, buf = setup(kernel_id)
    p = k.processes[1]
    p.write(buf, b"p")
    head = p.translate(buf)
    assert head is not None
    pin = p.get_user_pages(buf, 4096)  # FOLL_PIN|FOLL_LONGTERM: _pincount 1, refcount 17
    assert int(k.frames._pincount[head]) == 1 and page_count(k.frames, head) == 17
    child = p.fork()  # every exclusive page of a maybe-pinned folio is copied for the child
    assert all(child.translate(buf + i * 4096) not in range(head, head + 16) for i in range(16))
    assert folio_large_mapcount(k.frames, head) == 16
    k.unpin(pin)


def test_the_knobs_say_whether_some_size_is_on_as_they_are_written() -> None:
    """Kernel.mthp_enabled's some_on is "not every knob never", after each way of writing
    them (by size, update), and in a copy; a fault after the last write to "never" maps a
    small page, one after "always" the 64 KiB folio."""
    k = Kernel("v6.18")
    knobs = k.mthp_enabled
    assert not knobs.some_on
    knobs[64] = "always"
    assert knobs.some_on and copy.deepcopy(knobs).some_on and deep_copy(knobs, {}).some_on
    knobs.update({64: "never", 16: "inherit"})
    assert knobs.some_on
    knobs.update({16: "never"})
    assert not knobs.some_on and not copy.deepcopy(knobs).some_on
    k.thp_enabled = "always"
    p = k.spawn()
    buf = p.mmap(2 * K64, align=K64)
    p.write(buf, b"x")
    assert folio_nr_pages(k.frames, p.translate(buf) or 0) == 1
    knobs[64] = "always"
    p.write(buf + K64, b"x")
    assert folio_nr_pages(k.frames, p.translate(buf + K64) or 0) == 16


def test_no_way_of_writing_the_knobs_leaves_some_on_stale() -> None:
    """Every other dict write keeps some_on true to the knobs (|=, setdefault), and a knob is
    never removed (a sysfs file): removing one is refused, the knobs as they were."""
    knobs = Kernel("v6.18").mthp_enabled
    knobs |= {64: "madvise"}
    assert knobs.some_on
    knobs |= {64: "never"}
    assert not knobs.some_on
    assert knobs.setdefault(64, "always") == "never" and not knobs.some_on
    knobs.setdefault(8192, "always")
    assert knobs.some_on
    for remove in (
        lambda: knobs.pop(8192),
        knobs.popitem,
        knobs.clear,
        lambda: knobs.__delitem__(8192),
    ):
        with pytest.raises(TypeError, match="never removed"):
            remove()
    assert knobs[8192] == "always" and knobs.some_on
