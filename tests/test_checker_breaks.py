"""Every check of the checker, shown to fail: a real model state built through the API, one field
corrupted the way the check describes, and the checker must name exactly that violation.

Each test first asserts the state is clean, so the corruption is what the checker reports.
tools/mutation_check.py disables each check in turn (the statement after its `# invariant:` marker
in checker.py) and requires this file to fail: a check nothing here breaks would survive.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cowlab import InvariantViolation, Kernel, Process
from cowlab.checker import check_counters, check_invariants, check_pin_coherence, check_rmap
from cowlab.kernel import Config
from cowlab.mm.constants import (
    PMD_SHIFT,
    PG_allocated,
    PG_anon_exclusive,
    PG_double_map,
    PG_ksm,
    PG_mm_ids_shared,
    PG_swapcache,
)
from cowlab.mm.ksm import NULL_STABLE_NODE, swapped_in
from cowlab.mm.mm_types import VmArea
from cowlab.mm.page_alloc import flags_without
from cowlab.mm.pgtable import PTE_MIGRATION, HugePmd, PteTable
from cowlab.mm.rmap import ENTIRELY_MAPPED
from cowlab.policy import POLICIES

KiB = 1 << 10
MiB = 1 << 20
PAGE = 4 * KiB
NR = 512

ALL = list(POLICIES)
DOUBLE_MAP = [k for k, p in POLICIES.items() if p.double_map]  # 4.5 .. 6.1
NO_DOUBLE_MAP = [k for k, p in POLICIES.items() if not p.double_map]  # 6.2+
NR_PAGES_MAPPED = [k for k, p in POLICIES.items() if p.nr_pages_mapped]  # 6.2+
LARGE_MAPCOUNT = [k for k, p in POLICIES.items() if p.large_mapcount]  # 6.10+
MM_IDS = [k for k, p in POLICIES.items() if p.mm_ids]  # 6.15+
FOLL_PIN = [k for k, p in POLICIES.items() if p.foll_pin]  # 5.7+
NO_FOLL_PIN = [k for k, p in POLICIES.items() if not p.foll_pin]
EXCLUSIVE = [k for k, p in POLICIES.items() if p.anon_exclusive]  # 5.19+


# --- real states -------------------------------------------------------------------------


@dataclass
class Small:
    k: Kernel
    p: Process
    addr: int
    pfn: int

    @property
    def table(self) -> PteTable:
        entry = self.p.mm.pmds[self.addr >> PMD_SHIFT]
        assert isinstance(entry, PteTable)
        return entry


@dataclass
class Thp:
    k: Kernel
    p: Process
    addr: int
    head: int
    child: Process | None = None


def small_page(kernel_id: str, pages: int = 4) -> Small:
    """A 16 KiB private mapping (too small for a THP), every page written: small pages."""
    k = Kernel(kernel_id)
    p = k.spawn()
    addr = p.mmap(pages * PAGE)
    p.write(addr, b"x" * (pages * PAGE))
    pfn = p.translate(addr)
    assert pfn is not None
    assert k.check() == []
    return Small(k, p, addr, pfn)


def pmd_thp(kernel_id: str) -> Thp:
    """A 2 MiB-aligned MADV_HUGEPAGE region, one write: one PMD maps a new THP."""
    k = Kernel(kernel_id)
    p = k.spawn()
    addr = p.mmap(2 * MiB, align=2 * MiB)
    p.madvise(addr, 2 * MiB, "hugepage")
    p.write(addr, b"x")
    entry = p.mm.pmds[addr >> PMD_SHIFT]
    assert isinstance(entry, HugePmd)
    assert k.check() == []
    return Thp(k, p, addr, entry.pfn)


def pte_thp(kernel_id: str) -> Thp:
    """The THP of pmd_thp, its PMD split by an mprotect of its first page: 512 PTEs, no PMD."""
    s = pmd_thp(kernel_id)
    s.p.mprotect(s.addr, PAGE, "r")
    assert isinstance(s.p.mm.pmds[s.addr >> PMD_SHIFT], PteTable)
    assert s.k.check() == []
    return s


def shared_thp(kernel_id: str) -> Thp:
    """pmd_thp, forked; the child splits its PMD (mprotect): the parent's PMD and the child's
    512 PTEs map one THP (4.5 .. 6.1: PG_double_map set)."""
    s = pmd_thp(kernel_id)
    s.child = s.p.fork()
    s.child.mprotect(s.addr, PAGE, "r")
    assert isinstance(s.p.mm.pmds[s.addr >> PMD_SHIFT], HugePmd)
    assert isinstance(s.child.mm.pmds[s.addr >> PMD_SHIFT], PteTable)
    assert s.k.check() == []
    return s


# --- counters: small pages ----------------------------------------------------------------


@pytest.mark.parametrize("kernel_id", ALL)
def test_small_page_mapcount(kernel_id: str) -> None:
    s = small_page(kernel_id)
    s.k.frames._mapcount[s.pfn] += 1
    assert check_invariants(s.k) == [
        f"pfn {s.pfn:#x}: _mapcount says 2, page tables say 1",
    ]


@pytest.mark.parametrize("kernel_id", ALL)
def test_small_page_count(kernel_id: str) -> None:
    s = small_page(kernel_id)
    s.k.frames._count[s.pfn] += 1
    assert check_invariants(s.k) == [f"pfn {s.pfn:#x}: _count says 2, page tables say 1"]


@pytest.mark.parametrize("kernel_id", FOLL_PIN)
def test_small_page_count_without_pin_bias(kernel_id: str) -> None:
    """A FOLL_PIN pin adds GUP_PIN_COUNTING_BIAS (1024) to a small page's _count."""
    s = small_page(kernel_id)
    s.p.get_user_pages(s.addr, PAGE, flavour="longterm")
    assert s.k.check() == []
    assert int(s.k.frames._count[s.pfn]) == 1 + 1024
    s.k.frames._count[s.pfn] -= 1024
    assert check_invariants(s.k) == [f"pfn {s.pfn:#x}: _count says 1, page tables say 1025"]


