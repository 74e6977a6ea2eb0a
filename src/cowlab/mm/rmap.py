"""mm/rmap.c: anon_vma lifetime and linking, mapcount accounting, and the anonymous rmap walk."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import numpy.typing as npt

from cowlab.errors import KernelBug
from cowlab.mm.constants import (
    HPAGE_PMD_NR,
    HPAGE_PMD_SIZE,
    PAGE_SHIFT,
    PG_anon_exclusive,
    PG_double_map,
    PG_head,
    PG_mm_ids_shared,
    PG_swapbacked,
    PG_tail,
)
from cowlab.mm.mm import (
    PageDoubleMap,
    PageKsm,
    compound_head,
    folio_large_mapcount,
    folio_mapped,
    folio_nr_pages,
    heads_of,
    put_page,
    set_page_dirty,
)
from cowlab.mm.mm_types import AnonVma, MmStruct, VmArea, pmd_index, pte_index
from cowlab.mm.page_alloc import flags_without
from cowlab.mm.pgtable import (
    PTE_DIRTY,
    PTE_MIGRATION,
    PTE_SOFT_DIRTY,
    PTE_SWP_EXCLUSIVE,
    HugePmd,
    PteTable,
    swp_entry_to_pte,
)

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


# --- anon_vma -----------------------------------------------------------------------------


def anon_vma_alloc(k: Kernel) -> AnonVma:
    """anon_vma_alloc(): a new anon_vma that is its own root, degree 1 for its first VMA."""
    av = AnonVma(id=k.next_anon_vma_id())
    av.root = av
    av.parent = av
    k.anon_vmas[av.id] = av
    return av


def anon_vma_chain_link(vma: VmArea, av: AnonVma) -> None:
    vma.anon_vma_chain.append(av)
    av.vmas.add(vma)


def anon_vma_prepare(k: Kernel, vma: VmArea) -> None:
    """anon_vma_prepare(): give the VMA its own anon_vma at its first anonymous fault.

    4.5 first tries find_mergeable_anon_vma() on the neighbours; the model's neighbours were
    already merged by vma_merge at mmap time, so a fresh anon_vma is what that search yields.
    """
    if vma.anon_vma is not None:
        return
    av = anon_vma_alloc(k)
    vma.anon_vma = av
    anon_vma_chain_link(vma, av)


def anon_vma_clone(dst: VmArea, src: VmArea) -> None:
    """anon_vma_clone(): link dst into every anon_vma src is linked into.

    From a fork (dst.anon_vma is None) it may adopt an ancestor anon_vma of degree < 2, one no
    VMA uses any more (the 3.19 reuse heuristic, 7a3ef208e662).
    """
    for av in list(src.anon_vma_chain):  # oldest first, as the kernel's reverse list walk
        anon_vma_chain_link(dst, av)
        if dst.anon_vma is None and av is not src.anon_vma and av.degree < 2:
            dst.anon_vma = av
    if dst.anon_vma is not None:
        dst.anon_vma.degree += 1


def anon_vma_fork(k: Kernel, vma: VmArea, pvma: VmArea) -> None:
    """anon_vma_fork(): clone the parent's chain, then a fresh anon_vma child of the parent's."""
    if pvma.anon_vma is None:
        return
    vma.anon_vma = None
    vma.anon_vma_chain = []
    anon_vma_clone(vma, pvma)
    if vma.anon_vma is not None:
        return
    av = anon_vma_alloc(k)
    parent = pvma.anon_vma
    av.root = parent.root
    av.parent = parent
    vma.anon_vma = av
    anon_vma_chain_link(vma, av)
    parent.degree += 1


def unlink_anon_vmas(k: Kernel, vma: VmArea) -> None:
    """unlink_anon_vmas(): drop the VMA from every tree; free anon_vmas left empty."""
    if vma.anon_vma is not None:
        vma.anon_vma.degree -= 1
    for av in vma.anon_vma_chain:
        av.vmas.discard(vma)
    for av in vma.anon_vma_chain:
        if not av.vmas and av.degree <= 0 and av.id in k.anon_vmas:
            if av.parent is not None and av.parent is not av:
                av.parent.degree -= 1
            del k.anon_vmas[av.id]
    vma.anon_vma_chain = []


def page_anon_vma(k: Kernel, pfn: int) -> AnonVma | None:
    """page_anon_vma(): the anon_vma in the compound head's mapping."""
    return k.anon_vmas.get(int(k.frames.mapping[compound_head(k.frames, pfn)]))


