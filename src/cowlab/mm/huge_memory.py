"""mm/huge_memory.c: THP faults, fork, zap, PMD split, page split and the THP mapcounts (4.5)."""

from __future__ import annotations

from dataclasses import replace
from itertools import groupby
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cowlab.errors import KernelBug
from cowlab.mm.constants import (
    HPAGE_PMD_MASK,
    HPAGE_PMD_NR,
    HPAGE_PMD_ORDER,
    HPAGE_PMD_SIZE,
    PMD_SHIFT,
    VM_FAULT_FALLBACK,
    VM_FAULT_WRITE,
    VM_HUGEPAGE,
    VM_NOHUGEPAGE,
    VM_WRITE,
    PG_anon_exclusive,
    PG_dirty,
    PG_double_map,
    PG_head,
    PG_mm_ids_shared,
    PG_swapcache,
    PG_tail,
    PG_writeback,
)
from cowlab.mm.decision import Reads
from cowlab.mm.mm import (
    PageDoubleMap,
    PageSwapCache,
    PageTransCompound,
    compound_head,
    compound_mapcount,
    folio_nr_pages,
    get_page,
    heads_of,
    page_count,
    page_maybe_dma_pinned,
    put_page,
    set_page_dirty,
)
from cowlab.mm.mm_types import MmStruct, VmArea, pmd_index, pte_index
from cowlab.mm.page_alloc import HUGE_ZERO_PFN, ZERO_PFN, PageFrames, flags_without
from cowlab.mm.pgtable import (
    PTE_DIRTY,
    PTE_MIGRATION,
    PTE_NONE,
    PTE_SOFT_DIRTY,
    PTE_SPECIAL,
    PTE_WRITE,
    PTE_YOUNG,
    HugePmd,
    PteTable,
    pte_without,
)
from cowlab.mm.rmap import (
    Mapping,
    anon_vma_prepare,
    folio_add_new_anon_rmap_ptes,
    page_add_new_anon_rmap,
    page_anon_vma,
    page_dup_rmap,
    page_move_anon_rmap,
    page_remove_folio_pte,
    page_remove_rmap,
    rmap_add_ptes,
    rmap_remove_pmd,
    rmap_remove_ptes,
    rmap_walk_anon,
)

if TYPE_CHECKING:
    from cowlab.kernel import Kernel

EBUSY = -16
SUBPAGES = np.arange(HPAGE_PMD_NR, dtype=np.int64)


# --- mapcounts ----------------------------------------------------------------------------


def total_mapcount(f: PageFrames, head: int) -> int:
    """total_mapcount(): every PMD and PTE mapping of the THP, DoubleMap offsets removed."""
    if not PageTransCompound(f, head):
        return int(f._mapcount[head]) + 1
    nr = folio_nr_pages(f, head)
    own = int(f._mapcount[head : head + nr].sum()) + nr
    if PageDoubleMap(f, head):
        own -= nr
    return own + compound_mapcount(f, head)


def folio_likely_mapped_shared(f: PageFrames, pfn: int) -> bool:
    """folio_likely_mapped_shared() (6.10, ebb34f78d72c; 6.12.0 include/linux/mm.h): a small
    page is shared when mapped more than once; a large folio mapped at most once is not; one
    with a PMD mapping, or more mappings than pages, is; else its first page guesses (mapped
    by more than one PTE)."""
    head = compound_head(f, pfn)
    mapcount = total_mapcount(f, head)
    if not PageTransCompound(f, head):
        return mapcount > 1
    if mapcount <= 1:
        return False
    if compound_mapcount(f, head) or mapcount > folio_nr_pages(f, head):
        return True
    return int(f._mapcount[head]) > 0