@pytest.mark.parametrize("kernel_id", ALL)
def test_mapped_page_marked_free(kernel_id: str) -> None:
    s = small_page(kernel_id)
    s.k.frames.flags[s.pfn] &= flags_without(PG_allocated)
    assert check_invariants(s.k) == [f"pfn {s.pfn:#x} is mapped or pinned but free"]


@pytest.mark.parametrize("kernel_id", ["v4.5", "v6.18"])
def test_free_frame_with_a_field_set(kernel_id: str) -> None:
    """Allocation does not reset a frame: one on a free list must already hold the free values."""
    s = small_page(kernel_id)
    s.p.munmap(s.addr, PAGE)
    assert s.k.check() == [] and s.pfn in s.k.frames.free[0]
    s.k.frames.index[s.pfn] = 7
    assert check_invariants(s.k) == [f"pfn {s.pfn:#x} is on a free list with index set"]


@pytest.mark.parametrize("kernel_id", ["v4.5", "v6.18"])
def test_free_thp_with_a_folio_field_set(kernel_id: str) -> None:
    """The same for a field only a large folio has (a row per folio, page_alloc.RowField): a
    freed THP whose row came back with a value set; compound_mapcount lives in page[1]."""
    s = pmd_thp(kernel_id)
    s.p.munmap(s.addr, 2 * MiB)
    f = s.k.frames
    assert s.k.check() == [] and s.head in f.free[9]
    f.folios.add(s.head)
    assert s.k.check() == []  # a row holding the free values is no field set
    f._pincount[s.head] = 3
    f.compound_mapcount[s.head + 1] = 0
    assert check_invariants(s.k) == [
        f"pfn {s.head + 1:#x} is on a free list with compound_mapcount set",
        f"pfn {s.head:#x} is on a free list with _pincount set",
    ]


@pytest.mark.parametrize("kernel_id", ["v4.5", "v6.18"])
def test_content_reference_lost(kernel_id: str) -> None:
    """Two frames share the written bytes' string; the store must count both."""
    s = small_page(kernel_id)
    blob = int(s.k.frames.content[s.pfn])
    assert blob and s.k.frames.blobs.refs[blob] == 4  # the four pages hold the same bytes
    s.k.frames.blobs.refs[blob] -= 1
    assert check_invariants(s.k) == [f"content {blob}: 3 references, 4 frames"]


@pytest.mark.parametrize("kernel_id", ["v4.5", "v5.8", "v6.18"])
def test_pinned_page_marked_free(kernel_id: str) -> None:
    """Unmapped, but the device still holds it: it must not be free."""
    s = small_page(kernel_id)
    s.p.get_user_pages(s.addr, PAGE)
    s.p.munmap(s.addr, PAGE)
    assert s.k.check() == []
    s.k.frames.flags[s.pfn] &= flags_without(PG_allocated)
    assert check_invariants(s.k) == [f"pfn {s.pfn:#x} is mapped or pinned but free"]


@pytest.mark.parametrize("kernel_id", ALL)
def test_migration_entry_left(kernel_id: str) -> None:
    s = small_page(kernel_id)
    s.table.bits[(s.addr >> 12) & 511] |= PTE_MIGRATION
    base = (s.addr >> PMD_SHIFT) << PMD_SHIFT
    assert check_invariants(s.k) == [f"pid {s.p.pid}: migration entry left at {base:#x}"]


@pytest.mark.parametrize("kernel_id", ALL)
def test_mm_anonpages(kernel_id: str) -> None:
    s = small_page(kernel_id)
    s.p.mm.anon_rss -= 1
    assert check_invariants(s.k) == [f"pid {s.p.pid}: MM_ANONPAGES 3 but 4 pages mapped"]


@pytest.mark.parametrize("kernel_id", ["v4.5", "v6.18"])
def test_mm_anonpages_counts_a_pmd_as_512(kernel_id: str) -> None:
    s = pmd_thp(kernel_id)
    s.p.mm.anon_rss = 1
    assert check_invariants(s.k) == [f"pid {s.p.pid}: MM_ANONPAGES 1 but 512 pages mapped"]


@pytest.mark.parametrize("kernel_id", ALL)
def test_ptes_outside_every_vma_vma_shrunk(kernel_id: str) -> None:
    s = small_page(kernel_id)
    vma = s.p.mm.find_vma(s.addr)
    assert vma is not None
    vma.vm_end -= PAGE  # the last written page is left mapped beyond the VMA
    assert check_invariants(s.k) == [
        f"pid {s.p.pid}: 1 page-table entries lie outside every VMA",
    ]