# --- mapcounts ----------------------------------------------------------------------------
#
# Every mapping added or removed goes through rmap_add/rmap_remove, which keep the counters of
# the running generation: per-page _mapcount and compound_mapcount (with PG_double_map offsets
# up to 6.1), from 6.2 the large folio's _nr_pages_mapped (6.2's subpages_mapcount, renamed in
# 6.3), and in the model from 6.15 _large_mapcount and the two tracked MM ids
# (folio_add_rmap_ptes/pmd, folio_remove_rmap_ptes/pmd). In 6.x the model's compound_mapcount
# is the folio's _entire_mapcount (the same count of PMD mappings, -1 based).
#
# _nr_pages_mapped is kept incrementally as page_add_anon_rmap/page_remove_rmap (6.2.1, 6.6.9)
# and __folio_add_rmap/__folio_remove_rmap (6.8.0 .. 6.18.2 with CONFIG_PAGE_MAPCOUNT, as every
# modelled build) keep it: +1/-1 for each page whose _mapcount goes -1 -> 0 / 0 -> -1 (pages
# mapped by PTE), +/-ENTIRELY_MAPPED (6.2: COMPOUND_MAPPED, the same bit) when _entire_mapcount
# goes -1 -> 0 / 0 -> -1; the deferred-split queue is decided by it. Nothing recomputes it from
# _mapcount, so the checker, which recounts it from the page tables, checks an independent
# counter. CONFIG_NO_PAGE_MAPCOUNT (749492229e3b, 6.15; the scenario config `no_page_mapcount`;
# k.page_mapcount and k.nr_pages_mapped say which build) drops the field and a large folio's
# per-page _mapcount:
# 6.18.2 __folio_add_rmap/__folio_remove_rmap then decide the deferred split by _large_mapcount
# (_nr_pages_mapped stays 0 in the model). The model still counts each page's PTE maps in
# _mapcount, its own tally that the rest of the model reads for a total (the kernel reads
# _large_mapcount there, the same sum); nothing such a build reports comes from it.

ENTIRELY_MAPPED = 0x800000  # mm/internal.h: the PMD-mapped flag inside _nr_pages_mapped
NOT_MM_IDS_SHARED = flags_without(PG_mm_ids_shared)


def __page_set_anon_rmap(k: Kernel, pfn: int, vma: VmArea, addr: int, exclusive: bool) -> None:
    """__page_set_anon_rmap(): first mapping sets mapping and index (the root when shared)."""
    f = k.frames
    if f.mapping_at[pfn]:
        return
    assert vma.anon_vma is not None and vma.anon_vma.root is not None
    av = vma.anon_vma if exclusive else vma.anon_vma.root
    f.mapping_at[pfn] = av.id
    f.index_at[pfn] = vma.linear_page_index(addr)


def page_add_new_anon_rmap(k: Kernel, pfn: int, vma: VmArea, addr: int, compound: bool) -> None:
    """page_add_new_anon_rmap(): a freshly allocated page's first mapping (PTE or PMD).

    From 5.19 a new anonymous page is exclusive (PG_anon_exclusive; on the head for a THP).
    """
    f = k.frames
    anon = PG_swapbacked | (PG_anon_exclusive if k.policy.anon_exclusive else 0)
    f.flags_at[pfn] |= anon
    if compound:
        rmap_add_pmd(k, vma.mm, pfn)
    else:
        f._mapcount_at[pfn] = 0  # atomic_set(&page->_mapcount, 0): a new small page, mapped once
    __page_set_anon_rmap(k, pfn, vma, addr, exclusive=True)


def pages_add_new_anon_rmap(
    k: Kernel, pfns: npt.NDArray[np.int64], vma: VmArea, addrs: npt.NDArray[np.int64]
) -> None:
    """page_add_new_anon_rmap() of many new small pages, each mapped once at its address."""
    f = k.frames
    f.flags[pfns] |= PG_swapbacked | (PG_anon_exclusive if k.policy.anon_exclusive else 0)
    f._mapcount[pfns] += 1
    assert vma.anon_vma is not None
    f.mapping[pfns] = vma.anon_vma.id
    f.index[pfns] = ((addrs - vma.vm_start) >> PAGE_SHIFT) + vma.vm_pgoff


