"""mm/memory.c: the fault handlers, fork's page-table copy and the zap of a range (4.5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from cowlab.mm import huge_memory, migrate
from cowlab.mm.constants import (
    HPAGE_PMD_NR,
    HPAGE_PMD_SIZE,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SHIFT,
    VM_FAULT_FALLBACK,
    VM_FAULT_WRITE,
    VM_WRITE,
    PG_anon_exclusive,
    PG_head,
    PG_ksm,
    PG_tail,
)
from cowlab.mm.decision import SwapinDecision, WpDecision
from cowlab.mm.mm import (
    PageSwapCache,
    compound_head,
    folio_nr_pages,
    heads_of,
    page_maybe_dma_pinned,
    put_page,
    put_pages,
)
from cowlab.mm.mm_types import MmStruct, VmArea, is_cow_mapping, pmd_index, pte_index
from cowlab.mm.page_alloc import ZERO_PFN, flags_without
from cowlab.mm.pgtable import (
    PTE_DIRTY,
    PTE_NONE,
    PTE_PROTNONE,
    PTE_SOFT_DIRTY,
    PTE_SPECIAL,
    PTE_SWP_EXCLUSIVE,
    PTE_WRITE,
    PTE_YOUNG,
    HugePmd,
    PteTable,
    is_swap_pte,
    pte_to_swp_offset,
    pte_without,
)
from cowlab.mm.rmap import (
    anon_vma_prepare,
    folio_add_new_anon_rmap_ptes,
    page_add_anon_rmap,
    page_add_new_anon_rmap,
    page_move_anon_rmap,
    page_remove_rmap,
    pages_add_new_anon_rmap,
    rmap_add_ptes,
    rmap_remove_ptes,
)
from cowlab.mm.swap_state import lookup_swap_cache, read_swap_cache_async, swap_readpage
from cowlab.mm.swapfile import (
    free_swap_and_cache,
    should_try_to_free_swap,
    swap_duplicate,
    swap_free,
    try_to_free_swap,
)
from cowlab.mm.trace import CowCopies, Packed

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


ZERO_PAGE_COPY = WpDecision(False, False, False, (), "the zero page is never reused")
NOT_ANON_COPY = WpDecision(
    False, False, False, (("PageAnon", 0),), "only an anonymous page is reused"
)


def new_pte_bits(vma: VmArea) -> int:
    """mk_pte + pte_mkdirty + maybe_mkwrite: writable only where the VMA allows writes."""
    bits = PTE_DIRTY | PTE_SOFT_DIRTY | PTE_YOUNG
    return bits | PTE_WRITE if vma.vm_flags & VM_WRITE else bits


# --- faults -------------------------------------------------------------------------------


def handle_mm_fault(k: Kernel, vma: VmArea, addr: int, write: bool, unshare: bool = False) -> int:
    """__handle_mm_fault(): a huge PMD when THP allows it, else the PTE level.

    ``unshare`` is FAULT_FLAG_UNSHARE (5.19): GUP's R/O pin wants an exclusive page, not a
    writable PTE.
    """
    k.vmstat["pgfault"] += 1
    if k.tracing:
        trace_fault(k, vma, addr, "unshare" if unshare else "write" if write else "read")
    mm = vma.mm
    idx = addr >> PMD_SHIFT  # pmd_index(), written out: a call was 1-2 % of a first touch
    entry = mm.pmds.get(idx)
    if isinstance(entry, PteTable):  # the common case: a page table is there
        return handle_pte_fault(k, vma, addr, entry, write, unshare)
    if entry is None and huge_memory.transparent_hugepage_enabled(k, vma):
        ret = huge_memory.do_huge_pmd_anonymous_page(k, vma, addr, write)
        if not ret & VM_FAULT_FALLBACK:
            return ret
    elif isinstance(entry, HugePmd):
        if entry.protnone:
            return migrate.do_huge_pmd_numa_page(k, vma, addr, entry)
        if (write or unshare) and not entry.write:
            ret = huge_memory.do_huge_pmd_wp_page(k, vma, addr, entry, unshare)
            if not ret & VM_FAULT_FALLBACK:
                return ret
        else:
            huge_memory.huge_pmd_set_accessed(entry, write)
            return 0
    table = mm.pmds.get(idx)
    if table is None:
        table = mm.pmds[idx] = PteTable()
    elif isinstance(table, HugePmd):
        return 0
    return handle_pte_fault(k, vma, addr, table, write, unshare)


def handle_pte_fault(
    k: Kernel, vma: VmArea, addr: int, table: PteTable, write: bool, unshare: bool = False
) -> int:
    """handle_pte_fault(): none -> do_anonymous_page, protnone -> NUMA, RO write -> do_wp_page."""
    i = (addr >> PAGE_SHIFT) & (HPAGE_PMD_NR - 1)  # pte_index(), written out (as pmd_index)
    value = table.pfn_at[i]
    if value == PTE_NONE:
        return do_anonymous_page(k, vma, addr, table, i, write)
    if is_swap_pte(value):
        return do_swap_page(k, vma, addr, table, write)
    bits = table.bits_at[i]
    if bits & PTE_PROTNONE:
        return migrate.do_numa_page(k, vma, addr, table)
    if (write or unshare) and not bits & PTE_WRITE:
        return do_wp_page(k, vma, addr, table, i, unshare)
    if write:
        bits |= PTE_DIRTY | PTE_SOFT_DIRTY
    table.bits_at[i] = bits | PTE_YOUNG
    return 0


def do_anonymous_page(
    k: Kernel, vma: VmArea, addr: int, table: PteTable, i: int, write: bool
) -> int:
    """do_anonymous_page(): a read maps the shared zero page; a write a fresh zeroed page (at
    PTE i of the table: vmf->pte)."""
    if not write:
        table.pfn[i] = ZERO_PFN
        table.bits[i] = PTE_SPECIAL | PTE_YOUNG
        if k.tracing:
            trace_anonymous(k, addr, None)
        return 0
    anon_vma_prepare(k, vma)
    if huge_memory.mthp_sizes_on(k) and huge_memory.do_anonymous_mthp(k, vma, addr, table):
        return 0
    pfn = k.frames.alloc_page()
    table.pfn_at[i] = pfn
    table.bits_at[i] = new_pte_bits(vma)
    page_add_new_anon_rmap(k, pfn, vma, addr, compound=False)
    vma.mm.anon_rss += 1
    if k.tracing:
        trace_anonymous(k, addr, pfn)
    return 0


def do_swap_page(k: Kernel, vma: VmArea, addr: int, table: PteTable, write: bool) -> int:
    """do_swap_page(): bring the slot's page in (from the swap cache; 4.15+ on a synchronous
    device a slot only this PTE holds is read into a new folio outside the swap cache; else
    read into the swap cache) and map it, or from 6.11 its whole large folio; the generation
    decides whether the mapping is writable and exclusive. A write the mapping does not satisfy
    goes on to do_wp_page."""
    from cowlab.mm import ksm  # ksm.py imports this module

    i = pte_index(addr)
    swp_bits = table.bits.item(i)
    offset = pte_to_swp_offset(table.pfn.item(i))
    page = lookup_swap_cache(k, offset)
    source = "the swap cache"
    if page is None and _bypasses_swap_cache(k, offset):
        page = swapin_bypass(k, vma, addr, table, offset)
        source = "the swap device, not through the swap cache"
    elif page is None:
        page, source = read_swap_cache_async(k, offset), "the swap device"
    swapcache = page
    if PageSwapCache(k.frames, page):  # not the bypass's folio
        page = ksm.ksm_might_need_to_copy(k, vma, addr, page)
    first, nr = _pages_to_map(k, vma, addr, table, page)
    slots = range(offset - (page - first), offset - (page - first) + nr)
    marker = bool(swp_bits & PTE_SWP_EXCLUSIVE)
    frees_first = k.policy.swapin_frees_swap_first
    if frees_first:
        for slot in slots:
            swap_free(k, slot)
        if should_try_to_free_swap(k, page, write):
            try_to_free_swap(k, page)
    d = k.policy.swapin_decision(k, vma, page, write, marker, bool(swp_bits & PTE_SOFT_DIRTY))
    if k.tracing:
        trace_swapin(k, addr, page, d, f"from {source}, slot {offset}", nr)
    bits = PTE_YOUNG | (swp_bits & PTE_SOFT_DIRTY)
    if d.writable:
        bits |= PTE_WRITE | (PTE_DIRTY | PTE_SOFT_DIRTY if write else 0)
    start = addr - ((page - first) << PAGE_SHIFT)
    _map_swapped_in(k, vma, start, table, first, nr, bits, d, page != swapcache)
    if page != swapcache:  # the copy's reference is the PTE's; the fault's on the old goes
        put_page(k, swapcache)
    elif k.frames.flags.item(page) & PG_ksm:  # ksm_might_need_to_copy() kept the KSM page
        ksm.swapped_in(k, vma, addr, page)
    if not frees_first:
        for slot in slots:
            swap_free(k, slot)
    if not write:
        return 0
    if not d.writable:
        return do_wp_page(k, vma, addr, table, i)
    k.vmstat["swapin_reuse"] += 1  # the model's: the write needs no do_wp_page
    return VM_FAULT_WRITE


def trace_swapin(k: Kernel, addr: int, page: int, d: SwapinDecision, where: str, nr: int) -> None:
    """do_swap_page()'s decision: exclusive or shared, and how it mapped what."""
    verdict = "exclusive" if d.exclusive else "shared"
    mapped = "" if nr == 1 else f" with the rest of its {nr}-page folio"
    detail = f"{where}, mapped {'writable' if d.writable else 'read-only'}{mapped}"
    k.event("do_swap_page", verdict, addr=addr, pfn=page, read=d.read, rule=d.rule, detail=detail)