@pytest.mark.parametrize("kernel_id", ["v4.5", "v6.18"])
def test_ptes_outside_every_vma_table_moved(kernel_id: str) -> None:
    """A PTE table, and a huge PMD, hung at a PMD slot that no VMA covers."""
    for s, entries in ((small_page(kernel_id), 4), (pmd_thp(kernel_id), NR)):
        idx = s.addr >> PMD_SHIFT
        s.p.mm.pmds[idx - 100] = s.p.mm.pmds.pop(idx)
        assert check_invariants(s.k) == [
            f"pid {s.p.pid}: {entries} page-table entries lie outside every VMA",
        ]


# --- counters: THPs -----------------------------------------------------------------------


@pytest.mark.parametrize("kernel_id", ALL)
def test_thp_compound_mapcount(kernel_id: str) -> None:
    """compound_mapcount (4.5) / _entire_mapcount (6.x): the PMD mappings."""
    s = pmd_thp(kernel_id)
    s.k.frames.compound_mapcount[s.head + 1] += 1
    assert check_invariants(s.k) == [f"THP {s.head:#x}: compound_mapcount 2, 1 PMD maps"]


def _set_double_map(s: Thp) -> None:
    """PG_double_map, with the +1 it stands for on every subpage's _mapcount (as 4.5 sets it)."""
    f = s.k.frames
    f.flags[s.head + 1] |= PG_double_map
    f._mapcount[s.head : s.head + NR] += 1


@pytest.mark.parametrize("kernel_id", DOUBLE_MAP)
def test_double_map_without_pmd_mapping(kernel_id: str) -> None:
    """PG_double_map with no PMD left; its offset is applied consistently, so only the flag
    itself is wrong."""
    s = pte_thp(kernel_id)
    _set_double_map(s)
    assert check_invariants(s.k) == [f"THP {s.head:#x}: PG_double_map without a PMD mapping"]


@pytest.mark.parametrize("kernel_id", DOUBLE_MAP)
def test_double_map_real_state_is_clean(kernel_id: str) -> None:
    """The state the flag is for: one PMD and PTE mappings of the same THP."""
    s = shared_thp(kernel_id)
    assert s.k.frames.flags[s.head + 1] & PG_double_map


@pytest.mark.parametrize("kernel_id", NO_DOUBLE_MAP)
def test_double_map_in_a_kernel_without_it(kernel_id: str) -> None:
    """6.2 removed PG_double_map: a PMD plus PTE mappings carry no offset."""
    s = shared_thp(kernel_id)
    assert not s.k.frames.flags[s.head + 1] & PG_double_map
    _set_double_map(s)
    assert check_invariants(s.k) == [
        f"THP {s.head:#x}: PG_double_map in a kernel without it (6.2+)",
    ]


@pytest.mark.parametrize("kernel_id", ALL)
def test_thp_subpage_mapcount(kernel_id: str) -> None:
    s = pte_thp(kernel_id)
    s.k.frames._mapcount[s.head + 5] += 1
    assert check_invariants(s.k) == [
        f"THP {s.head:#x} subpage 5: _mapcount says 2 PTE maps, page tables 1",
    ]


@pytest.mark.parametrize("kernel_id", ALL)
def test_thp_count(kernel_id: str) -> None:
    s = pmd_thp(kernel_id)
    s.k.frames._count[s.head] += 1
    assert check_invariants(s.k) == [
        f"THP {s.head:#x}: _count 2, mappings + refs + pins = 1",
    ]


@pytest.mark.parametrize("kernel_id", ALL)
def test_thp_count_of_a_pte_mapped_thp_with_a_reference(kernel_id: str) -> None:
    """512 PTE maps and one GUP reference (FOLL_GET: no _pincount)."""
    s = pte_thp(kernel_id)
    s.p.get_user_pages(s.addr + PAGE, PAGE, flavour="get")
    assert s.k.check() == []
    s.k.frames._count[s.head] -= 1
    assert check_invariants(s.k) == [
        f"THP {s.head:#x}: _count 512, mappings + refs + pins = 513",
    ]


@pytest.mark.parametrize("kernel_id", FOLL_PIN)
def test_thp_pincount(kernel_id: str) -> None:
    s = pmd_thp(kernel_id)
    s.p.get_user_pages(s.addr, 2 * PAGE, flavour="longterm")
    assert s.k.check() == []
    assert int(s.k.frames._pincount[s.head]) == 2
    s.k.frames._pincount[s.head] -= 1
    assert check_invariants(s.k) == [f"THP {s.head:#x}: _pincount 1, FOLL_PIN pins 2"]


@pytest.mark.parametrize("kernel_id", NO_FOLL_PIN)
def test_thp_pincount_stays_zero_before_foll_pin(kernel_id: str) -> None:
    """Before 5.7 every GUP is a FOLL_GET reference: _pincount has nothing to count."""
    s = pmd_thp(kernel_id)
    s.p.get_user_pages(s.addr, PAGE, flavour="longterm")
    assert s.k.check() == []
    s.k.frames._pincount[s.head] = 1
    assert check_invariants(s.k) == [f"THP {s.head:#x}: _pincount 1, FOLL_PIN pins 0"]