def page_trans_huge_mapcount(f: PageFrames, pfn: int) -> tuple[int, int, int | None]:
    """page_trans_huge_mapcount() of 6d0a07edd17c: the largest mapcount of any one subpage.

    Returns (mapcount, total_mapcount, the subpage with that mapcount or None for small pages).
    """
    if not PageTransCompound(f, pfn):
        mapcount = int(f._mapcount[pfn]) + 1
        return mapcount, mapcount, None
    head = compound_head(f, pfn)
    own = f._mapcount[head : head + folio_nr_pages(f, head)].astype(np.int64) + 1
    worst = int(own.argmax())
    ret, total = int(own[worst]), int(own.sum())
    if PageDoubleMap(f, head):
        ret -= 1
        total -= HPAGE_PMD_NR
    mapcount = compound_mapcount(f, head)
    return ret + mapcount, total + mapcount, worst


# --- faults -------------------------------------------------------------------------------


def transparent_hugepage_enabled(k: Kernel, vma: VmArea) -> bool:
    """transparent_hugepage_enabled(): sysfs enabled mode, MADV_HUGEPAGE, MADV_NOHUGEPAGE."""
    if not k.config.thp or vma.vm_flags & VM_NOHUGEPAGE:
        return False
    if k.thp_enabled == "always":
        return True
    return k.thp_enabled == "madvise" and bool(vma.vm_flags & VM_HUGEPAGE)


def alloc_hugepage(k: Kernel) -> int | None:
    """alloc_hugepage_vma(): a THP, or None when the switch says allocation fails."""
    if k.thp_alloc_fail:
        return None
    return k.frames.alloc_hugepage()


def do_huge_pmd_anonymous_page(k: Kernel, vma: VmArea, addr: int, write: bool) -> int:
    """do_huge_pmd_anonymous_page(): huge zero PMD on a read, a new THP on a write, or fallback."""
    haddr = addr & HPAGE_PMD_MASK
    if haddr < vma.vm_start or haddr + HPAGE_PMD_SIZE > vma.vm_end:
        return VM_FAULT_FALLBACK
    anon_vma_prepare(k, vma)
    mm = vma.mm
    if not write and k.thp_use_zero_page:
        mm.pmds[pmd_index(addr)] = HugePmd(HUGE_ZERO_PFN, False, False, huge_zero=True)
        k.frames.huge_zero_refcount += 1
        k.event("do_huge_pmd_anonymous_page", addr=haddr, detail="read fault: huge zero page")
        return 0
    head = alloc_hugepage(k)
    if head is None:
        k.vmstat["thp_fault_fallback"] += 1
        k.event("do_huge_pmd_anonymous_page", addr=haddr, detail="no THP: VM_FAULT_FALLBACK")
        return VM_FAULT_FALLBACK
    k.vmstat["thp_fault_alloc"] += 1
    mm.pmds[pmd_index(addr)] = HugePmd(head, bool(vma.vm_flags & VM_WRITE), True)
    page_add_new_anon_rmap(k, head, vma, haddr, compound=True)
    mm.anon_rss += HPAGE_PMD_NR
    k.event("do_huge_pmd_anonymous_page", addr=haddr, pfn=head, detail="a new THP, PMD-mapped")
    return 0


MTHP_ORDERS = range(HPAGE_PMD_ORDER - 1, 1, -1)  # 1 MiB down to 16 KiB
NO_MTHP = {4 << order: "never" for order in reversed(MTHP_ORDERS)}  # the knobs, all off


class MthpKnobs(dict[int, str]):
    """The anonymous mTHP sizes' knobs, /sys/kernel/mm/transparent_hugepage/hugepages-<size>kB
    /enabled by size in KiB (Kernel.mthp_enabled). ``some_on``: they are not NO_MTHP, worked
    out as they are written (by size, update, |= or setdefault; removing a knob is refused, as
    sysfs has it), so that an anonymous fault reads a flag rather than comparing the seven
    knobs (4 % of a first touch)."""

    def __init__(self, knobs: dict[int, str]) -> None:
        super().__init__(knobs)
        self.some_on = self != NO_MTHP

    def __setitem__(self, size: int, mode: str) -> None:
        super().__setitem__(size, mode)
        self.some_on = self != NO_MTHP

    def update(self, *args: Any, **kwargs: str) -> None:
        super().update(*args, **kwargs)
        self.some_on = self != NO_MTHP

    def __ior__(self, other: Any) -> MthpKnobs:  # type: ignore[override,misc]
        self.update(other)
        return self

    def setdefault(self, size: int, mode: str = "never") -> str:
        if size not in self:
            self[size] = mode
        return self[size]

    def _removed(self, *args: Any) -> Any:
        """A sysfs knob cannot be removed: the sizes a kernel has are its knobs for good."""
        raise TypeError("an mTHP size's knob is never removed (write 'never' to it)")

    __delitem__ = pop = popitem = clear = _removed

    def __deepcopy__(self, memo: dict[int, object]) -> MthpKnobs:
        return MthpKnobs(self)  # the values are strings: nothing else to copy