def folio_add_new_anon_rmap_ptes(k: Kernel, head: int, nr: int, vma: VmArea, addr: int) -> None:
    """folio_add_new_anon_rmap() of a PTE-mapped large folio (mTHP): every page mapped once,
    every page exclusive (6.x)."""
    f = k.frames
    sl = slice(head, head + nr)
    f.flags[sl] |= PG_swapbacked | (PG_anon_exclusive if k.policy.anon_exclusive else 0)
    rmap_add_ptes(k, vma.mm, np.arange(head, head + nr, dtype=np.int64))
    __page_set_anon_rmap(k, head, vma, addr, exclusive=True)


def page_add_anon_rmap(
    k: Kernel, pfn: int, vma: VmArea, addr: int, compound: bool, exclusive: bool = False
) -> None:
    """page_add_anon_rmap() / do_page_add_anon_rmap(): one more mapping of a page that may
    already be anonymous; an exclusive one (RMAP_EXCLUSIVE) gets vma's own anon_vma if it has
    none yet, and from 5.19 PG_anon_exclusive."""
    if compound:
        rmap_add_pmd(k, vma.mm, pfn)
    else:
        rmap_add_pte(k, vma.mm, pfn)
    if exclusive and k.policy.anon_exclusive:
        k.frames.flags[pfn] |= PG_anon_exclusive
    __page_set_anon_rmap(k, compound_head(k.frames, pfn), vma, addr, exclusive)


def page_dup_rmap(k: Kernel, mm: MmStruct, pfn: int, compound: bool) -> None:
    """page_dup_rmap()/page_try_dup_anon_rmap(): fork shares the page; it stops being exclusive."""
    k.frames.flags[pfn] &= flags_without(PG_anon_exclusive)
    if compound:
        rmap_add_pmd(k, mm, pfn)
    else:
        rmap_add_pte(k, mm, pfn)


def page_remove_rmap(k: Kernel, mm: MmStruct, pfn: int, compound: bool) -> None:
    """page_remove_rmap(): -1 mapping; a THP subpage reaching -1 queues the THP for splitting."""
    if compound:
        rmap_remove_pmd(k, mm, pfn)
        return
    f = k.frames
    if f.flags_at[pfn] & (PG_head | PG_tail):
        page_remove_folio_pte(k, mm, pfn, compound_head(f, pfn))
        return
    mapcount = f._mapcount_at[pfn] - 1
    if mapcount < -1:
        raise KernelBug("page_remove_rmap: _mapcount below -1")
    f._mapcount_at[pfn] = mapcount


def page_remove_folio_pte(k: Kernel, mm: MmStruct, pfn: int, head: int) -> None:
    """page_remove_rmap() of one PTE of a large folio whose head the caller knows."""
    f = k.frames
    mapcount = f._mapcount_at[pfn] - 1
    if mapcount < -1:
        raise KernelBug("page_remove_rmap: _mapcount below -1")
    f._mapcount_at[pfn] = mapcount
    if k.policy.large_mapcount:
        _folio_remove(k, mm, head, 1)
    if _pte_unmap_queues(k, head, int(mapcount == -1)):
        deferred_split_huge_page(k, head)


def rmap_add_pte(k: Kernel, mm: MmStruct, pfn: int) -> None:
    """rmap_add_ptes() of one page: a small page's _mapcount by a scalar write (a swap-in's
    common case), where a one-element array costs several NumPy calls."""
    f = k.frames
    if f.flags_at[pfn] & (PG_head | PG_tail):
        rmap_add_ptes(k, mm, np.array([pfn], dtype=np.int64))
    else:
        f._mapcount_at[pfn] += 1


def rmap_add_ptes(k: Kernel, mm: MmStruct, pfns: npt.NDArray[np.int64]) -> None:
    """+1 PTE mapping per entry of pfns (a KSM page may repeat): _mapcount, and the folio
    fields in 6.x."""
    f = k.frames
    np.add.at(f._mapcount, pfns, 1)
    if k.policy.nr_pages_mapped:
        for head, nr, first in _large_heads(k, pfns, edge=0):
            if k.nr_pages_mapped:
                f._nr_pages_mapped[head] += first
            if k.policy.large_mapcount:
                _folio_add(k, mm, head, nr)