@pytest.mark.parametrize("kernel_id", ALL)
def test_thp_tail_count(kernel_id: str) -> None:
    s = pmd_thp(kernel_id)
    s.k.frames._count[s.head + 3] = 1
    assert check_invariants(s.k) == [f"THP {s.head:#x}: a tail page has a nonzero _count"]


# --- counters: 6.x folios -----------------------------------------------------------------


@pytest.mark.parametrize("kernel_id", LARGE_MAPCOUNT)
def test_folio_large_mapcount(kernel_id: str) -> None:
    s = shared_thp(kernel_id)
    s.k.frames._large_mapcount[s.head] -= 1
    assert check_invariants(s.k) == [f"folio {s.head:#x}: _large_mapcount 512, maps 513"]


@pytest.mark.parametrize("kernel_id", NR_PAGES_MAPPED)
def test_folio_nr_pages_mapped_pmd(kernel_id: str) -> None:
    """A PMD-mapped folio whose _nr_pages_mapped lost ENTIRELY_MAPPED."""
    s = pmd_thp(kernel_id)
    f = s.k.frames
    assert int(f._nr_pages_mapped[s.head]) == ENTIRELY_MAPPED
    f._nr_pages_mapped[s.head] = 0
    assert check_invariants(s.k) == [
        f"folio {s.head:#x}: _nr_pages_mapped 0x0, page tables 0x800000",
    ]


@pytest.mark.parametrize("kernel_id", NR_PAGES_MAPPED)
def test_folio_nr_pages_mapped_ptes(kernel_id: str) -> None:
    s = pte_thp(kernel_id)
    f = s.k.frames
    assert int(f._nr_pages_mapped[s.head]) == NR
    f._nr_pages_mapped[s.head] += 1
    assert check_invariants(s.k) == [
        f"folio {s.head:#x}: _nr_pages_mapped 0x201, page tables 0x200",
    ]


@pytest.mark.parametrize("kernel_id", NR_PAGES_MAPPED)
def test_folio_nr_pages_mapped_is_independent_of_mapcount(kernel_id: str) -> None:
    """_nr_pages_mapped is its own counter: a subpage _mapcount that wrongly says "mapped" breaks
    the _mapcount check only, and _nr_pages_mapped is checked against the page tables."""
    s = pte_thp(kernel_id)
    s.p.munmap(s.addr + 7 * PAGE, PAGE)
    f = s.k.frames
    assert s.k.check() == []
    assert int(f._nr_pages_mapped[s.head]) == NR - 1
    f._mapcount[s.head + 7] = 0  # -1 -> 0, as if a PTE mapped it
    assert check_invariants(s.k) == [
        f"THP {s.head:#x} subpage 7: _mapcount says 1 PTE maps, page tables 0",
    ]


@pytest.mark.parametrize("kernel_id", NR_PAGES_MAPPED)
def test_folio_nr_pages_mapped_is_kept_incrementally(kernel_id: str) -> None:
    """Hand-derived values along one history (6.2.1 page_add_anon_rmap/page_remove_rmap, 6.15 and
    6.18 __folio_add_rmap/__folio_remove_rmap):
    pages mapped by PTE, plus ENTIRELY_MAPPED while a PMD maps the folio."""
    s = pmd_thp(kernel_id)
    f = s.k.frames
    nr_mapped = lambda: int(f._nr_pages_mapped[s.head])  # noqa: E731
    assert nr_mapped() == ENTIRELY_MAPPED
    child = s.p.fork()  # a second PMD mapping: _entire_mapcount 0 -> 1, no change
    assert nr_mapped() == ENTIRELY_MAPPED
    child.mprotect(s.addr, PAGE, "r")  # the child's PMD -> 512 PTEs
    assert nr_mapped() == ENTIRELY_MAPPED + NR
    child.munmap(s.addr + PAGE, 2 * PAGE)  # two pages lose their only PTE
    assert nr_mapped() == ENTIRELY_MAPPED + NR - 2
    s.p.munmap(s.addr, 2 * MiB)  # the last PMD mapping goes
    assert nr_mapped() == NR - 2
    assert s.k.check() == []


@pytest.mark.parametrize("kernel_id", [k for k in NR_PAGES_MAPPED if POLICIES[k].mthp])
def test_folio_nr_pages_mapped_of_an_mthp(kernel_id: str) -> None:
    """A 64 KiB folio mapped by 16 PTEs, then one unmapped."""
    k = Kernel(kernel_id)
    k.mthp_enabled[64] = "always"
    p = k.spawn()
    addr = p.mmap(256 * KiB, align=64 * KiB)
    p.write(addr, b"x")
    pfn = p.translate(addr)
    assert pfn is not None and int(k.frames.order[pfn]) == 4
    assert int(k.frames._nr_pages_mapped[pfn]) == 16
    p.munmap(addr + 3 * PAGE, PAGE)
    assert int(k.frames._nr_pages_mapped[pfn]) == 15
    assert k.check() == []
    k.frames._nr_pages_mapped[pfn] = 16
    assert check_invariants(k) == [f"folio {pfn:#x}: _nr_pages_mapped 0x10, page tables 0xf"]