def mthp_sizes_on(k: Kernel) -> bool:
    """A release with mTHP (6.8, 19eaf44954df) and a size's knob not "never": an anonymous
    fault has a size to probe. The knobs first: a policy attribute is read only where it can
    decide (check.search shares a run between kernels that define alike what it read)."""
    return k.mthp_enabled.some_on and k.policy.mthp


def thp_vma_allowable_order(k: Kernel, vma: VmArea, order: int) -> bool:
    """thp_vma_allowable_orders() for one anonymous mTHP size: its sysfs knob, or 'inherit'."""
    if not k.config.thp or vma.vm_flags & VM_NOHUGEPAGE:
        return False
    mode = k.mthp_enabled.get(4 << order, "never")
    if mode == "inherit":
        return transparent_hugepage_enabled(k, vma)
    return mode == "always" or (mode == "madvise" and bool(vma.vm_flags & VM_HUGEPAGE))


def do_anonymous_mthp(k: Kernel, vma: VmArea, addr: int, table: PteTable) -> bool:
    """alloc_anon_folio() (6.8): the largest enabled mTHP whose aligned range lies in the VMA
    and has no PTE yet; all its pages mapped at once. False: fall back to a small page.
    (The caller asks only when some size is on.)"""
    for order in MTHP_ORDERS:
        nr = 1 << order
        start = addr & ~((nr << 12) - 1)
        first = (start >> 12) & (HPAGE_PMD_NR - 1)
        if not thp_vma_allowable_order(k, vma, order) or start < vma.vm_start:
            continue
        if start + (nr << 12) > vma.vm_end or (table.pfn[first : first + nr] != PTE_NONE).any():
            continue
        if k.thp_alloc_fail:
            k.vmstat["mthp_fault_fallback"] += 1
            continue
        head = k.frames.alloc_folio(order)
        k.frames._count[head] += nr - 1  # one reference per PTE (folio_ref_add)
        table.pfn[first : first + nr] = head + SUBPAGES[:nr]
        bits = PTE_DIRTY | PTE_SOFT_DIRTY | PTE_YOUNG
        table.bits[first : first + nr] = bits | PTE_WRITE if vma.vm_flags & VM_WRITE else bits
        folio_add_new_anon_rmap_ptes(k, head, nr, vma, start)
        vma.mm.anon_rss += nr
        k.vmstat["mthp_fault_alloc"] += 1
        k.event("do_anonymous_page", addr=start, pfn=head, detail=f"a new {nr * 4} KiB mTHP")
        return True
    return False


def huge_pmd_set_accessed(entry: HugePmd, write: bool) -> None:
    """huge_pmd_set_accessed(): young, and dirty on a write to a writable PMD."""
    entry.young = True
    if write:
        entry.dirty = entry.soft_dirty = True