def _bypasses_swap_cache(k: Kernel, offset: int) -> bool:
    """do_swap_page() (4.15, 0bcac06f27d7): a SWP_SYNCHRONOUS_IO area (zram) and a slot whose
    only reference is this swap PTE (__swap_count == 1)."""
    if not (k.policy.swapin_bypass and k.swap.synchronous):
        return False
    count = int(k.swap.swap_map[offset])
    read = (("SWP_SYNCHRONOUS_IO", 1), ("__swap_count", count))
    rule = "SWP_SYNCHRONOUS_IO && __swap_count == 1: read outside the swap cache"
    k.event("do_swap_page", "bypass" if count == 1 else "swap cache", read=read, rule=rule)
    return count == 1


def swapin_bypass(k: Kernel, vma: VmArea, addr: int, table: PteTable, offset: int) -> int:
    """The bypass path: a new folio, not in the swap cache, read synchronously (swap_readpage);
    small until 6.12, then alloc_swap_folio()'s order. Returns the page for addr."""
    order = alloc_swap_folio_order(k, vma, addr, table, offset)
    nr = 1 << order
    f = k.frames
    head = f.alloc_folio(order) if order else f.alloc_page()
    idx = (addr >> PAGE_SHIFT) & (nr - 1)
    swap_readpage(k, head, offset - idx, nr)
    return head + idx