@pytest.mark.parametrize("kernel_id", MM_IDS)
def test_folio_mm_id_slot_overcount(kernel_id: str) -> None:
    s = shared_thp(kernel_id)
    f = s.k.frames
    assert list(f.mm_id[s.head]) == [s.p.pid, s.child.pid if s.child else 0]
    f.mm_id_mapcount[s.head, 0] += 1
    assert check_invariants(s.k) == [
        f"folio {s.head:#x}: MM id slot 0 (pid {s.p.pid}) counts too many",
    ]


@pytest.mark.parametrize("kernel_id", MM_IDS)
def test_folio_mm_id_slot_undercount_is_accepted(kernel_id: str) -> None:
    """A third MM maps the folio while both slots are taken (untracked); once a slot frees, its
    next mappings take the slot, which then counts only those: an undercount, as the kernel's
    folio_add_return_large_mapcount allows (6.15, CONFIG_MM_ID). The checker accepts it."""
    s = pmd_thp(kernel_id)
    f = s.k.frames
    first = s.p.fork()  # slots: parent, first child
    second = s.p.fork()  # both slots taken: untracked, shared
    assert second.pid not in list(f.mm_id[s.head])
    first.exit()  # slot 1 frees
    second.mprotect(s.addr, PAGE, "r")  # split: +512 PTE maps (takes slot 1), -1 PMD map
    slot = list(f.mm_id[s.head]).index(second.pid)
    counted = int(f.mm_id_mapcount[s.head, slot]) + 1
    assert counted == NR - 1  # its own PMD mapping, made untracked, was never counted
    assert s.k.check() == []  # 511 counted of its 512 mappings: accepted
    assert f.flags[s.head] & PG_mm_ids_shared


@pytest.mark.parametrize("kernel_id", MM_IDS)
def test_folio_maybe_shared(kernel_id: str) -> None:
    s = shared_thp(kernel_id)
    s.k.frames.flags[s.head] &= flags_without(PG_mm_ids_shared)
    assert check_invariants(s.k) == [
        f"folio {s.head:#x}: mapped by 2 MMs but not maybe-shared",
    ]


# --- PG_anon_exclusive --------------------------------------------------------------------


@pytest.mark.parametrize("kernel_id", EXCLUSIVE)
def test_anon_exclusive_small_page_shared_by_fork(kernel_id: str) -> None:
    s = small_page(kernel_id)
    child = s.p.fork()
    assert not s.k.frames.flags[s.pfn] & PG_anon_exclusive
    s.k.frames.flags[s.pfn] |= PG_anon_exclusive
    assert check_invariants(s.k) == [
        f"pfn {s.pfn:#x} is PG_anon_exclusive but mapped by pids {[s.p.pid, child.pid]}",
    ]


@pytest.mark.parametrize("kernel_id", EXCLUSIVE)
def test_anon_exclusive_pmd_shared_by_fork(kernel_id: str) -> None:
    """A PMD-mapped THP keeps the bit on its head, for all of it."""
    s = pmd_thp(kernel_id)
    child = s.p.fork()
    s.k.frames.flags[s.head] |= PG_anon_exclusive
    assert check_invariants(s.k) == [
        f"pfn {s.head:#x} is PG_anon_exclusive but mapped by pids {[s.p.pid, child.pid]}",
    ]


@pytest.mark.parametrize("kernel_id", EXCLUSIVE)
def test_anon_exclusive_subpage_mapped_by_pte_and_pmd(kernel_id: str) -> None:
    """A subpage the parent maps by PMD and the child by PTE."""
    s = shared_thp(kernel_id)
    s.k.frames.flags[s.head + 9] |= PG_anon_exclusive
    assert s.child is not None
    assert check_invariants(s.k) == [
        f"pfn {s.head + 9:#x} is PG_anon_exclusive but mapped by pids {[s.p.pid, s.child.pid]}",
    ]


# --- rmap ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_id", ALL)
def test_rmap_mapped_but_not_anonymous(kernel_id: str) -> None:
    s = small_page(kernel_id)
    s.k.frames.mapping[s.pfn] = 0
    assert check_invariants(s.k) == [f"pid {s.p.pid}: pfn {s.pfn:#x} mapped but not anonymous"]


def _rmap_miss(pid: int, vma: VmArea, pfn: int, av_id: int) -> str:
    return (
        f"pid {pid}: {vma} maps pfn {pfn:#x} (anon_vma#{av_id}) but is not in that "
        "anon_vma's tree: rmap_walk_anon misses the mapping"
    )


@pytest.mark.parametrize("kernel_id", ALL)
def test_rmap_vma_not_in_the_anon_vma_tree(kernel_id: str) -> None:
    s = small_page(kernel_id)
    av_id = int(s.k.frames.mapping[s.pfn])
    vma = s.p.mm.find_vma(s.addr)
    assert vma is not None
    s.k.anon_vmas[av_id].vmas.discard(vma)
    assert check_rmap(s.k) == [_rmap_miss(s.p.pid, vma, s.pfn, av_id)]
    assert check_counters(s.k) == []