def do_huge_pmd_wp_page(
    k: Kernel, vma: VmArea, addr: int, entry: HugePmd, unshare: bool = False
) -> int:
    """do_huge_pmd_wp_page(): reuse the THP; else copy 2 MiB or 512 small pages (to 5.7), or
    split the PMD and let the PTE fault copy 4 KiB (5.8, 3917c80280c9). An unshare splits a THP
    it cannot reuse; the huge zero PMD (an unshare from 6.2) is handled as a write."""
    haddr = addr & HPAGE_PMD_MASK
    page: int | None = None if entry.huge_zero else entry.pfn
    if page is not None:
        d = k.policy.huge_pmd_wp_reuse(k, page)
        why = d.why
        verdict = "reuse" if d.reuse else "split" if k.policy.pmd_cow_splits else "copy"
        k.event("do_huge_pmd_wp_page", verdict, addr=haddr, pfn=page, read=d.read, rule=d.rule)
        if d.reuse:
            return huge_pmd_reuse(k, vma, haddr, entry, d.move_anon_vma, d.set_exclusive, unshare)
    else:
        why = "the huge zero page is never reused"
    zero_gets_thp = page is None and k.policy.huge_zero_wp_allocates
    if (not zero_gets_thp and k.policy.pmd_cow_splits) or (unshare and page is not None):
        split_huge_pmd(k, vma, haddr)
        return VM_FAULT_FALLBACK
    wanted = transparent_hugepage_enabled(k, vma) or (
        page is None and not k.policy.huge_zero_wp_checks_vma
    )
    new = alloc_hugepage(k) if wanted else None
    if new is None:
        k.vmstat["thp_fault_fallback"] += 1
        if page is None:
            split_huge_pmd(k, vma, haddr)
            detail = "no THP for the huge zero page: split"
            k.event("do_huge_pmd_wp_page", addr=haddr, detail=detail)
            return VM_FAULT_FALLBACK
        return do_huge_pmd_wp_page_fallback(k, vma, haddr, entry, why)
    k.vmstat["thp_fault_alloc"] += 1
    f = k.frames
    if page is not None:
        f.copy_pages(new + SUBPAGES, page + SUBPAGES)
    vma.mm.pmds[pmd_index(haddr)] = HugePmd(new, bool(vma.vm_flags & VM_WRITE), True)
    page_add_new_anon_rmap(k, new, vma, haddr, compound=True)
    if page is None:
        vma.mm.anon_rss += HPAGE_PMD_NR
        f.huge_zero_refcount -= 1
    else:
        page_remove_rmap(k, vma.mm, page, compound=True)
        put_page(k, page)
    k.record_cow("do_huge_pmd_wp_page", vma, haddr, page, new, why, nr=HPAGE_PMD_NR)
    k.event("do_huge_pmd_wp_page", addr=haddr, pfn=new, detail="copied to a new THP, PMD-mapped")
    return VM_FAULT_WRITE


def huge_pmd_reuse(
    k: Kernel,
    vma: VmArea,
    haddr: int,
    entry: HugePmd,
    move: bool,
    exclusive: bool,
    unshare: bool,
) -> int:
    """The reuse branch: from 5.19 it may move the anon_vma and mark the head exclusive."""
    if move:
        page_move_anon_rmap(k, entry.pfn, vma, haddr)
    if exclusive:
        k.frames.flags[entry.pfn] |= PG_anon_exclusive
    k.vmstat["pgreuse"] += 1
    if unshare:
        return 0
    entry.young = entry.dirty = entry.soft_dirty = True
    entry.write = bool(vma.vm_flags & VM_WRITE)
    return VM_FAULT_WRITE


def do_huge_pmd_wp_page_fallback(
    k: Kernel, vma: VmArea, haddr: int, entry: HugePmd, why: str
) -> int:
    """do_huge_pmd_wp_page_fallback(): no THP for the copy, so copy into 512 small pages."""
    f = k.frames
    page = entry.pfn
    table = PteTable()
    for i in range(HPAGE_PMD_NR):
        new = f.alloc_page()
        f.copy_page(new, page + i)
        table.pfn[i] = new
        page_add_new_anon_rmap(k, new, vma, haddr + (i << 12), compound=False)
    bits = PTE_DIRTY | PTE_SOFT_DIRTY | PTE_YOUNG
    table.bits[:] = bits | PTE_WRITE if vma.vm_flags & VM_WRITE else bits
    vma.mm.pmds[pmd_index(haddr)] = table
    page_remove_rmap(k, vma.mm, page, compound=True)
    put_page(k, page)
    k.record_cow(
        "do_huge_pmd_wp_page_fallback", vma, haddr, page, int(table.pfn[0]), why, nr=HPAGE_PMD_NR
    )
    detail = "no THP: 512 small pages copied and PTE-mapped"
    k.event("do_huge_pmd_wp_page_fallback", addr=haddr, pfn=int(table.pfn[0]), detail=detail)
    return VM_FAULT_WRITE


