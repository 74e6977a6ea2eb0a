"""Swap-out and swap-in, state by state: each test builds a state through the API, runs one
operation and compares the state after with one derived by hand from the kernel's rules
(mm/vmscan.c shrink_page_list, mm/rmap.c try_to_unmap_one, mm/memory.c do_swap_page,
mm/swapfile.c reuse_swap_page / try_to_free_swap / free_swap_and_cache; docs/sources-swap.md).

Numbers: a fresh machine hands out slot 0 first; one mapped small page holds _count 1 (its PTE)
and the swap cache one more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from cowlab import Kernel, Process
from cowlab.checker import check_invariants
from cowlab.kernel import Config
from cowlab.mm.constants import PMD_SHIFT, PG_anon_exclusive, PG_dirty, PG_swapcache, PG_writeback
from cowlab.mm.mm import page_count
from cowlab.mm.pgtable import (
    PTE_DIRTY,
    PTE_SOFT_DIRTY,
    PTE_SWP_EXCLUSIVE,
    PTE_WRITE,
    HugePmd,
    PteTable,
    is_swap_pte,
    pte_to_swp_offset,
)
from cowlab.policy import POLICIES, resolve
from cowlab.policy.v5_11 import ReclaimSkipsPinned
from cowlab.scenario.loader import parse_scenario
from cowlab.scenario.runner import Runner
from tests.releases import since

PAGE = 4096
ALL = list(POLICIES)
SEED = ["v4.5", "v4.5+6d0a07e"]  # before and after 6d0a07edd17c
# the release sets of docs/sources-swap.md, written out (not read from the policies under test)
REUSE_SWAP_PAGE = ["v4.5", "v4.5+6d0a07e", "v4.5+6d0a07e-early", "v4.14", "v5.8", "v5.9"]  # ..5.17
EXCLUSIVE = ["v5.19", "v6.15", "v6.18"]  # 5.19+


@dataclass
class Swapped:
    k: Kernel
    p: Process
    addr: int
    pfn: int  # the frame the page had before swap-out

    def pte(self) -> tuple[int, int]:
        table = self.p.mm.pmds[self.addr >> PMD_SHIFT]
        assert isinstance(table, PteTable)
        i = (self.addr >> 12) & 511
        return int(table.pfn[i]), int(table.bits[i])


def swapped(kernel_id: str, until: str = "freed", config: Config | None = None) -> Swapped:
    """One written small page (16 KiB mapping, too small for a THP), swapped out to ``until``."""
    k = Kernel(kernel_id, config, selfcheck=True)
    p = k.spawn()
    addr = p.mmap(4 * PAGE)
    p.write(addr, b"payload")
    pfn = p.translate(addr)
    assert pfn is not None
    p.swapout(addr, PAGE, until=until)
    return Swapped(k, p, addr, pfn)


# --- swap-out -----------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_id", ALL)
def test_swapout_to_the_device(kernel_id: str) -> None:
    """Freed: a swap PTE for slot 0 (count 1), no swap-cache page, the frame free, the bytes on
    the device; MM_ANONPAGES 0, MM_SWAPENTS 1."""
    s = swapped(kernel_id)
    value, bits = s.pte()
    assert is_swap_pte(value) and pte_to_swp_offset(value) == 0
    assert bits & PTE_SOFT_DIRTY  # carried over from the dirty PTE
    assert int(s.k.swap.swap_map[0]) == 1 and int(s.k.swap.cache[0]) == -1
    assert s.k.swap.data[0] == b"payload"
    assert not s.k.frames.flags[s.pfn] & PG_swapcache and s.k.frames.nr_allocated == 0
    assert (s.p.mm.anon_rss, s.p.mm.swapents) == (0, 1)
    assert s.p.translate(s.addr) is None and s.p.peek(s.addr)[:7] == b"payload"  # type: ignore[index]
    assert check_invariants(s.k) == []


@pytest.mark.parametrize(
    ("until", "flags", "count"),
    [
        ("swapcache", PG_swapcache | PG_dirty, 1),
        ("writeback", PG_swapcache | PG_writeback, 1),
        ("written", PG_swapcache, 1),
    ],
)
@pytest.mark.parametrize("kernel_id", ALL)
def test_swapout_stages(kernel_id: str, until: str, flags: int, count: int) -> None:
    """Stopped early the page stays in the swap cache, unmapped, with only the swap cache's
    reference: dirty before it is written, under writeback, then clean."""
    s = swapped(kernel_id, until)
    f = s.k.frames
    mask = PG_swapcache | PG_dirty | PG_writeback
    assert int(f.flags[s.pfn]) & mask == flags
    assert page_count(f, s.pfn) == count and int(f._mapcount[s.pfn]) == -1
    assert int(s.k.swap.cache[0]) == s.pfn and int(f.private[s.pfn]) == 0
    assert (0 in s.k.swap.data) == (until != "swapcache")


@pytest.mark.parametrize("kernel_id", ALL)
def test_without_config_swap_nothing_is_swapped(kernel_id: str) -> None:
    s = swapped(kernel_id, config=Config(swap=False))
    assert s.pte()[0] == s.pfn and s.k.swap.nr == 0


@pytest.mark.parametrize("kernel_id", ALL)
def test_writeback_then_shrink(kernel_id: str) -> None:
    s = swapped(kernel_id, "writeback")
    assert s.k.end_writeback() == 1
    assert s.k.shrink_swapcache() == 1
    assert int(s.k.swap.cache[0]) == -1 and s.k.frames.nr_allocated == 0


# --- swap-in: do_swap_page ----------------------------------------------------------------


@pytest.mark.parametrize("kernel_id", REUSE_SWAP_PAGE)
def test_read_swapin_maps_read_only(kernel_id: str) -> None:
    """4.5 .. 5.17: a read fault reads the slot into a new swap-cache page and maps it
    read-only; swap_free leaves the slot to the swap cache. _count 2: PTE and swap cache."""
    s = swapped(kernel_id)
    assert s.p.read(s.addr, 7) == b"payload"
    pfn, bits = s.pte()
    f = s.k.frames
    assert not bits & PTE_WRITE
    assert f.flags[pfn] & PG_swapcache and int(s.k.swap.cache[0]) == pfn
    assert page_count(f, pfn) == 2 and int(f._mapcount[pfn]) == 0
    assert int(s.k.swap.swap_map[0]) == 0
    assert (s.p.mm.anon_rss, s.p.mm.swapents) == (1, 0)


@pytest.mark.parametrize("kernel_id", SEED)
def test_seed_write_swapin_from_the_swap_cache(kernel_id: str) -> None:
    """The seed's do_swap_page: reuse_swap_page(page) (4.5.0) / reuse_swap_page(page, NULL)
    (6d0a07edd17c): page_mapcount 0 (this mapping is not added yet) + page_swapcount 1 = 1, the
    page is not under writeback: it leaves the swap cache, dirty, and is mapped writable. The
    same frame, _count 1, slot free."""
    s = swapped(kernel_id, "written")
    s.p.write(s.addr, b"P")
    pfn, bits = s.pte()
    f = s.k.frames
    assert pfn == s.pfn and bits & PTE_WRITE and bits & PTE_DIRTY
    assert not f.flags[pfn] & PG_swapcache and page_count(f, pfn) == 1
    assert int(s.k.swap.swap_map[0]) == 0 and int(s.k.swap.cache[0]) == -1
    assert s.k.vmstat["swapin_reuse"] == 1 and not s.k.cow_log


@pytest.mark.parametrize("kernel_id", SEED)
def test_seed_write_swapin_shared_slot_copies(kernel_id: str) -> None:
    """After fork both processes' swap PTEs hold the slot (count 2). The child's write: page
    read from the device; reuse_swap_page: 0 + 2 > 1, mapped read-only; swap_free (count 1);
    do_wp_page -> reuse_swap_page: page_mapcount 1 + page_swapcount 1 = 2 -> copy."""
    s = swapped(kernel_id)
    child = s.p.fork()
    assert int(s.k.swap.swap_map[0]) == 2
    child.write(s.addr, b"C")
    (cow,) = s.k.cow_log
    assert cow.function == "wp_page_copy" and "page_swapcount = 1" in cow.why
    assert int(s.k.swap.swap_map[0]) == 1  # the parent's swap PTE
    read_in = int(s.k.swap.cache[0])
    assert read_in >= 0 and page_count(s.k.frames, read_in) == 1  # the swap cache's only
    assert s.p.read(s.addr, 7) == b"payload" and child.read(s.addr, 7) == b"Cayload"


@pytest.mark.parametrize("kernel_id", REUSE_SWAP_PAGE)
def test_write_under_writeback_reuses_but_stays_cached(kernel_id: str) -> None:
    """reuse_swap_page: count 1 but PageWriteback: reused, not deleted from the swap cache."""
    s = swapped(kernel_id, "writeback")
    s.p.write(s.addr, b"P")
    pfn, bits = s.pte()
    f = s.k.frames
    assert pfn == s.pfn and bits & PTE_WRITE
    assert f.flags[pfn] & PG_swapcache and page_count(f, pfn) == 2


def test_5_18_write_under_writeback_copies() -> None:
    """5.18: swap_free, then try_to_free_swap refuses a page under writeback; page_count 2 (our
    reference and the swap cache's) -> read-only, and do_wp_page copies."""
    s = swapped("v5.18", "writeback")
    s.p.write(s.addr, b"P")
    (cow,) = s.k.cow_log
    assert cow.old == s.pfn and "page_count = 2" in cow.why


@pytest.mark.parametrize("kernel_id", EXCLUSIVE)
def test_exclusive_marker_on_swapout_and_reuse(kernel_id: str) -> None:
    """5.19: an exclusive page's swap PTE carries the marker, the page loses PG_anon_exclusive;
    the write swap-in trusts the marker even under writeback and sets PG_anon_exclusive."""
    s = swapped(kernel_id, "writeback")
    _, bits = s.pte()
    f = s.k.frames
    assert bits & PTE_SWP_EXCLUSIVE and not f.flags[s.pfn] & PG_anon_exclusive
    s.p.write(s.addr, b"P")
    pfn, bits = s.pte()
    assert pfn == s.pfn and bits & PTE_WRITE and f.flags[pfn] & PG_anon_exclusive
    assert not s.k.cow_log


@pytest.mark.parametrize("kernel_id", EXCLUSIVE)
def test_fork_clears_the_exclusive_marker(kernel_id: str) -> None:
    s = swapped(kernel_id)
    child = s.p.fork()
    assert not s.pte()[1] & PTE_SWP_EXCLUSIVE
    table = child.mm.pmds[s.addr >> PMD_SHIFT]
    assert isinstance(table, PteTable) and not table.bits[(s.addr >> 12) & 511] & PTE_SWP_EXCLUSIVE


@pytest.mark.parametrize(("kernel_id", "writable"), [("v5.19", False), ("v6.18", True)])
def test_read_swapin_of_an_exclusive_page(kernel_id: str, writable: bool) -> None:
    """5.19 maps an exclusive page read-only on a read fault; 6.12+ maps it writable."""
    s = swapped(kernel_id)
    s.p.read(s.addr, 1)
    assert bool(s.pte()[1] & PTE_WRITE) == writable
    assert s.k.frames.flags[s.pte()[0]] & PG_anon_exclusive


@pytest.mark.parametrize("kernel_id", EXCLUSIVE)
def test_pinned_page_already_in_the_swap_cache_stays_mapped(kernel_id: str) -> None:
    """5.19 try_to_unmap_one: page_try_share_anon_rmap() fails for an exclusive page that may be
    pinned, so reclaim leaves it mapped even when it is already in the swap cache."""
    s = swapped(kernel_id, "written")
    s.p.read(s.addr, 1)  # back in, still in the swap cache, exclusive
    pin = s.p.get_user_pages(s.addr, PAGE)
    pfn, _ = s.pte()
    assert pin.pages == [pfn]
    s.p.swapout(s.addr, PAGE)
    assert s.pte()[0] == pfn


# --- zap ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_id", ALL)
def test_munmap_frees_the_slot(kernel_id: str) -> None:
    """free_swap_and_cache: the last swap PTE gone, the slot is free (and reused next)."""
    s = swapped(kernel_id)
    s.p.munmap(s.addr, 4 * PAGE)
    assert int(s.k.swap.swap_map[0]) == 0 and s.k.swap.in_use().size == 0
    assert s.p.mm.swapents == 0 and not s.k.swap.data
    assert s.k.swap.get_swap_page() == 0


@pytest.mark.parametrize("kernel_id", ALL)
def test_munmap_under_writeback_keeps_the_cache_page(kernel_id: str) -> None:
    """free_swap_and_cache leaves a page under writeback in the swap cache; shrink frees it."""
    s = swapped(kernel_id, "writeback")
    s.p.munmap(s.addr, 4 * PAGE)
    assert int(s.k.swap.cache[0]) == s.pfn
    s.k.end_writeback()
    assert s.k.shrink_swapcache() == 1 and s.k.frames.nr_allocated == 0


# --- reclaim of pinned and shared pages ---------------------------------------------------


@pytest.mark.parametrize("kernel_id", ALL)
def test_pinned_page_under_reclaim(kernel_id: str) -> None:
    """Before 5.11 reclaim unmaps a pinned page and cannot free it (the pin's reference fails
    the freeze): it stays in the swap cache, and the write swap-in gets the same frame back.
    From 5.11 (the v5.18 policy on) reclaim skips it."""
    k = Kernel(kernel_id, selfcheck=True)
    p = k.spawn()
    addr = p.mmap(4 * PAGE)
    p.write(addr, b"x")
    pin = p.get_user_pages(addr, PAGE)
    p.swapout(addr, PAGE)
    # feb889fb40fa: 5.11, and 5.10.9's backport of it
    skips = ReclaimSkipsPinned in resolve(kernel_id).policy.changes
    assert (p.translate(addr) == pin.pages[0]) == skips
    assert bool(k.frames.flags[pin.pages[0]] & PG_swapcache) == (not skips)
    p.write(addr, b"y")
    assert p.translate(addr) == pin.pages[0] and not k.cow_log


# (kernel, taken): the reclaim path before MADV_PAGEOUT (4.14) and MADV_PAGEOUT before
# 12e967fd8e4e (5.4.0, 5.5.0: 5.4.6's madvise_cold_or_pageout_pte_range tests no small page's
# mapcount) take a page fork shares; 5.6 and the stable 5.4.28 and 5.5.12 leave it alone
COW_PAGEOUT = [
    ("v4.14", True),
    ("5.4", True),
    ("5.4.27", True),
    ("5.5.11", True),
    ("5.4.28", False),
    ("5.5.12", False),
    ("5.6", False),
    ("v5.8", False),
]


@pytest.mark.parametrize(("kernel_id", "swapped_out"), COW_PAGEOUT)
def test_madv_pageout_skips_shared_pages_from_12e967fd8e4e(
    kernel_id: str, swapped_out: bool
) -> None:
    """A page mapped twice (fork): where it is taken, try_to_unmap unmaps both mappings through
    the rmap walk and the slot counts both (swap count 2)."""
    k = Kernel(kernel_id, selfcheck=True)
    p = k.spawn()
    addr = p.mmap(4 * PAGE)
    p.write(addr, b"x")
    child = p.fork()
    p.swapout(addr, PAGE)
    assert (p.translate(addr) is None) == swapped_out
    assert (child.translate(addr) is None) == swapped_out
    assert int(k.swap.swap_map[0] if k.swap.nr else 0) == (2 if swapped_out else 0)


@pytest.mark.parametrize(("kernel_id", "swapped_out"), COW_PAGEOUT)
def test_madv_pageout_of_a_whole_pmd_fork_shares(kernel_id: str, swapped_out: bool) -> None:
    """A THP two PMDs map (fork), the range covering it whole: 5.4.6 isolates it with no
    mapcount test, 12e967fd8e4e skips it (the head's page_mapcount 2). Taken, it is split on
    the swap file and every page of both processes becomes a swap PTE (512 slots)."""
    _, p, addr = written_thp(kernel_id, b"x")
    child = p.fork()
    assert p.swapout(addr, 2 << 20) == (512 if swapped_out else 0)
    for proc in (p, child):
        assert (proc.translate(addr + 7 * PAGE) is None) == swapped_out
    assert p.read(addr, 1) == child.read(addr, 1) == b"x"


@pytest.mark.parametrize(("kernel_id", "swapped_out"), [("v4.14", True), ("5.4", False)])
def test_madv_pageout_leaves_a_shared_thp_it_would_split(kernel_id: str, swapped_out: bool) -> None:
    """A THP two PMDs map, the range covering one page: the reclaim path (4.14) splits it and
    takes the page; MADV_PAGEOUT from 5.4 (5.4.6: the head's page_mapcount must be 1 before
    the split) leaves it mapped by both PMDs, before 12e967fd8e4e too."""
    _, p, addr = written_thp(kernel_id, b"x")
    child = p.fork()
    assert p.swapout(addr, PAGE) == int(swapped_out)
    assert (p.translate(addr) is None) == (child.translate(addr) is None) == swapped_out
    assert isinstance(p.mm.pmds.get(addr >> PMD_SHIFT), HugePmd) != swapped_out


@pytest.mark.parametrize("kernel_id", ALL)
def test_thp_is_split_before_swapout(kernel_id: str) -> None:
    """A swap file on a rotational disk has no swap clusters: add_to_swap splits the THP; 512
    swap PTEs, 512 slots (every subpage written, so none is zero-filled)."""
    k, p, addr = written_thp(kernel_id, b"x" * PAGE)
    assert p.swapout(addr, 2 << 20) == 512
    assert p.mm.swapents == 512 and k.frames.nr_allocated == 0
    assert p.read(addr + 5 * PAGE, 1) == b"x"


@pytest.mark.parametrize("kernel_id", ALL)
def test_split_for_swapout_maps_unused_subpages_to_the_zero_page(kernel_id: str) -> None:
    """6.12 (b1f202060afe): the split maps the 511 zero-filled subpages to the shared zero page
    and frees them; only the written one is swapped. Before, all 512 are swapped."""
    k, p, addr = written_thp(kernel_id, b"x")
    zeroes = since(kernel_id, "6.12")  # b1f202060afe
    assert p.swapout(addr, 2 << 20) == (1 if zeroes else 512)
    assert p.mm.swapents == (1 if zeroes else 512) and k.frames.nr_allocated == 0
    assert (p.translate(addr + PAGE) == 0) == zeroes  # pfn 0: the zero page


def written_thp(kernel_id: str, data: bytes) -> tuple[Kernel, Process, int]:
    """A PMD-mapped THP with ``data`` written at the start of each of its 512 subpages."""
    k = Kernel(kernel_id, selfcheck=True)
    k.thp_enabled = "always"
    p = k.spawn()
    addr = p.mmap(2 << 20, align=2 << 20)
    for i in range(512 if len(data) == PAGE else 1):
        p.write(addr + i * PAGE, data)
    assert k.frames.nr_allocated == 512
    return k, p, addr


def test_an_mthp_never_covers_a_swap_pte() -> None:
    """alloc_anon_folio() takes an order only if its PTE range is all pte_none: a swap PTE in
    the 64 KiB block makes the write fault fall back to a 4 KiB page (the swapped page's bytes
    stay on the device, its swap PTE in place)."""
    k = Kernel("v6.18", selfcheck=True)
    p = k.spawn()
    addr = p.mmap(16 * PAGE, align=16 * PAGE)
    p.write(addr + PAGE, b"kept")
    p.swapout(addr + PAGE, PAGE)
    k.mthp_enabled[64] = "always"
    p.write(addr, b"new")
    assert p.read(addr + PAGE, 4) == b"kept" and k.frames.order[p.translate(addr) or 0] == 0


@pytest.mark.parametrize("kernel_id", ["v4.5", "v6.18"])
def test_clear_refs_and_mremap_handle_the_soft_dirty_bit_of_swap_ptes(kernel_id: str) -> None:
    """clear_soft_dirty() clears a swap PTE's soft-dirty bit (pte_swp_clear_soft_dirty);
    move_ptes() sets it again on a swap PTE it moves (move_soft_dirty_pte)."""
    s = swapped(kernel_id, config=Config(soft_dirty=True))
    assert s.pte()[1] & PTE_SOFT_DIRTY
    s.p.clear_refs(4)
    assert not s.pte()[1] & PTE_SOFT_DIRTY
    spare = s.p.mmap(4 * PAGE)
    s.p.mremap(s.addr, 4 * PAGE, 4 * PAGE, may_move=True, fixed_addr=spare)
    s.addr = spare
    value, bits = s.pte()
    assert is_swap_pte(value) and bits & PTE_SOFT_DIRTY
    assert s.p.read(spare, 7) == b"payload"


@pytest.mark.parametrize("kernel_id", ["v4.5", "v5.9", "v6.18"])
def test_a_pinned_page_is_not_written(kernel_id: str) -> None:
    """pageout() -> is_page_cache_freeable(): a page someone else references (here a vmsplice
    FOLL_GET reference, which no kernel's pin checks see) is unmapped but not written; it stays
    dirty in the swap cache."""
    k = Kernel(kernel_id, selfcheck=True)
    p = k.spawn()
    addr = p.mmap(4 * PAGE)
    p.write(addr, b"x")
    pin = p.get_user_pages(addr, PAGE, flavour="get")
    p.swapout(addr, PAGE)
    pfn = pin.pages[0]
    # a FOLL_GET reference is no pin to page_maybe_dma_pinned: unmapped on every kernel
    assert p.translate(addr) is None
    assert k.frames.flags[pfn] & PG_swapcache and k.frames.flags[pfn] & PG_dirty
    assert k.vmstat["pswpout"] == 0


# --- the swap device ----------------------------------------------------------------------


def test_swap_device_kinds() -> None:
    """Config(swap_device=...) takes the four kinds of area; the default is the swap file."""
    assert Kernel("v6.18").swap.device == "file"
    for kind in ("file", "hdd", "ssd", "zram"):
        assert Kernel("v6.18", Config(swap_device=kind)).swap.device == kind
    with pytest.raises(ValueError, match="expected one of file, hdd, ssd, zram"):
        Config(swap_device="nvme")


def test_scenario_config_swap_device_reaches_the_kernel() -> None:
    text = (
        "name: t\nconfig: {swap_device: zram}\nprocesses: [P]\nsteps:\n  - {op: spawn, proc: Q}\n"
    )
    runner = Runner(parse_scenario(text, "t.yaml"), "v6.18")
    assert runner.k.swap.device == "zram"


# --- a THP swapped out whole (docs/sources-swap.md §1a; 4.14+ on an SSD or zram) -------------

WHOLE = ["v4.14", "v5.9", "v5.19", "v6.10", "v6.18"]
MiB = 1 << 20


def whole_thp(kernel_id: str, device: str, until: str) -> Swapped:
    """A PMD-mapped THP (bytes in page 0) swapped out; pfn is its head."""
    k = Kernel(kernel_id, Config(swap_device=device), selfcheck=True)
    k.thp_enabled = "always"
    p = k.spawn()
    addr = p.mmap(2 * MiB, align=2 * MiB)
    p.write(addr, b"head")
    head = p.translate(addr)
    assert head is not None
    assert p.swapout(addr, 2 * MiB, until=until) == 512
    return Swapped(k, p, addr, head)


@pytest.mark.parametrize("kernel_id", WHOLE)
def test_thp_swapped_out_whole_to_an_ssd(kernel_id: str) -> None:
    """shrink_page_list of 4.14+ (bd4c82c22c36): one cluster, slots 0..511, page i in slot i;
    the PMD split into 512 swap PTEs; written, clean, kept in the swap cache with its 512
    references (__add_to_swap_cache, one per page)."""
    s = whole_thp(kernel_id, "ssd", "written")
    f, swap = s.k.frames, s.k.swap
    table = s.p.mm.pmds[s.addr >> PMD_SHIFT]
    assert isinstance(table, PteTable)
    assert (table.pfn == -2 - np.arange(512)).all()
    assert (swap.swap_map[:512] == 1).all() and (swap.cache[:512] == s.pfn + np.arange(512)).all()
    assert page_count(f, s.pfn) == 512 and int(f.compound_mapcount[s.pfn + 1]) == -1
    assert int(f.flags[s.pfn]) & (PG_swapcache | PG_dirty | PG_writeback) == PG_swapcache
    assert (s.p.mm.anon_rss, s.p.mm.swapents) == (0, 512)


@pytest.mark.parametrize("kernel_id", ["v4.13", "v4.14", "v6.13", "v6.14", "v6.18"])
@pytest.mark.parametrize("device", ["file", "hdd"])
def test_rotational_areas_split_until_6_14(kernel_id: str, device: str) -> None:
    """A swap file (every release) and an HDD partition (until 6.14) have no clusters: the THP
    is split first, each page in its own slot (6.12+: the zero-filled ones mapped to the zero
    page instead, so only page 0 is swapped)."""
    k = Kernel(kernel_id, Config(swap_device=device), selfcheck=True)
    k.thp_enabled = "always"
    p = k.spawn()
    addr = p.mmap(2 * MiB, align=2 * MiB)
    p.write(addr, b"head")
    whole = device == "hdd" and kernel_id in ("v6.14", "v6.18")
    zero_remap = kernel_id in ("v6.13", "v6.14", "v6.18")
    assert p.swapout(addr, 2 * MiB, until="written") == (512 if whole or not zero_remap else 1)
    head = int(k.swap.cache[0])
    assert (k.frames.order[head] == 9) == whole


@pytest.mark.parametrize("kernel_id", WHOLE)
def test_thp_on_zram_is_written_and_freed_in_one_pass(kernel_id: str) -> None:
    """zram ends each write inside swap_writepage; the pass then frees the clean THP from the
    swap cache (__remove_mapping at refcount 512): only the swap PTEs and the bytes remain."""
    s = whole_thp(kernel_id, "zram", "written")
    assert (s.k.swap.cache[:512] == -1).all() and (s.k.swap.swap_map[:512] == 1).all()
    assert s.k.frames.nr_allocated == 0 and s.k.swap.data[0] == b"head"


@pytest.mark.parametrize("kernel_id", WHOLE)
def test_munmap_of_part_of_a_cached_thp(kernel_id: str) -> None:
    """free_swap_and_cache with swap_page_trans_huge_swapped (4.14): unmapping one page's swap
    PTE leaves the THP in the swap cache while other slots are referenced; unmapping the rest
    frees it (unmapped, not under writeback)."""
    s = whole_thp(kernel_id, "ssd", "written")
    s.p.munmap(s.addr, PAGE)
    assert int(s.k.swap.cache[0]) == s.pfn and int(s.k.swap.swap_map[0]) == 0
    s.p.munmap(s.addr + PAGE, 2 * MiB - PAGE)
    assert (s.k.swap.cache[:512] == -1).all() and s.k.frames.nr_allocated == 0


@pytest.mark.parametrize("kernel_id", WHOLE)
def test_splitting_a_thp_in_the_swap_cache(kernel_id: str) -> None:
    """split_huge_page of a clean THP in the swap cache (can_split_huge_page counts the cache's
    references): 512 small swap-cache pages, page i keeping slot i and one reference."""
    s = whole_thp(kernel_id, "ssd", "written")
    assert s.k.split_huge_pages() == 1
    f = s.k.frames
    assert int(f.order[s.pfn]) == 0 and (f._count[s.pfn : s.pfn + 512] == 1).all()
    assert (f.private[s.pfn : s.pfn + 512] == np.arange(512)).all()


@pytest.mark.parametrize("kernel_id", ["v6.12", "v6.18"])
def test_a_freed_thp_comes_back_as_small_pages(kernel_id: str) -> None:
    """alloc_swap_folio (6.12) tries only orders below PMD size, and none is enabled here: the
    bypass reads one small page, outside the swap cache, exclusive."""
    s = whole_thp(kernel_id, "zram", "freed")
    s.p.read(s.addr + 3 * PAGE, 1)
    pfn = s.p.translate(s.addr + 3 * PAGE)
    assert pfn is not None and int(s.k.frames.order[pfn]) == 0
    assert not s.k.frames.flags[pfn] & PG_swapcache and int(s.k.swap.swap_map[3]) == 0
    assert s.k.frames.flags[pfn] & PG_anon_exclusive


@pytest.mark.parametrize(
    ("kernel_id", "whole"), [("v6.9", False), ("v6.10", False), ("v6.11", True), ("v6.18", True)]
)
def test_write_swapin_of_a_cached_thp(kernel_id: str, whole: bool) -> None:
    """A write fault on page 3 of a THP in the swap cache. 6.9 and 6.10 (6.10.0 do_swap_page,
    should_try_to_free_swap): only page 3 is mapped (exclusive by its swap PTE's bit, so
    writable); should_try_to_free_swap wants refcount 2, the folio has 513: it stays cached.
    6.11+ (6.11.11 do_swap_page): all 512 PTEs are its consecutive swap PTEs, so the folio is
    mapped whole; swap_free_nr drops every slot, the refcount is 1 + 512 and folio_free_swap
    takes it out of the swap cache (no slot referenced): 512 mappings, refcount 512."""
    s = whole_thp(kernel_id, "ssd", "written")
    s.p.write(s.addr + 3 * PAGE, b"THREE")
    f = s.k.frames
    assert s.p.translate(s.addr + 3 * PAGE) == s.pfn + 3  # no copy
    assert bool(f.flags[s.pfn] & PG_swapcache) != whole
    assert page_count(f, s.pfn) == (512 if whole else 513)
    assert (s.p.mm.anon_rss, s.p.mm.swapents) == ((512, 0) if whole else (1, 511))


@pytest.mark.parametrize(
    ("kernel_id", "copies"),
    [
        ("v4.14", True),
        ("v5.10+9348b73+feb889f", True),
        ("v6.1", True),
        ("v6.6", True),
        ("v6.8", False),
        ("v6.10", False),
        ("v6.18", False),
    ],
)
def test_a_tail_page_of_a_cached_thp_is_copied_at_swap_in_until_6_8(
    kernel_id: str, copies: bool
) -> None:
    """A read of page 3 of a THP in the swap cache. do_swap_page finds the subpage there and asks
    ksm_might_need_to_copy (4.14.177 .. 6.7.3 mm/ksm.c): not KSM, the THP's anon_vma is this
    VMA's, but the tail's own ->index, which nothing sets, is not the linear index: a copy
    (ksm_swpin_copy 1), dirty, outside the swap cache, page_add_new_anon_rmap'd (this VMA's own
    anon_vma, the address's index; exclusive from 5.19), mapped read-only on a read fault
    before 6.11 (c18160dba5ff: maps exclusive writable); the THP loses the fault's reference
    (512 again: the swap cache's) and slot 3 its PTE's count. Page 0 is the head, whose index
    __page_set_anon_rmap set: mapped as it is, refcount 513. 6.8 (6.8.0: a large folio is
    returned as it is): page 3 is the THP's own, refcount 513; 6.11+ maps all 512 pages at
    the read, refcount 512 + 512."""
    s = whole_thp(kernel_id, "ssd", "written")
    f, vma, addr = s.k.frames, s.p.mm.find_vma(s.addr), s.addr + 3 * PAGE
    assert vma is not None and vma.anon_vma is not None and page_count(f, s.pfn) == 512
    assert s.p.read(addr, 1) == b"\0"
    pfn = s.p.translate(addr)
    assert pfn is not None and (pfn != s.pfn + 3) == copies
    assert s.k.vmstat["ksm_swpin_copy"] == int(copies)
    assert int(s.k.swap.swap_map[3]) == 0 and int(s.k.swap.cache[3]) == s.pfn + 3
    whole = since(kernel_id, "6.11")
    if copies:
        assert page_count(f, s.pfn) == 512 and page_count(f, pfn) == 1
        assert f.flags[pfn] & PG_dirty and not f.flags[pfn] & PG_swapcache
        assert int(f.mapping[pfn]) == vma.anon_vma.id
        assert int(f.index[pfn]) == vma.linear_page_index(addr)
        assert bool(f.flags[pfn] & PG_anon_exclusive) == since(kernel_id, "5.19")
        table = s.p.mm.pmds[s.addr >> PMD_SHIFT]
        assert isinstance(table, PteTable) and not table.bits[3] & PTE_WRITE
    else:
        assert page_count(f, s.pfn) == (1024 if whole else 513)
    assert s.p.read(s.addr, 4) == b"head" and s.p.translate(s.addr) == s.pfn
    assert s.k.vmstat["ksm_swpin_copy"] == int(copies)
    assert page_count(f, s.pfn) == (1024 if whole else 513 + int(not copies))


def test_mthp_swapped_out_in_part_is_split() -> None:
    """6.10 madvise_cold_or_pageout_pte_range: a 64 KiB folio the range covers only in half is
    split (not likely shared), and only the covered pages are swapped; the other 8 stay mapped."""
    k = Kernel("v6.10", Config(swap_device="ssd"), selfcheck=True)
    k.mthp_enabled[64] = "always"
    p = k.spawn()
    addr = p.mmap(16 * PAGE, align=16 * PAGE)
    p.write(addr, b"a" * (16 * PAGE))
    head = p.translate(addr)
    assert head is not None and int(k.frames.order[head]) == 4
    assert p.swapout(addr, 8 * PAGE, until="written") == 8
    assert int(k.frames.order[head]) == 0 and p.translate(addr + 8 * PAGE) == head + 8
    assert (p.mm.anon_rss, p.mm.swapents) == (8, 8)