@pytest.mark.parametrize("kernel_id", ["v4.5", "v6.18"])
def test_rmap_page_points_at_a_freed_anon_vma(kernel_id: str) -> None:
    t = pmd_thp(kernel_id)
    vma = t.p.mm.find_vma(t.addr)
    assert vma is not None
    t.k.frames.mapping[t.head] = 999
    assert check_invariants(t.k) == [_rmap_miss(t.p.pid, vma, t.head, 999)]


@pytest.mark.parametrize("kernel_id", ALL)
def test_rmap_wrong_page_index(kernel_id: str) -> None:
    s = small_page(kernel_id)
    vma = s.p.mm.find_vma(s.addr)
    assert vma is not None
    want = vma.linear_page_index(s.addr)
    s.k.frames.index[s.pfn] += 1
    assert check_invariants(s.k) == [
        f"pid {s.p.pid}: pfn {s.pfn:#x} at {s.addr:#x} has index {want + 1}, "
        f"linear_page_index is {want}",
    ]


@pytest.mark.parametrize("kernel_id", ["v4.5", "v6.18"])
def test_rmap_wrong_index_of_a_thp_subpage(kernel_id: str) -> None:
    """A PTE-mapped THP: subpage i's index is the head's + i."""
    s = pte_thp(kernel_id)
    s.k.frames.index[s.head] -= 1
    problems = check_invariants(s.k)
    assert len(problems) == 1 + 3  # the first three per VMA; mprotect made two VMAs
    assert problems[0] == (
        f"pid {s.p.pid}: pfn {s.head:#x} at {s.addr:#x} has index {(s.addr >> 12) - 1}, "
        f"linear_page_index is {s.addr >> 12}"
    )


# --- self-checking ------------------------------------------------------------------------


def test_selfcheck_names_the_operation_after_the_corruption() -> None:
    s = small_page("v4.5")
    s.k.selfcheck = True
    s.k.frames._mapcount[s.pfn] += 1
    with pytest.raises(InvariantViolation) as e:
        s.p.read(s.addr, 1)
    assert e.value.problems == [f"pfn {s.pfn:#x}: _mapcount says 2, page tables say 1"]
    assert "read" in str(e.value)


# --- pin coherence ------------------------------------------------------------------------


def _pinned_thp_write_protected_by_fork(kernel_id: str) -> tuple[Thp, list[int]]:
    """The seed: a pinned PMD-mapped THP, fork and child exit, a write to its second page."""
    s = pmd_thp(kernel_id)
    pin = s.p.get_user_pages(s.addr, 2 * MiB)
    s.p.fork().exit()
    s.p.write(s.addr + PAGE, b"CPU")
    return s, pin.pages


def test_pin_coherence_breaks_on_v4_5() -> None:
    s, pinned = _pinned_thp_write_protected_by_fork("v4.5")
    now = s.p.translate(s.addr)
    assert now is not None and now != pinned[0]
    problems = check_pin_coherence(s.k)
    assert len(problems) == NR
    assert problems[0] == (
        f"pin 1: {s.addr:#x} in pid {s.p.pid} maps pfn {now:#x}, the device holds pfn "
        f"{pinned[0]:#x}"
    )
    assert check_invariants(s.k) == []  # a broken property, not a broken kernel


def test_pin_coherence_holds_with_the_fix() -> None:
    s, _ = _pinned_thp_write_protected_by_fork("v4.5+6d0a07e")
    assert check_pin_coherence(s.k) == []


@pytest.mark.parametrize("kernel_id", ["v4.5", "v6.18"])
def test_pin_coherence_a_pin_record_pointing_elsewhere(kernel_id: str) -> None:
    s = small_page(kernel_id)
    pin = s.p.get_user_pages(s.addr, 2 * PAGE)
    assert check_pin_coherence(s.k) == []
    other = s.p.translate(s.addr + 3 * PAGE)
    assert other is not None
    pin.pages[1] = other
    assert check_pin_coherence(s.k) == [
        f"pin {pin.id}: {s.addr + PAGE:#x} in pid {s.p.pid} maps pfn "
        f"{s.p.translate(s.addr + PAGE):#x}, the device holds pfn {other:#x}",
    ]


# --- swap ---------------------------------------------------------------------------------


def swapped_page(kernel_id: str, until: str) -> Small:
    """small_page, its first page swapped out to ``until`` (slot 0)."""
    s = small_page(kernel_id)
    s.p.swapout(s.addr, PAGE, until=until)
    assert s.k.check() == []
    return s


@pytest.mark.parametrize("kernel_id", ALL)
def test_swap_map_count(kernel_id: str) -> None:
    s = swapped_page(kernel_id, "freed")
    s.k.swap.swap_map[0] += 1
    assert check_invariants(s.k) == ["swap slot 0: swap_map says 2, 1 swap PTEs"]


@pytest.mark.parametrize("kernel_id", ALL)
def test_mm_swapents(kernel_id: str) -> None:
    s = swapped_page(kernel_id, "freed")
    s.p.mm.swapents = 0
    assert check_invariants(s.k) == [f"pid {s.p.pid}: MM_SWAPENTS 0 but 1 swap PTEs"]


@pytest.mark.parametrize("kernel_id", ALL)
def test_swap_cache_page_without_pg_swapcache(kernel_id: str) -> None:
    s = swapped_page(kernel_id, "written")
    s.k.frames.flags[s.pfn] &= flags_without(PG_swapcache)
    assert check_invariants(s.k) == ["the swap cache and the pages marked PG_swapcache differ"]