def alloc_swap_folio_order(k: Kernel, vma: VmArea, addr: int, table: PteTable, offset: int) -> int:
    """alloc_swap_folio() (6.12, 242d12c98174): the highest anonymous mTHP order below PMD size
    enabled for the VMA whose aligned range lies in it, with the swap offset aligned as the
    address is (thp_swap_suitable_orders drops only the orders above the first that is), the
    range's PTEs the consecutive swap PTEs of the folio (identical bits) and none of its slots
    in the swap cache (can_swapin_thp); else 0. zswap and the zero bitmap are not modelled."""
    if not k.policy.swapin_large_folio:
        return 0
    orders = [
        order
        for order in huge_memory.MTHP_ORDERS
        if huge_memory.thp_vma_allowable_order(k, vma, order)
        and _in_vma_and_table(vma, addr, addr & ~((PAGE_SIZE << order) - 1), 1 << order)
    ]
    while orders and (addr >> PAGE_SHIFT) % (1 << orders[0]) != offset % (1 << orders[0]):
        orders.pop(0)
    for order in orders:
        nr = 1 << order
        start = pte_index(addr) & ~(nr - 1)
        first = offset - (pte_index(addr) - start)
        if (
            _swap_pte_batch(table, start, nr, first)
            and (k.swap.cache[first : first + nr] < 0).all()
        ):
            break
    else:
        order = 0
    rule = "the highest enabled mTHP order with aligned slots and consecutive swap PTEs"
    k.event("alloc_swap_folio", f"order {order}", addr=addr, read=(("order", order),), rule=rule)
    return order