def rmap_remove_ptes(k: Kernel, mm: MmStruct, pfns: npt.NDArray[np.int64]) -> None:
    """-1 PTE mapping per entry of pfns; a THP left with a page no PTE maps is queued for
    splitting (6.2+: unless a PMD still maps it)."""
    f = k.frames
    np.subtract.at(f._mapcount, pfns, 1)
    if (f._mapcount[pfns] < -1).any():
        raise KernelBug("page_remove_rmap: _mapcount below -1")
    for head, nr, last in _large_heads(k, pfns, edge=-1):
        if k.policy.large_mapcount:
            _folio_remove(k, mm, head, nr)
        if _pte_unmap_queues(k, head, last):
            deferred_split_huge_page(k, head)


def _pte_unmap_queues(k: Kernel, head: int, last: int) -> bool:
    """page_remove_rmap() after `last` pages of the THP lost their last PTE mapping: queue it?
    4.5 .. 6.1: whenever one did (a PMD mapping elsewhere keeps the pages' _mapcount at 0 or
    more through the DoubleMap offset). 6.2 (6.2.1 .. 6.18.2 mm/rmap.c): subpages_mapcount
    (_nr_pages_mapped) drops by `last`, and the THP is queued only if it is not also mapped
    by a PMD (the COMPOUND_MAPPED / ENTIRELY_MAPPED bit). Without per-page mapcounts, see
    _partially_mapped. Called after _large_mapcount has dropped."""
    if not k.page_mapcount:
        return _partially_mapped(k, head) and k.frames.compound_mapcount[head + 1] < 0
    if not k.policy.nr_pages_mapped:
        return last > 0
    return last > 0 and k.frames._nr_pages_mapped.add(head, -last) < ENTIRELY_MAPPED


def rmap_add_pmd(k: Kernel, mm: MmStruct, head: int) -> None:
    """+1 PMD mapping: compound_mapcount (6.x: _entire_mapcount), and the folio fields in 6.x."""
    f = k.frames
    f.compound_mapcount[head + 1] += 1
    if k.nr_pages_mapped and f.compound_mapcount[head + 1] == 0:  # the first PMD map
        f._nr_pages_mapped[head] += ENTIRELY_MAPPED
    if k.policy.large_mapcount:
        _folio_add(k, mm, head, 1)


def rmap_remove_pmd(k: Kernel, mm: MmStruct, head: int) -> None:
    """page_remove_anon_compound_rmap(): -1 PMD map; the last one undoes the DoubleMap offset
    (4.5 .. 6.1) or the ENTIRELY_MAPPED bit (6.2+) and may queue the THP for splitting."""
    f = k.frames
    mapcount = f.compound_mapcount[head + 1] - 1
    f.compound_mapcount[head + 1] = mapcount
    if k.policy.large_mapcount:
        _folio_remove(k, mm, head, 1)
    if mapcount >= 0:
        return
    if _last_pmd_unmap_queues(k, head):
        deferred_split_huge_page(k, head)


def _last_pmd_unmap_queues(k: Kernel, head: int) -> bool:
    """The last PMD mapping went: queue the THP? 4.5 .. 6.1: if any page is left with no PTE
    mapping (all of them when no DoubleMap offset was set). 6.2 (6.2.1 .. 6.18.2 page_remove_rmap,
    __folio_remove_rmap): only if it is partly PTE-mapped, some pages mapped and some not.
    Without per-page mapcounts, see _partially_mapped (_large_mapcount has dropped)."""
    f = k.frames
    if not k.page_mapcount:
        return _partially_mapped(k, head)
    if k.policy.nr_pages_mapped:
        mapped = f._nr_pages_mapped[head] - ENTIRELY_MAPPED
        f._nr_pages_mapped[head] = mapped
        return 0 < mapped < HPAGE_PMD_NR
    if not PageDoubleMap(f, head):
        return True
    f.flags[head + 1] &= flags_without(PG_double_map)
    f._mapcount[head : head + HPAGE_PMD_NR] -= 1
    return bool((f._mapcount[head : head + HPAGE_PMD_NR] == -1).any())