# --- fork, zap, mprotect, mremap ----------------------------------------------------------


def copy_huge_pmd(k: Kernel, dst: VmArea, src: VmArea, idx: int, entry: HugePmd) -> bool:
    """copy_huge_pmd(): share the THP with the child, both PMDs read-only. From 5.9 a maybe-
    pinned THP is not shared: the parent's PMD is split (False: copy it PTE by PTE)."""
    if entry.huge_zero:
        dst.mm.pmds[idx] = replace(entry)
        k.frames.huge_zero_refcount += 1
        return True
    if k.policy.fork_pmd_must_split(k, src.mm, src, entry.pfn):
        pinned = int(page_maybe_dma_pinned(k.frames, entry.pfn))
        has_pinned = int(src.mm.has_pinned)
        read: Reads = (("page_maybe_dma_pinned", pinned), ("MMF_HAS_PINNED", has_pinned))
        rule = "split the parent's PMD of a maybe-pinned THP"
        k.event("copy_huge_pmd", "split", pfn=entry.pfn, read=read, rule=rule)
        __split_huge_pmd_locked(k, src.mm, idx, entry, freeze=False)
        return False
    get_page(k.frames, entry.pfn)
    page_dup_rmap(k, dst.mm, entry.pfn, compound=True)
    if k.tracing:
        detail = f"shared with pid {dst.mm.pid}, both PMDs read-only"
        read = (("compound_mapcount", compound_mapcount(k.frames, entry.pfn)),)
        k.event("copy_huge_pmd", pfn=entry.pfn, read=read, detail=detail)
    entry.write = False
    dst.mm.pmds[idx] = replace(entry, write=False, young=False)
    dst.mm.anon_rss += HPAGE_PMD_NR
    return True


def zap_huge_pmd(k: Kernel, mm: MmStruct, idx: int, entry: HugePmd) -> None:
    """zap_huge_pmd(): remove a whole PMD mapping."""
    del mm.pmds[idx]
    if entry.huge_zero:
        k.frames.huge_zero_refcount -= 1
        return
    page_remove_rmap(k, mm, entry.pfn, compound=True)
    mm.anon_rss -= HPAGE_PMD_NR
    put_page(k, entry.pfn)


def change_huge_pmd(entry: HugePmd, write: bool, prot_numa: bool) -> None:
    """change_huge_pmd(): pmd_modify to the VMA's (never writable, private) protection.

    With prot_numa the entry becomes a NUMA hinting entry and keeps its write bit.
    """
    if prot_numa:
        if not entry.huge_zero:
            entry.protnone = True
        return
    entry.protnone = False
    entry.write = write


# --- split_huge_pmd -----------------------------------------------------------------------


def split_huge_pmd(k: Kernel, vma: VmArea, addr: int) -> None:
    """split_huge_pmd(): turn the huge PMD covering addr into a table of 512 PTEs."""
    idx = pmd_index(addr)
    entry = vma.mm.pmds.get(idx)
    if isinstance(entry, HugePmd):
        __split_huge_pmd_locked(k, vma.mm, idx, entry, freeze=False)