@pytest.mark.parametrize("kernel_id", ALL)
def test_pg_swapcache_without_swap(kernel_id: str) -> None:
    """No swap slot was ever handed out (the checker's no-swap shortcut): a page flagged
    PG_swapcache is still a page the (empty) swap cache does not hold."""
    s = small_page(kernel_id)
    assert s.k.swap.nr == 0
    s.k.frames.flags[s.pfn] |= PG_swapcache
    assert check_invariants(s.k) == ["the swap cache and the pages marked PG_swapcache differ"]


@pytest.mark.parametrize("kernel_id", ALL)
def test_thp_flagged_swapcache_without_swap(kernel_id: str) -> None:
    """No swap at all, a PMD-mapped THP's head flagged PG_swapcache: besides the flag, its
    page->private (0) names slots 0..511, which hold nothing, so the folio is not there whole."""
    t = pmd_thp(kernel_id)
    assert t.k.swap.nr == 0
    t.k.frames.flags[t.head] |= PG_swapcache
    assert check_invariants(t.k) == [
        "the swap cache and the pages marked PG_swapcache differ",
        f"folio {t.head:#x} in the swap cache: not slots 0.. + i, aligned",
    ]


@pytest.mark.parametrize("kernel_id", ALL)
def test_swap_cache_page_private(kernel_id: str) -> None:
    s = swapped_page(kernel_id, "written")
    s.k.frames.private[s.pfn] = 7
    assert check_invariants(s.k) == ["swap slot 0: its page's private is 7"]


@pytest.mark.parametrize("kernel_id", ALL)
def test_swap_cache_reference_counted(kernel_id: str) -> None:
    s = swapped_page(kernel_id, "written")
    s.k.frames._count[s.pfn] -= 1
    assert check_invariants(s.k) == [f"pfn {s.pfn:#x}: _count says 0, page tables say 1"]


WHOLE_THP_SWAP = [k for k, p in POLICIES.items() if p.thp_swap_devices]  # 4.14+


@pytest.mark.parametrize("kernel_id", WHOLE_THP_SWAP)
def test_thp_in_the_swap_cache_out_of_order(kernel_id: str) -> None:
    """A THP swapped out whole to an SSD (4.14+), left in the swap cache; its first two pages'
    slots swapped, each page still naming the slot that holds it."""
    k = Kernel(kernel_id, Config(swap_device="ssd"))
    k.thp_enabled = "always"
    p = k.spawn()
    addr = p.mmap(2 * MiB, align=2 * MiB)
    p.write(addr, b"x")
    head = p.translate(addr)
    assert head is not None and p.swapout(addr, 2 * MiB, until="written") == NR
    assert int(k.swap.cache[0]) == head and k.check() == []
    k.swap.cache[0:2] = [head + 1, head]
    k.frames.private[head], k.frames.private[head + 1] = 1, 0
    assert check_invariants(k) == [f"folio {head:#x} in the swap cache: not slots 1.. + i, aligned"]


# --- KSM ----------------------------------------------------------------------------------


def ksm_pair(kernel_id: str) -> Small:
    """Two identical MADV_MERGEABLE pages merged by two ksmd passes into one KSM page."""
    k = Kernel(kernel_id)
    p = k.spawn()
    addr = p.mmap(2 * PAGE)
    p.write(addr, b"same")
    p.write(addr + PAGE, b"same")
    p.madvise(addr, 2 * PAGE, "mergeable")
    k.ksmd(2)
    pfn = p.translate(addr)
    assert pfn is not None and pfn == p.translate(addr + PAGE) and k.check() == []
    return Small(k, p, addr, pfn)


@pytest.mark.parametrize("kernel_id", ALL)
def test_ksm_page_without_stable_node(kernel_id: str) -> None:
    s = ksm_pair(kernel_id)
    s.k.ksm.nodes.clear()
    assert check_invariants(s.k) == [
        f"pid {s.p.pid}: KSM page {s.pfn:#x} at {s.addr + i * PAGE:#x} has no stable node"
        for i in range(2)
    ]


@pytest.mark.parametrize("kernel_id", ALL)
def test_ksm_page_whose_stable_node_is_null(kernel_id: str) -> None:
    """A KSM page whose stable node is NULL (what a failed try_to_merge_two_pages leaves mapped
    where fork shares the page) is one rmap_walk_ksm leaves at once in the kernel
    (page_stable_node NULL: 4.5.0 .. 6.18.2 mm/ksm.c): no finding. The same mapping on a page
    without PG_ksm is no state the kernel has."""
    s = ksm_pair(kernel_id)
    s.k.ksm.nodes.clear()
    s.k.frames.mapping[s.pfn] = NULL_STABLE_NODE
    assert check_invariants(s.k) == []
    s.k.frames.flags[s.pfn] &= flags_without(PG_ksm)
    assert check_invariants(s.k) == [
        f"pid {s.p.pid}: KSM page {s.pfn:#x} at {s.addr + i * PAGE:#x} has no stable node"
        for i in range(2)
    ]