def _partially_mapped(k: Kernel, head: int) -> bool:
    """CONFIG_NO_PAGE_MAPCOUNT (6.18.2 mm/rmap.c __folio_remove_rmap): with no count of which
    pages are mapped, a large folio is "partially mapped" when its mappings left (PTEs and
    PMDs, _large_mapcount) are some but fewer than its pages; a PTE unmap also wants no PMD
    mapping left. So a THP two processes each map half of by PTEs (512 mappings) is not
    queued, whichever half each maps."""
    left = folio_large_mapcount(k.frames, head)
    return 0 < left < folio_nr_pages(k.frames, head)


def _large_heads(k: Kernel, pfns: npt.NDArray[np.int64], edge: int) -> list[tuple[int, int, int]]:
    """(head, number of its pages among pfns, how many of those now have _mapcount == edge)
    for the large folios among pfns: edge 0 after an add counts the pages that got their first
    PTE mapping, edge -1 after a remove the pages that lost their last."""
    f = k.frames
    compound = (f.flags[pfns] & (PG_head | PG_tail)) != 0
    if not compound.any():  # the common small-page case pays for no np.unique
        return []
    pages = pfns[compound]
    heads, where, counts = np.unique(heads_of(f, pages), return_inverse=True, return_counts=True)
    crossed = np.bincount(where, weights=f._mapcount[pages] == edge, minlength=heads.size)
    return list(zip(heads.tolist(), counts.tolist(), crossed.astype(int).tolist(), strict=True))


def _folio_add(k: Kernel, mm: MmStruct, head: int, nr: int) -> None:
    """folio_add_large_mapcount(): total mappings (6.10), and from 6.15 the MM that mapped
    (CONFIG_MM_ID)."""
    f = k.frames
    before = int(f._large_mapcount[head])
    f._large_mapcount[head] += nr
    if not k.policy.mm_ids:
        return
    ids, counts = f.mm_id[head], f.mm_id_mapcount[head]
    for slot in (0, 1):
        if ids[slot] == mm.pid:
            counts[slot] += nr
            return
    for slot in (0, 1):
        if ids[slot] == 0:
            ids[slot] = mm.pid
            counts[slot] = nr - 1
            if before != -1:  # somebody else already maps it
                f.flags[head] |= PG_mm_ids_shared
            return
    f.flags[head] |= PG_mm_ids_shared


def _folio_remove(k: Kernel, mm: MmStruct, head: int, nr: int) -> None:
    """folio_sub_large_mapcount(): and from 6.15 "not shared" again once one tracked MM has
    them all."""
    f = k.frames
    large = f._large_mapcount.add(head, -nr)
    if not k.policy.mm_ids:
        return
    row = f.folios.row[head]  # both MM-id fields by one lookup: a COW run asks once a page
    ids, counts = f.mm_id.data[row], f.mm_id_mapcount.data[row]
    for slot in (0, 1):
        if ids[slot] == mm.pid:
            counts[slot] -= nr
            if counts[slot] < 0:  # may underflow when undercounted: the slot is freed at -1
                counts[slot] = -1
                ids[slot] = 0
            break
    if large in counts:
        f.flags[head] &= NOT_MM_IDS_SHARED


def removals_keeping_shared(k: Kernel, mm: MmStruct, head: int) -> int:
    """How many PTE removals of the large folio by mm in a row, each by _folio_remove, leave
    its maybe-shared bit set (6.15, 1da190f4d0a6 folio_sub_large_mapcount; 1 << 62: no bound):
    every removal lowers _large_mapcount and mm's own count together, so the bit clears at
    once if they are equal, else when _large_mapcount comes down to another MM's count (a
    freed slot's -1 is below any count a removal leaves a mapped folio)."""
    f = k.frames
    if not k.policy.mm_ids or not f.flags.item(head) & PG_mm_ids_shared:
        return 1 << 62
    large = int(f._large_mapcount[head])
    ids, counts = f.mm_id[head], f.mm_id_mapcount[head]
    kept = 1 << 62
    for slot in (0, 1):
        if ids[slot] == mm.pid:
            if counts[slot] == large:
                return 0
        elif large - counts[slot] >= 1:
            kept = min(kept, int(large - counts[slot]) - 1)
    return kept