def __split_huge_pmd_locked(
    k: Kernel, mm: MmStruct, idx: int, entry: HugePmd, freeze: bool
) -> PteTable:
    """__split_huge_pmd_locked(): 512 PTEs inherit write and young; DoubleMap bookkeeping.

    4.5 drops soft-dirty and turns the PMD's dirty bit into PG_dirty, not PTE dirty bits
    (docs/verification-4.5.md §6); from 6.2 (e833bc503405) a dirty PMD's PTEs are dirty too. A
    frozen PTE (a migration entry) keeps the PMD's dirty bit for remap_pte_dirty (6.1 reads it).

    The compound page stays compound: each subpage gets its own _mapcount, the head gets +511
    references; when other PMD maps remain every _mapcount is offset by one (PG_double_map).
    """
    f = k.frames
    table = PteTable()
    mm.pmds[idx] = table
    if entry.huge_zero:
        table.pfn[:] = ZERO_PFN
        table.bits[:] = PTE_SPECIAL | PTE_YOUNG
        f.huge_zero_refcount -= 1
        detail = "huge zero PMD -> zero PTEs"
        k.event("__split_huge_pmd_locked", addr=idx << PMD_SHIFT, detail=detail)
        return table
    head = entry.pfn
    sl = slice(head, head + HPAGE_PMD_NR)
    f._count[head] += HPAGE_PMD_NR - 1
    dirty = entry.dirty and (freeze or k.policy.pmd_split_keeps_dirty)
    bits = (
        (PTE_WRITE if entry.write else 0)
        | (PTE_YOUNG if entry.young else 0)
        | (PTE_MIGRATION if freeze else 0)
        | (PTE_DIRTY | PTE_SOFT_DIRTY if dirty else 0)
    )
    if entry.dirty:
        f.flags[sl] |= PG_dirty
    table.pfn[:] = head + SUBPAGES
    table.bits[:] = bits
    if f.flags[head] & PG_anon_exclusive:  # 5.19: every subpage inherits the head's bit
        f.flags[sl] |= PG_anon_exclusive
    if k.policy.double_map:
        _split_double_map(f, head)
    else:  # 6.2+: add the 512 PTE mappings, then drop the PMD one
        rmap_add_ptes(k, mm, head + SUBPAGES)
        rmap_remove_pmd(k, mm, head)
    if freeze:
        rmap_remove_ptes(k, mm, head + SUBPAGES)
        put_page(k, head, HPAGE_PMD_NR)
    if k.tracing:
        read: Reads = (("compound_mapcount", compound_mapcount(f, head)),)
        read += (("PageDoubleMap", int(PageDoubleMap(f, head))),)
        k.event(
            "__split_huge_pmd_locked",
            addr=idx << PMD_SHIFT,
            pfn=head,
            read=read,
            detail="PMD -> 512 PTEs",
        )
    return table


def _split_double_map(f: PageFrames, head: int) -> None:
    """4.5's accounting: +1 per subpage, and the DoubleMap offset while other PMDs remain."""
    sl = slice(head, head + HPAGE_PMD_NR)
    f._mapcount[sl] += 1
    if compound_mapcount(f, head) > 1 and not PageDoubleMap(f, head):
        f.flags[head + 1] |= PG_double_map
        f._mapcount[sl] += 1
    f.compound_mapcount[head + 1] -= 1
    if f.compound_mapcount[head + 1] < 0 and PageDoubleMap(f, head):
        f.flags[head + 1] &= flags_without(PG_double_map)
        f._mapcount[sl] -= 1


def vma_adjust_trans_huge(k: Kernel, vma: VmArea, addr: int) -> None:
    """vma_adjust_trans_huge(): a VMA boundary at an unaligned addr splits the PMD across it."""
    if addr & ~HPAGE_PMD_MASK:
        split_huge_pmd(k, vma, addr)


# --- split_huge_page ----------------------------------------------------------------------