def _in_vma_and_table(vma: VmArea, addr: int, start: int, nr: int) -> bool:
    """The nr pages mapped from start lie in the VMA and in addr's page table."""
    base = addr & ~(HPAGE_PMD_SIZE - 1)
    end = start + (nr << PAGE_SHIFT)
    return max(base, vma.vm_start) <= start and end <= min(base + HPAGE_PMD_SIZE, vma.vm_end)


def _swap_pte_batch(table: PteTable, start: int, nr: int, first: int) -> bool:
    """swap_pte_batch() == nr: the PTEs start.. start+nr-1 are swap PTEs of slots first + i,
    all with the same bits."""
    pfns = table.pfn[start : start + nr]
    bits = table.bits[start : start + nr]
    want = -2 - (first + np.arange(nr))
    return bool((pfns == want).all() and (bits == bits[0]).all())


def _pages_to_map(k: Kernel, vma: VmArea, addr: int, table: PteTable, page: int) -> tuple[int, int]:
    """Which pages the fault maps: (first page, how many). A new large folio (the bypass, 6.12)
    whole; from 6.11 a large folio found in the swap cache whole when it lies in the VMA and
    this page table and its PTEs are its consecutive swap PTEs (identical bits); else the page."""
    f = k.frames
    if not f.flags[page] & (PG_head | PG_tail):
        return page, 1
    head = compound_head(f, page)
    nr = folio_nr_pages(f, head)
    if not PageSwapCache(f, head):
        return head, nr
    if not k.policy.swapin_maps_whole_folio:
        return page, 1
    start_addr = addr - ((page - head) << PAGE_SHIFT)
    whole = _in_vma_and_table(vma, addr, start_addr, nr) and _swap_pte_batch(
        table, pte_index(addr) - (page - head), nr, int(f.private[head])
    )
    rule = "the folio lies in the VMA and one page table, its PTEs its consecutive swap PTEs"
    read = (("folio_nr_pages", nr),)
    k.event("do_swap_page", "whole folio" if whole else "one page", pfn=head, read=read, rule=rule)
    return (head, nr) if whole else (page, 1)


def _map_swapped_in(
    k: Kernel,
    vma: VmArea,
    start: int,
    table: PteTable,
    first: int,
    nr: int,
    bits: int,
    d: SwapinDecision,
    copied: bool = False,
) -> None:
    """set_ptes() and the rmap of the nr pages from first, mapped from start: a new folio gets
    its first anonymous mapping (``copied``, ksm_might_need_to_copy's copy: a new exclusive
    one, page_add_new_anon_rmap, 4.5.0 to 6.18.2 do_swap_page); the fault's reference becomes
    the first PTE's, the folio gets one more per other PTE."""
    f = k.frames
    i = pte_index(start)
    vma.mm.anon_rss += nr
    vma.mm.swapents -= nr
    if nr == 1:  # the hot case: one PTE, the fault's reference becomes its own
        table.pfn[i] = first
        table.bits[i] = bits
        if copied:
            page_add_new_anon_rmap(k, first, vma, start, compound=False)
        else:
            page_add_anon_rmap(k, first, vma, start, compound=False, exclusive=d.exclusive)
        return
    pages = first + np.arange(nr, dtype=np.int64)
    table.pfn[i : i + nr] = pages
    table.bits[i : i + nr] = bits
    if not f.mapping[first]:
        folio_add_new_anon_rmap_ptes(k, first, nr, vma, start)
    else:
        rmap_add_ptes(k, vma.mm, pages)
        if d.exclusive and k.policy.anon_exclusive:
            f.flags[first : first + nr] |= PG_anon_exclusive
    f._count[first] += nr - 1