def page_move_anon_rmap(k: Kernel, pfn: int, vma: VmArea, addr: int) -> None:
    """page_move_anon_rmap(): make vma's own anon_vma the page's.

    4.5's VM_BUG_ON compares the passed page's index with the faulting address; passing a THP
    head with a tail's address trips it under CONFIG_DEBUG_VM; 4.6.0 still has that. 0798d3c022dc
    (v4.7-rc1, stable 4.5.7 and 4.6.2) rounds the address to the PMD for a THP head first; 4.7
    removed the check and the address (5a49973d7143); which a kernel has is the policy's
    move_anon_rmap_check.
    """
    f = k.frames
    assert vma.anon_vma is not None
    check = k.policy.move_anon_rmap_check if k.config.debug_vm else ""
    if check == "pmd_rounded" and f.flags[pfn] & PG_head:
        addr &= ~(HPAGE_PMD_SIZE - 1)
    if check and int(f.index[pfn]) != vma.linear_page_index(addr):
        raise KernelBug(
            f"VM_BUG_ON_PAGE(page->index != linear_page_index) in page_move_anon_rmap: "
            f"pfn {pfn:#x} index {int(f.index[pfn])} vs {vma.linear_page_index(addr)}"
        )
    f.mapping[pfn] = vma.anon_vma.id
    k.event("page_move_anon_rmap", "move", pfn=pfn, detail=f"to {vma.anon_vma}")


def deferred_split_huge_page(k: Kernel, head: int) -> None:
    """deferred_split_huge_page(): queue a partly unmapped THP for the split shrinker."""
    k.deferred_split.add(head)


# --- the rmap walk ------------------------------------------------------------------------


class Mapping(NamedTuple):
    """One virtual mapping of a page: a PMD (``pfn`` is the head) or a PTE of ``pfn``. A tuple:
    the rmap walk makes one per mapping found, in a third of a frozen dataclass's time."""

    mm: MmStruct
    vma: VmArea
    addr: int
    pfn: int
    pmd: bool


def mappings_in_vma(k: Kernel, vma: VmArea, head: int, nr: int) -> list[Mapping]:
    """What vma maps of pages head..head+nr-1 at the addresses their index gives."""
    f = k.frames
    found: list[Mapping] = []
    first = int(f.index[head])
    lo = max(first, vma.vm_pgoff)
    hi = min(first + nr, vma.vm_pgoff + vma.pages)
    pgoff = lo
    while pgoff < hi:
        addr = vma.vma_address(pgoff)
        entry = vma.mm.pmds.get(pmd_index(addr))
        if isinstance(entry, HugePmd):
            if entry.pfn == head and not entry.huge_zero:
                found.append(Mapping(vma.mm, vma, addr & ~((HPAGE_PMD_NR << 12) - 1), head, True))
            pgoff += HPAGE_PMD_NR - pte_index(addr)
            continue
        i = pte_index(addr)
        n = min(hi - pgoff, HPAGE_PMD_NR - i)  # the part of [pgoff, hi) this page table maps
        if entry is not None:
            found += _pte_mappings(vma, entry, addr, head + (pgoff - first), n)
        pgoff += n
    return found


def _pte_mappings(vma: VmArea, table: PteTable, addr: int, pfn: int, n: int) -> list[Mapping]:
    """The PTEs of the n pages from addr in table that map pfn, pfn + 1, ... (not migration
    entries): compared at once, a page table's part of a THP in a few NumPy calls."""
    sl = slice(pte_index(addr), pte_index(addr) + n)
    hit = (table.pfn[sl] == np.arange(pfn, pfn + n)) & ((table.bits[sl] & PTE_MIGRATION) == 0)
    return [
        Mapping(vma.mm, vma, addr + (j << PAGE_SHIFT), pfn + j, False)
        for j in np.flatnonzero(hit).tolist()
    ]


def rmap_walk_anon(k: Kernel, head: int) -> list[Mapping]:
    """rmap_walk_anon(): every mapping reachable from the page's anon_vma interval tree."""
    av = page_anon_vma(k, head)
    if av is None:
        return []
    # the walk's length: what an anon_vma left on an older process costs (the seed's review)
    k.vmstat["rmap_walk"] += 1
    k.vmstat["rmap_walk_vmas"] += len(av.vmas)
    if k.tracing:
        k.event("rmap_walk_anon", pfn=head, detail=f"{av}: {len(av.vmas)} VMAs visited")
    nr = folio_nr_pages(k.frames, head)
    found: list[Mapping] = []
    for vma in sorted(av.vmas, key=lambda v: (v.mm.pid, v.vm_start)):
        found.extend(mappings_in_vma(k, vma, head, nr))
    return found