def split_huge_page(k: Kernel, head: int) -> int:
    """split_huge_page(): make 512 small pages of a THP; -EBUSY while anything else holds it
    (the swap cache's references of a THP in it excepted: each page keeps its slot), or while
    it is under writeback.

    The caller's reference is taken and dropped here. Mappings are found by the rmap walk from
    the page's anon_vma: one it misses stays frozen, which 4.5 turns into BUG() (DEBUG_VM).
    """
    f = k.frames
    if page_anon_vma(k, head) is None or f.flags[head] & PG_writeback:
        return EBUSY
    cached = folio_nr_pages(f, head) if PageSwapCache(f, head) else 0  # the swap cache's refs
    get_page(f, head)
    try:
        extra = page_count(f, head) - 1 - cached - total_mapcount(f, head)
        if extra:
            read = (("extra references", extra),)
            rule = "page_count - 1 == total_mapcount (no extra references)"
            k.event("split_huge_page", "-EBUSY", pfn=head, read=read, rule=rule)
            return EBUSY
        frozen = freeze_page(k, head)
        left = total_mapcount(f, head)
        if left == 0 and page_count(f, head) == 1 + cached:
            __split_huge_page(k, head, frozen)
            k.event("split_huge_page", "0", pfn=head, detail="split into 512 small pages")
            return 0
        if k.config.debug_vm and left:
            raise KernelBug(
                f"split_huge_page: head pfn {head:#x} still has {left} mappings after "
                "freeze_page(): the rmap walk from its anon_vma missed them"
            )
        unfreeze_page(k, frozen)
        read = (("total_mapcount after freeze_page", left),)
        rule = "freeze_page leaves no mapping"
        k.event("split_huge_page", "-EBUSY", pfn=head, read=read, rule=rule)
        return EBUSY
    finally:
        put_page(k, head)


Frozen = list[tuple[MmStruct, PteTable, int]]


def freeze_page(k: Kernel, head: int) -> Frozen:
    """freeze_page(): every mapping the rmap walk finds becomes a migration entry; the walk's
    PTEs in one page table in a row are frozen together (_freeze_ptes)."""
    frozen: Frozen = []
    for (_pid, _idx, pmd), group in groupby(rmap_walk_anon(k, head), key=_where):
        run = list(group)
        frozen += _freeze_pmd(k, run[0]) if pmd else _freeze_ptes(k, head, run)
    return frozen


def _where(m: Mapping) -> tuple[int, int, bool]:
    """A mapping's page table: its process, PMD index, and whether the PMD maps it."""
    return m.mm.pid, pmd_index(m.addr), m.pmd


def _freeze_pmd(k: Kernel, m: Mapping) -> Frozen:
    idx = pmd_index(m.addr)
    entry = m.mm.pmds[idx]
    assert isinstance(entry, HugePmd)
    split = __split_huge_pmd_locked(k, m.mm, idx, entry, freeze=True)
    return [(m.mm, split, i) for i in range(HPAGE_PMD_NR)]


def _freeze_ptes(k: Kernel, head: int, run: list[Mapping]) -> Frozen:
    """PTE mappings of the THP in one page table, as freeze_page() freezes each in turn: the
    THP marked dirty if a PTE is, each PTE a migration entry, each page's rmap removed in turn
    (page_remove_rmap: the folio's counts move page by page), and its reference dropped
    (put_page; split_huge_page's own reference keeps the THP, so the run's are dropped at once)."""
    mm = run[0].mm
    table = mm.pmds[pmd_index(run[0].addr)]
    assert isinstance(table, PteTable)
    idx = np.array([pte_index(m.addr) for m in run], dtype=np.int64)
    if (table.bits[idx] & PTE_DIRTY).any():
        set_page_dirty(k.frames, head)
    table.bits[idx] |= PTE_MIGRATION
    for m in run:
        page_remove_folio_pte(k, mm, m.pfn, head)
    put_page(k, head, len(run))
    return [(mm, table, i) for i in idx.tolist()]


def unfreeze_page(k: Kernel, frozen: Frozen, zero_unused: bool = False) -> None:
    """unfreeze_page() / remap_page(): migration entries become PTEs, old (young as before from
    6.1, 2e3468778dbe), dirty as the policy's remap_pte_dirty says (the entry keeps the frozen
    PTE's dirty bit); with ``zero_unused`` (a split done, 6.12+) a zero-filled page is mapped as
    the shared zero page instead and loses this mapping's reference. The entries of one page
    table in a row are remapped together, in the order frozen."""
    f = k.frames
    dropped = PTE_MIGRATION if k.policy.migration_keeps_young else PTE_MIGRATION | PTE_YOUNG
    remap = k.policy.remap_pte_dirty
    dirty_by = np.array([[remap(page, entry) for entry in (False, True)] for page in (False, True)])
    for mm, table, idx in _table_runs(frozen):
        pfns = table.pfn[idx]
        if zero_unused:
            unused = f.content[pfns] == 0
            for i in idx[unused].tolist():
                try_to_map_unused_to_zeropage(k, mm, table, i)
            idx, pfns = idx[~unused], pfns[~unused]
            if not idx.size:
                continue
        bits = table.bits[idx]
        page_dirty, entry_dirty = (f.flags[pfns] & PG_dirty) != 0, (bits & PTE_DIRTY) != 0
        dirty = dirty_by[page_dirty.astype(np.intp), entry_dirty.astype(np.intp)]
        kept = bits & pte_without(dropped | PTE_DIRTY)
        table.bits[idx] = kept | np.where(dirty, PTE_DIRTY, 0).astype(kept.dtype)
        rmap_add_ptes(k, mm, pfns)
        np.add.at(f._count, heads_of(f, pfns), 1)  # get_page() of each