def do_wp_page(
    k: Kernel, vma: VmArea, addr: int, table: PteTable, i: int, unshare: bool = False
) -> int:
    """do_wp_page(): a write (or unshare) to a read-only present PTE, PTE i of the table
    (vmf->pte): reuse the page or copy it."""
    if table.bits_at[i] & PTE_SPECIAL:
        return wp_copy_traced(k, vma, addr, table, i, None, ZERO_PAGE_COPY, unshare)
    old = table.pfn_at[i]
    f = k.frames
    head = compound_head(f, old)  # page_folio() once: PageAnon and PageKsm read the head
    if not f.mapping_at[head]:  # !PageAnon
        return wp_copy_traced(k, vma, addr, table, i, old, NOT_ANON_COPY, unshare)
    folio_flags = f.flags_at[head]
    ksm = bool(folio_flags & PG_ksm)  # PageKsm
    if ksm:
        d = k.policy.wp_reuse_ksm(k, vma, old)
    elif folio_flags & PG_head:  # folio_test_large
        d = k.policy.wp_reuse(k, vma, old)
    else:  # the rule for a small page, without the large-folio rules' own tests of it
        d = k.policy.wp_reuse_small(k, vma, old)
    if ksm and d.reuse:  # 5.1-5.8: the page is this VMA's again, no longer KSM
        k.ksm.drop(-int(f.mapping[old]))
        f.flags[old] &= flags_without(PG_ksm)
        f.index[old] = vma.linear_page_index(addr)
    if not d.reuse:
        return wp_copy_traced(k, vma, addr, table, i, old, d, unshare)
    wp_reuse_anon(k, vma, addr, old, d)
    if unshare:  # the page is now exclusive; the PTE stays read-only
        return 0
    return wp_page_reuse(k, vma, table, i)


def wp_reuse_anon(k: Kernel, vma: VmArea, addr: int, old: int, d: WpDecision) -> None:
    """do_wp_page()'s reuse of an anonymous page before wp_page_reuse() (5.19, 6c287605fd56):
    the page moved to this VMA's anon_vma and made exclusive where the decision says (an
    unshare stops here)."""
    if k.tracing:
        k.event("do_wp_page", "reuse", addr=addr, pfn=old, read=d.read, rule=d.rule)
    if d.move_anon_vma:
        page_move_anon_rmap(k, compound_head(k.frames, old), vma, addr)
    if d.set_exclusive:
        k.frames.flags[old] |= PG_anon_exclusive


def wp_copy_traced(
    k: Kernel,
    vma: VmArea,
    addr: int,
    table: PteTable,
    i: int,
    old: int | None,
    d: WpDecision,
    unshare: bool,
) -> int:
    if not k.tracing:
        return wp_page_copy(k, vma, addr, table, i, old, d, unshare)
    k.event("do_wp_page", "copy", addr=addr, pfn=old, read=d.read, rule=d.rule)
    ret = wp_page_copy(k, vma, addr, table, i, old, d, unshare)
    trace_copied(k, addr, old, table.pfn_at[i])
    return ret


def trace_fault(k: Kernel, vma: VmArea, addr: int, kind: str) -> None:
    k.event("handle_mm_fault", addr=addr, detail=f"{kind} fault in pid {vma.mm.pid}")