@pytest.mark.parametrize("kernel_id", ALL)
def test_ksm_rmap_misses_a_mapping(kernel_id: str) -> None:
    s = ksm_pair(kernel_id)
    (node,) = s.k.ksm.nodes.values()
    node.items[1].anon_vma = None
    assert check_invariants(s.k) == [
        f"pid {s.p.pid}: KSM page {s.pfn:#x} at {node.items[1].addr:#x}: rmap_walk_ksm misses it"
    ]


@pytest.mark.parametrize("kernel_id", ALL)
def test_ksm_rmap_may_miss_an_address_ksmd_holds_no_item_for(kernel_id: str) -> None:
    """The rmap_item of an address ksmd dropped (it held a swap PTE when ksmd passed) is gone
    from both the mm's list and the stable node; the KSM page mapped there again by
    do_swap_page is out of rmap_walk_ksm's reach, as in the kernel, until ksmd visits the
    address (k.ksm.unreached). An item that is still the mm's but off the node is a miss, and
    so is an address with no item that no swap-in mapped: ksmd hangs an item for every merge
    (stable_tree_append, 4.5.0 and 6.18.2 mm/ksm.c)."""
    s = ksm_pair(kernel_id)
    (node,) = s.k.ksm.nodes.values()
    item = node.items[1]
    node.items.remove(item)
    miss = f"pid {s.p.pid}: KSM page {s.pfn:#x} at {item.addr:#x}: rmap_walk_ksm misses it"
    assert check_invariants(s.k) == [miss]
    del s.k.ksm.items[(item.pid, item.addr)]
    assert check_invariants(s.k) == [miss]
    s.k.ksm.unreached.add((item.pid, item.addr))
    assert check_invariants(s.k) == []


@pytest.mark.parametrize("kernel_id", ALL)
def test_ksm_rmap_misses_a_forked_child(kernel_id: str) -> None:
    """A child forked after ksmd's pass has no rmap_item of its own (fork copies none):
    rmap_walk_ksm finds its mappings through the parent's items, whose anon_vma's tree holds the
    child's VMA (anon_vma_clone; 4.5.0 and 6.18.2 mm/ksm.c, mm/rmap.c). Unlinked from that
    tree, the child's mappings are misses."""
    s = ksm_pair(kernel_id)
    c = s.p.fork()
    assert (c.pid, s.addr) not in s.k.ksm.items and check_invariants(s.k) == []
    av = s.p.mm.find_vma(s.addr).anon_vma
    (vma,) = [v for v in av.vmas if v.mm is c.mm]
    av.vmas.discard(vma)
    assert check_invariants(s.k) == [
        f"pid {c.pid}: KSM page {s.pfn:#x} at {s.addr + i * PAGE:#x}: rmap_walk_ksm misses it"
        for i in range(2)
    ]


@pytest.mark.parametrize("kernel_id", ["v4.14", "v5.4", "v6.18"])
def test_ksm_rmap_may_miss_a_swapped_in_page_and_its_fork(kernel_id: str) -> None:
    """The KSM page swapped out, ksmd's pass drops the swapped-out address's rmap_item, a read
    maps the page again from the swap cache (do_swap_page, ksm_might_need_to_copy) where no
    item reaches it, and a child forked then maps it where no item reaches either (fork copies
    no items, the child's VMA is only in its parent VMA's anon_vmas and its own): no miss is
    reported at either (k.ksm.unreached). Off that list, each is a miss again."""
    s = ksm_pair(kernel_id)
    other = s.addr + PAGE
    s.p.write(other, b"S")  # a copy: the KSM page is mapped once, at s.addr
    s.p.swapout(s.addr, PAGE, until="written")
    s.k.ksmd()
    assert (s.p.pid, s.addr) not in s.k.ksm.items
    assert s.p.read(s.addr, 4) == b"same" and s.p.translate(s.addr) == s.pfn
    c = s.p.fork()
    assert s.k.ksm.unreached == {(s.p.pid, s.addr), (c.pid, s.addr)}
    assert check_invariants(s.k) == []
    s.k.ksm.unreached.discard((c.pid, s.addr))
    child_miss = f"pid {c.pid}: KSM page {s.pfn:#x} at {s.addr:#x}: rmap_walk_ksm misses it"
    assert check_invariants(s.k) == [child_miss]
    s.k.ksm.unreached.discard((s.p.pid, s.addr))
    parent_miss = f"pid {s.p.pid}: KSM page {s.pfn:#x} at {s.addr:#x}: rmap_walk_ksm misses it"
    assert check_invariants(s.k) == [parent_miss, child_miss]


@pytest.mark.parametrize("kernel_id", ["v6.18"])
def test_ksm_rmap_a_reached_swap_in_clears_an_older_pair(kernel_id: str) -> None:
    """A swap-in that an rmap_item reaches again takes its address off k.ksm.unreached: a pair
    left there from an earlier swap-in would otherwise hide a later miss at that address."""
    s = ksm_pair(kernel_id)
    assert (s.p.pid, s.addr) in s.k.ksm.items  # ksmd's item reaches this mapping
    s.k.ksm.unreached.add((s.p.pid, s.addr))  # left over from an earlier swap-in
    swapped_in(s.k, s.p.mm.find_vma(s.addr), s.addr, s.pfn)
    assert (s.p.pid, s.addr) not in s.k.ksm.unreached