def rmap_walk_ksm(k: Kernel, pfn: int) -> list[Mapping]:
    """rmap_walk_ksm(): every PTE mapping a KSM page, found through its stable node's
    rmap_items: at each item's address, in every VMA of the item's anon_vma tree (a forked
    child's included). A PTE two items reach (a child's, through its parent's item and its own)
    is one mapping: the kernel's second visit finds it unmapped (page_vma_mapped_walk)."""
    node = k.ksm.nodes.get(-int(k.frames.mapping[pfn]))
    found: list[Mapping] = []
    reached: set[tuple[int, int]] = set()
    for item in node.items if node is not None else []:
        vmas = sorted(item.anon_vma.vmas, key=lambda v: v.mm.pid) if item.anon_vma else []
        k.vmstat["rmap_walk_vmas"] += len(vmas)
        for vma in vmas:
            table = vma.mm.pmds.get(pmd_index(item.addr))
            if not vma.vm_start <= item.addr < vma.vm_end or not isinstance(table, PteTable):
                continue
            i = pte_index(item.addr)
            if (id(vma), item.addr) in reached:
                continue
            if table.pfn[i] == pfn and not table.bits[i] & PTE_MIGRATION:
                reached.add((id(vma), item.addr))
                found.append(Mapping(vma.mm, vma, item.addr, pfn, False))
    k.vmstat["rmap_walk"] += 1
    k.event("rmap_walk_ksm", pfn=pfn, detail=f"{len(found)} mappings through the stable node")
    return found


# --- try_to_unmap -------------------------------------------------------------------------


def try_to_unmap(k: Kernel, pfn: int) -> bool:
    """try_to_unmap() of a swap-cache folio whose PMDs reclaim has split: every mapping the rmap
    walk (rmap_walk_ksm for a KSM page) finds becomes a swap PTE; the walk stops at a mapping
    the generation refuses to unmap. True if unmapped."""
    walk = rmap_walk_ksm if PageKsm(k.frames, pfn) else rmap_walk_anon
    for m in walk(k, pfn):
        assert not m.pmd, "reclaim splits a THP's PMDs before it unmaps it"
        if not try_to_unmap_one(k, m):
            return False
    return not folio_mapped(k.frames, pfn)


def try_to_unmap_one(k: Kernel, m: Mapping) -> bool:
    """try_to_unmap_one(): the PTE becomes a swap PTE for the page's slot (swap_duplicate),
    keeping soft-dirty and, from 5.19, whether the page was exclusive; the page loses this
    mapping and its reference. A dirty PTE dirties the page."""
    f = k.frames
    pfn = m.pfn
    refuse, read, rule = k.policy.try_to_unmap_refuses(k, pfn)
    if refuse:
        k.event("try_to_unmap_one", "keep", addr=m.addr, pfn=pfn, read=read, rule=rule)
        return False
    table = m.mm.pmds[pmd_index(m.addr)]
    assert isinstance(table, PteTable)
    i = pte_index(m.addr)
    bits = table.bits.item(i)
    if bits & PTE_DIRTY:
        set_page_dirty(f, pfn)
    offset = int(f.private[pfn])
    exclusive = PTE_SWP_EXCLUSIVE if f.flags[pfn] & PG_anon_exclusive else 0
    f.flags[pfn] &= flags_without(PG_anon_exclusive)
    k.swap.swap_map[offset] += 1  # swap_duplicate
    table.pfn[i] = swp_entry_to_pte(offset)
    table.bits[i] = (bits & PTE_SOFT_DIRTY) | exclusive
    page_remove_rmap(k, m.mm, pfn, compound=False)
    put_page(k, pfn)
    m.mm.anon_rss -= 1
    m.mm.swapents += 1
    if k.tracing:
        detail = f"pid {m.mm.pid}: swap PTE, slot {offset}"
        k.event("try_to_unmap_one", addr=m.addr, pfn=pfn, detail=detail)
    return True