def trace_anonymous(k: Kernel, addr: int, pfn: int | None) -> None:
    """do_anonymous_page()'s event: the zero page (pfn None) or a new page mapped."""
    if pfn is None:
        k.event("do_anonymous_page", addr=addr, detail="read fault maps the zero page")
    else:
        k.event("do_anonymous_page", addr=addr, pfn=pfn, detail="write fault maps a new page")


def trace_copied(k: Kernel, addr: int, old: int | None, new: int) -> None:
    k.event("wp_page_copy", addr=addr, pfn=old, detail=f"copied to a new page, pfn {new:#x}")


def wp_page_reuse(k: Kernel, vma: VmArea, table: PteTable, i: int) -> int:
    """wp_page_reuse(): make the same physical page writable again at PTE i of the table (no
    counter changes)."""
    table.bits_at[i] |= new_pte_bits(vma)
    k.vmstat["pgreuse"] += 1
    return VM_FAULT_WRITE


def wp_page_copy(
    k: Kernel,
    vma: VmArea,
    addr: int,
    table: PteTable,
    i: int,
    old: int | None,
    why: object,
    unshare: bool = False,
) -> int:
    """wp_page_copy(): a new page (zeroed for the zero page, else a copy) replaces old at PTE
    i of the table (the index do_wp_page was given, not worked out again).
    ``why`` is the decision, for the COW log.

    A write maps the copy dirty and soft-dirty, writable where the VMA allows. An unshare
    (c89357e27f20, 5.19) maps it from vm_page_prot alone: read-only, clean, soft-dirty only if
    the old PTE was, and not young (pte_sw_mkyoung does nothing on x86; the next access sets
    it) — the same in every tree read from 5.19.0 to 6.18.2 (docs/kernels.md)."""
    f = k.frames
    anon_vma_prepare(k, vma)
    new = f.alloc_page()
    if old is not None:
        f.copy_page(new, old)
    table.pfn_at[i] = new
    table.bits_at[i] = table.bits_at[i] & PTE_SOFT_DIRTY if unshare else new_pte_bits(vma)
    page_add_new_anon_rmap(k, new, vma, addr, compound=False)
    if old is None:
        vma.mm.anon_rss += 1
    else:
        page_remove_rmap(k, vma.mm, old, compound=False)
        put_page(k, old)
    k.record_cow("wp_page_copy", vma, addr, old, new, why)
    return VM_FAULT_WRITE


# --- fork: copy_page_range ------------------------------------------------------------------


def copy_page_range(k: Kernel, dst: VmArea, src: VmArea) -> None:
    """copy_page_range(): give the child's VMA the parent's mappings, write-protecting COW ones."""
    start, end = src.vm_start, src.vm_end
    for idx in range(pmd_index(start), pmd_index(end - 1) + 1):
        entry = src.mm.pmds.get(idx)
        if entry is None:
            continue
        if isinstance(entry, HugePmd):
            if huge_memory.copy_huge_pmd(k, dst, src, idx, entry):
                continue
            entry = src.mm.pmds[idx]  # split because pinned: copy it PTE by PTE
            assert isinstance(entry, PteTable)
        base = idx << PMD_SHIFT
        lo = max(start, base)
        hi = min(end, base + HPAGE_PMD_SIZE)
        copy_pte_range(k, dst, src, idx, entry, slice(pte_index(lo), pte_index(hi - 1) + 1))