def _table_runs(frozen: Frozen) -> list[tuple[MmStruct, PteTable, npt.NDArray[np.int64]]]:
    """The frozen entries as runs of one page table each: (mm, table, PTE indices)."""
    runs: list[tuple[MmStruct, PteTable, list[int]]] = []
    for mm, table, i in frozen:
        if runs and runs[-1][1] is table and runs[-1][0] is mm:
            runs[-1][2].append(i)
        else:
            runs.append((mm, table, [i]))
    return [(mm, table, np.array(idx, dtype=np.int64)) for mm, table, idx in runs]


def try_to_map_unused_to_zeropage(k: Kernel, mm: MmStruct, table: PteTable, i: int) -> None:
    """try_to_map_unused_to_zeropage() (6.12, b1f202060afe): a split THP's zero-filled subpage
    is mapped as the shared zero page (soft-dirty kept from the 6.18 tree, a 2025 fix of
    b1f202060afe); MM_ANONPAGES loses it."""
    kept = table.bits[i] & PTE_SOFT_DIRTY if k.policy.zeropage_remap_keeps_soft_dirty else 0
    table.pfn[i] = ZERO_PFN
    table.bits[i] = PTE_SPECIAL | PTE_YOUNG | kept
    mm.anon_rss -= 1


def __split_huge_page(k: Kernel, head: int, frozen: Frozen) -> None:
    """__split_huge_page(): tails become small pages with the head's mapping and index + i."""
    f = k.frames
    nr = folio_nr_pages(f, head)
    sl = slice(head, head + nr)
    k.deferred_split.discard(head)
    f.flags[head + 1] &= flags_without(PG_double_map)
    strip = flags_without(PG_head | PG_tail | PG_mm_ids_shared)
    f.flags[sl] = (f.flags[sl] & strip) | (f.flags[head] & PG_dirty)
    f.reset_folio_fields(head)
    if f.flags[head] & PG_swapcache:  # each page keeps its slot and its swap-cache reference
        f._count[head] -= nr - 1
        f._count[head + 1 : head + nr] += 1
    f.mapping[sl] = f.mapping[head]
    f.index[sl] = f.index[head] + SUBPAGES[:nr]
    f.order[sl] = 0
    unfreeze_page(k, frozen, zero_unused=k.policy.split_maps_unused_to_zeropage)
    for pfn in range(head + 1, head + nr):
        if f._count[pfn] == 0:
            f.free_page(pfn)


def deferred_split_scan(k: Kernel) -> int:
    """deferred_split_scan(): the shrinker tries to split every queued THP; failures stay queued."""
    split = 0
    for head in sorted(k.deferred_split):
        k.deferred_split.discard(head)
        if split_huge_page(k, head) == 0:
            split += 1
        elif k.frames.flags[head] & PG_head:
            k.deferred_split.add(head)
    return split


def split_huge_pages_all(k: Kernel) -> int:
    """The debugfs split_huge_pages file: try to split every anonymous THP in the machine."""
    f = k.frames
    heads = np.flatnonzero(f.flags[: f.nr] & PG_head)
    split = 0
    for head in heads.tolist():
        if head != HUGE_ZERO_PFN and f.mapping[head] and split_huge_page(k, head) == 0:
            split += 1
    return split