def copy_pte_range(
    k: Kernel, dst: VmArea, src: VmArea, idx: int, table: PteTable, sl: slice
) -> None:
    """copy_pte_range(), copy_one_pte() for every PTE at once: wrprotect both sides (COW
    mappings), child PTEs old, page_dup_rmap (+1 _mapcount) and get_page (+1 _count on the head).
    Pages the generation will not share (pinned, 5.9+) are copied for the child first."""
    pfns = table.pfn[sl]
    present = pfns >= 0
    swapped = pfns <= -2
    if not (present.any() or swapped.any()):
        return
    child = dst.mm.pmds.get(idx)
    if not isinstance(child, PteTable):
        child = dst.mm.pmds[idx] = PteTable()
    if swapped.any():
        copy_swap_ptes(k, dst, table, child, sl.start + np.flatnonzero(swapped))
    if not present.any():
        return
    normal_mask = present & ((table.bits[sl] & PTE_SPECIAL) == 0)
    must_copy = np.zeros(pfns.size, dtype=bool)
    must_copy[normal_mask] = k.policy.fork_must_copy(k, src.mm, src, pfns[normal_mask])
    if must_copy.any():
        at = np.flatnonzero(must_copy)
        copy_present_pages(k, dst, child, idx, sl.start + at, pfns[at])
    present &= ~must_copy
    if is_cow_mapping(src.vm_flags):
        table.bits[sl] = np.where(present, table.bits[sl] & pte_without(PTE_WRITE), table.bits[sl])
    child.pfn[sl] = np.where(present, pfns, child.pfn[sl])
    child.bits[sl] = np.where(present, table.bits[sl] & pte_without(PTE_YOUNG), child.bits[sl])
    normal = pfns[present & ((table.bits[sl] & PTE_SPECIAL) == 0)]
    if normal.size == 0:
        return
    f = k.frames
    f.flags[normal] &= flags_without(PG_anon_exclusive)  # page_try_dup_anon_rmap
    rmap_add_ptes(k, dst.mm, normal)
    np.add.at(f._count, heads_of(k.frames, normal), 1)
    dst.mm.anon_rss += int(normal.size)
    if k.tracing:
        detail = f"{normal.size} PTEs shared with pid {dst.mm.pid}, read-only on both sides"
        k.event("copy_pte_range", addr=(idx << PMD_SHIFT) + (sl.start << 12), detail=detail)


def copy_swap_ptes(
    k: Kernel, dst: VmArea, table: PteTable, child: PteTable, idx: npt.NDArray[np.int64]
) -> None:
    """copy_one_pte()/copy_nonpresent_pte() for swap PTEs: swap_duplicate, the child gets the
    same entry; from 5.19 the exclusive marker is cleared on both sides (the page is shared)."""
    table.bits[idx] &= pte_without(PTE_SWP_EXCLUSIVE)
    swap_duplicate(k, -2 - table.pfn[idx])
    child.pfn[idx] = table.pfn[idx]
    child.bits[idx] = table.bits[idx]
    dst.mm.swapents += int(idx.size)


def copy_present_pages(
    k: Kernel,
    dst: VmArea,
    child: PteTable,
    idx: int,
    ptes: npt.NDArray[np.int64],
    olds: npt.NDArray[np.int64],
) -> None:
    """copy_present_page() (5.9) at each of these PTEs, in order: the child gets its own copy
    of a maybe-pinned page at fork; the parent keeps its PTE and page as they are."""
    f = k.frames
    news = f.alloc_pages(ptes.size)
    f.copy_pages(news, olds)
    child.pfn[ptes] = news
    child.bits[ptes] = new_pte_bits(dst)
    addrs = (idx << PMD_SHIFT) + (ptes << PAGE_SHIFT)
    pages_add_new_anon_rmap(k, news, dst, addrs)
    dst.mm.anon_rss += int(ptes.size)
    which = np.zeros(ptes.size, dtype=np.int64)
    copies = CowCopies(
        len(k.history),
        k.current_op(),
        "copy_present_page",
        dst.mm.pid,
        Packed(addrs),
        Packed(olds),
        Packed(news),
        ["maybe DMA-pinned at fork"],
        Packed(which),
    )
    k.cow_log.extend_copies(copies)
    if k.tracing:
        for addr, old, new in zip(addrs.tolist(), olds.tolist(), news.tolist(), strict=True):
            read = (("page_maybe_dma_pinned", int(page_maybe_dma_pinned(f, old))),)
            rule, detail = "copy a maybe-pinned page for the child", f"the child gets pfn {new:#x}"
            k.event(
                "copy_present_page",
                "copy",
                addr=addr,
                pfn=old,
                read=read,
                rule=rule,
                detail=detail,
            )


# --- zap ------------------------------------------------------------------------------------


ZAP_TABLES = 32  # page tables zapped together: 64 MiB, a few MiB of temporaries


def zap_page_range(k: Kernel, vma: VmArea, start: int, end: int) -> None:
    """zap_page_range()/unmap_vmas(): unmap [start, end) of one VMA, splitting partial PMDs.
    With the range path, page tables without swap entries are zapped together."""
    mm = vma.mm
    start, end = max(start, vma.vm_start), min(end, vma.vm_end)
    if start >= end:
        return
    batch: list[tuple[int, PteTable, slice]] = []
    for idx in range(pmd_index(start), pmd_index(end - 1) + 1):
        entry = mm.pmds.get(idx)
        if entry is None:
            continue
        base = idx << PMD_SHIFT
        lo, hi = max(start, base), min(end, base + HPAGE_PMD_SIZE)
        if isinstance(entry, HugePmd):
            if batch:  # the tables before it first: frees and events in order
                zap_tables(k, mm, batch)
                batch = []
            if hi - lo == HPAGE_PMD_SIZE:
                huge_memory.zap_huge_pmd(k, mm, idx, entry)
                continue
            huge_memory.split_huge_pmd(k, vma, base)
            entry = mm.pmds[idx]
        assert isinstance(entry, PteTable)
        sl = slice(pte_index(lo), pte_index(hi - 1) + 1)
        if k.range_ops and not (entry.pfn[sl] <= -2).any():
            batch.append((idx, entry, sl))
            if len(batch) == ZAP_TABLES:
                zap_tables(k, mm, batch)
                batch = []
            continue
        zap_tables(k, mm, batch)  # a swap entry may free a page: keep the frees in order
        batch = []
        zap_tables(k, mm, [(idx, entry, sl)])
    zap_tables(k, mm, batch)


def zap_tables(k: Kernel, mm: MmStruct, tables: list[tuple[int, PteTable, slice]]) -> None:
    """zap_pte_range() of each slice in turn, the tables freed when empty; several tables'
    pages are released together when no folio has pages in two of them."""
    parts = [zap_pte_range(k, mm, table, sl) for _, table, sl in tables]
    for idx, table, _ in tables:
        if table.empty():
            del mm.pmds[idx]
    sizes = [part.size for part in parts]
    if not sum(sizes):
        return
    f = k.frames
    normal = np.concatenate(parts)
    table_no = np.repeat(np.arange(len(parts), dtype=np.int64), sizes)
    keys, counts = np.unique((table_no << 40) | heads_of(f, normal), return_counts=True)
    heads = keys & ((1 << 40) - 1)
    ordered = np.sort(heads)
    if not (ordered[1:] == ordered[:-1]).any():
        rmap_remove_ptes(k, mm, normal)
        put_pages(k, heads, counts)
        return
    for part in parts:  # a folio (KSM, or moved by mremap) in two tables: one table at a time
        if part.size:
            rmap_remove_ptes(k, mm, part)
            put_pages(k, *np.unique(heads_of(f, part), return_counts=True))


def zap_pte_range(k: Kernel, mm: MmStruct, table: PteTable, sl: slice) -> npt.NDArray[np.int64]:
    """zap_pte_range(): clear the slice's PTEs, free its swap entries; returns the normal pages
    it mapped, for page_remove_rmap + put_page (zap_tables)."""
    pfns = table.pfn[sl]
    normal = pfns[(pfns >= 0) & ((table.bits[sl] & PTE_SPECIAL) == 0)]
    swapped = pfns[pfns <= -2]
    table.pfn[sl] = PTE_NONE
    table.bits[sl] = 0
    for offset in (-2 - swapped).tolist():
        free_swap_and_cache(k, offset)
    mm.swapents -= int(swapped.size)
    mm.anon_rss -= int(normal.size)
    if k.tracing and normal.size:
        k.event("zap_pte_range", detail=f"pid {mm.pid}: {normal.size} PTEs unmapped")
    return normal
