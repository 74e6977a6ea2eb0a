"""mm/memory.c: the fault handlers, fork's page-table copy and the zap of a range (4.5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cowlab.errors import KernelBug
from cowlab.mm import huge_memory, migrate
from cowlab.mm.constants import (
    HPAGE_PMD_NR,
    HPAGE_PMD_SIZE,
    PMD_SHIFT,
    VM_FAULT_FALLBACK,
    VM_FAULT_WRITE,
    VM_WRITE,
    PG_head,
    PG_tail,
)
from cowlab.mm.mm import PageAnon, PageKsm, compound_head, put_page
from cowlab.mm.mm_types import MmStruct, VmArea, is_cow_mapping, pmd_index, pte_index
from cowlab.mm.page_alloc import ZERO_PFN
from cowlab.mm.pgtable import (
    PTE_DIRTY,
    PTE_PROTNONE,
    PTE_SOFT_DIRTY,
    PTE_SPECIAL,
    PTE_WRITE,
    PTE_YOUNG,
    HugePmd,
    PteTable,
    pte_without,
)
from cowlab.mm.rmap import (
    anon_vma_prepare,
    deferred_split_huge_page,
    page_add_new_anon_rmap,
    page_move_anon_rmap,
    page_remove_rmap,
)
from cowlab.mm.swapfile import reuse_swap_page

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


def new_pte_bits(vma: VmArea) -> int:
    """mk_pte + pte_mkdirty + maybe_mkwrite: writable only where the VMA allows writes."""
    bits = PTE_DIRTY | PTE_SOFT_DIRTY | PTE_YOUNG
    return bits | PTE_WRITE if vma.vm_flags & VM_WRITE else bits


# --- faults -------------------------------------------------------------------------------


def handle_mm_fault(k: Kernel, vma: VmArea, addr: int, write: bool) -> int:
    """__handle_mm_fault(): a huge PMD when THP allows it, else the PTE level."""
    k.vmstat["pgfault"] += 1
    if k.tracing:
        kind = "write" if write else "read"
        k.trace("handle_mm_fault", f"{kind} fault at {addr:#x} in pid {vma.mm.pid}")
    mm = vma.mm
    idx = pmd_index(addr)
    entry = mm.pmds.get(idx)
    if entry is None and huge_memory.transparent_hugepage_enabled(k, vma):
        ret = huge_memory.do_huge_pmd_anonymous_page(k, vma, addr, write)
        if not ret & VM_FAULT_FALLBACK:
            return ret
    elif isinstance(entry, HugePmd):
        if entry.protnone:
            return migrate.do_huge_pmd_numa_page(k, vma, addr, entry)
        if write and not entry.write:
            ret = huge_memory.do_huge_pmd_wp_page(k, vma, addr, entry)
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
    return handle_pte_fault(k, vma, addr, table, write)


def handle_pte_fault(k: Kernel, vma: VmArea, addr: int, table: PteTable, write: bool) -> int:
    """handle_pte_fault(): none -> do_anonymous_page, protnone -> NUMA, RO write -> do_wp_page."""
    i = pte_index(addr)
    if table.pfn[i] < 0:
        return do_anonymous_page(k, vma, addr, table, write)
    bits = int(table.bits[i])
    if bits & PTE_PROTNONE:
        return migrate.do_numa_page(k, vma, addr, table)
    if write:
        if not bits & PTE_WRITE:
            return do_wp_page(k, vma, addr, table)
        bits |= PTE_DIRTY | PTE_SOFT_DIRTY
    table.bits[i] = bits | PTE_YOUNG
    return 0


def do_anonymous_page(k: Kernel, vma: VmArea, addr: int, table: PteTable, write: bool) -> int:
    """do_anonymous_page(): a read maps the shared zero page; a write a fresh zeroed page."""
    i = pte_index(addr)
    if not write:
        table.pfn[i] = ZERO_PFN
        table.bits[i] = PTE_SPECIAL | PTE_YOUNG
        if k.tracing:
            k.trace("do_anonymous_page", f"{addr:#x}: read fault maps the zero page read-only")
        return 0
    anon_vma_prepare(k, vma)
    pfn = k.frames.alloc_page()
    table.pfn[i] = pfn
    table.bits[i] = new_pte_bits(vma)
    page_add_new_anon_rmap(k, pfn, vma, addr, compound=False)
    vma.mm.anon_rss += 1
    if k.tracing:
        k.trace("do_anonymous_page", f"{addr:#x}: write fault maps a new page, pfn {pfn:#x}")
    return 0


def do_wp_page(k: Kernel, vma: VmArea, addr: int, table: PteTable) -> int:
    """do_wp_page(): a write to a read-only present PTE either reuses the page or copies it."""
    i = pte_index(addr)
    if table.bits[i] & PTE_SPECIAL:
        return wp_copy_traced(k, vma, addr, table, None, "the zero page", "never reused")
    old = int(table.pfn[i])
    f = k.frames
    if not PageAnon(f, old) or PageKsm(f, old):
        return wp_copy_traced(k, vma, addr, table, old, f"pfn {old:#x}", "KSM: never reused")
    decision = reuse_swap_page(k, old)
    chain = f"pfn {old:#x} -> reuse_swap_page -> {decision.why} -> {int(decision.reuse)}"
    if not decision.reuse:
        return wp_copy_traced(k, vma, addr, table, old, chain, decision.why)
    moved = k.policy.move_anon_rmap_on_reuse(decision.total_mapcount)
    if moved:
        page_move_anon_rmap(k, compound_head(f, old), vma, addr)
    if k.tracing:
        where = f"page_move_anon_rmap to {vma.anon_vma}" if moved else "anon_vma not moved"
        k.trace("do_wp_page", f"{addr:#x}: {chain} -> reuse: wp_page_reuse ({where})")
    return wp_page_reuse(k, vma, addr, table)


def wp_copy_traced(
    k: Kernel, vma: VmArea, addr: int, table: PteTable, old: int | None, chain: str, why: str
) -> int:
    ret = wp_page_copy(k, vma, addr, table, old, why)
    if k.tracing:
        new = int(table.pfn[pte_index(addr)])
        k.trace("do_wp_page", f"{addr:#x}: {chain} -> copy: wp_page_copy allocates pfn {new:#x}")
    return ret


def wp_page_reuse(k: Kernel, vma: VmArea, addr: int, table: PteTable) -> int:
    """wp_page_reuse(): make the same physical page writable again (no counter changes)."""
    i = pte_index(addr)
    table.bits[i] |= new_pte_bits(vma)
    k.vmstat["pgreuse"] += 1
    return VM_FAULT_WRITE


def wp_page_copy(
    k: Kernel, vma: VmArea, addr: int, table: PteTable, old: int | None, why: str
) -> int:
    """wp_page_copy(): a new page (zeroed for the zero page, else a copy) replaces old here."""
    i = pte_index(addr)
    f = k.frames
    anon_vma_prepare(k, vma)
    new = f.alloc_page()
    if old is not None:
        f.copy_page(new, old)
    table.pfn[i] = new
    table.bits[i] = new_pte_bits(vma)
    page_add_new_anon_rmap(k, new, vma, addr, compound=False)
    if old is None:
        vma.mm.anon_rss += 1
    else:
        page_remove_rmap(k, old, compound=False)
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
            huge_memory.copy_huge_pmd(k, dst.mm, src.mm, idx, entry)
            continue
        base = idx << PMD_SHIFT
        lo = max(start, base)
        hi = min(end, base + HPAGE_PMD_SIZE)
        copy_pte_range(k, dst, src, idx, entry, slice(pte_index(lo), pte_index(hi - 1) + 1))


def copy_pte_range(
    k: Kernel, dst: VmArea, src: VmArea, idx: int, table: PteTable, sl: slice
) -> None:
    """copy_pte_range(), copy_one_pte() for every PTE at once: wrprotect both sides (COW
    mappings), child PTEs old, page_dup_rmap (+1 _mapcount) and get_page (+1 _count on the head)."""
    pfns = table.pfn[sl]
    present = pfns >= 0
    if not present.any():
        return
    if is_cow_mapping(src.vm_flags):
        table.bits[sl] = np.where(present, table.bits[sl] & pte_without(PTE_WRITE), table.bits[sl])
    child = dst.mm.pmds.get(idx)
    if not isinstance(child, PteTable):
        child = dst.mm.pmds[idx] = PteTable()
    child.pfn[sl] = pfns
    child.bits[sl] = np.where(present, table.bits[sl] & pte_without(PTE_YOUNG), 0)
    normal = pfns[present & ((table.bits[sl] & PTE_SPECIAL) == 0)]
    if normal.size == 0:
        return
    f = k.frames
    f._mapcount[normal] += 1
    np.add.at(f._count, heads_of(k, normal), 1)
    dst.mm.anon_rss += int(normal.size)
    if k.tracing:
        k.trace(
            "copy_pte_range",
            f"{normal.size} PTEs at {(idx << PMD_SHIFT) + (sl.start << 12):#x} shared with pid "
            f"{dst.mm.pid}: write-protected on both sides, _mapcount and _count +1",
        )


def heads_of(k: Kernel, pfns: np.ndarray) -> np.ndarray:
    """compound_head() of many pages at once."""
    tail = (k.frames.flags[pfns] & PG_tail) != 0
    return np.where(tail, pfns & ~(HPAGE_PMD_NR - 1), pfns)


# --- zap ------------------------------------------------------------------------------------


def zap_page_range(k: Kernel, vma: VmArea, start: int, end: int) -> None:
    """zap_page_range()/unmap_vmas(): unmap [start, end) of one VMA, splitting partial PMDs."""
    mm = vma.mm
    start, end = max(start, vma.vm_start), min(end, vma.vm_end)
    if start >= end:
        return
    for idx in range(pmd_index(start), pmd_index(end - 1) + 1):
        entry = mm.pmds.get(idx)
        if entry is None:
            continue
        base = idx << PMD_SHIFT
        lo, hi = max(start, base), min(end, base + HPAGE_PMD_SIZE)
        if isinstance(entry, HugePmd):
            if hi - lo == HPAGE_PMD_SIZE:
                huge_memory.zap_huge_pmd(k, mm, idx, entry)
                continue
            huge_memory.split_huge_pmd(k, vma, base)
            entry = mm.pmds[idx]
        assert isinstance(entry, PteTable)
        zap_pte_range(k, mm, entry, pte_index(lo), pte_index(hi - 1) + 1)
        if entry.empty():
            del mm.pmds[idx]


def zap_pte_range(k: Kernel, mm: MmStruct, table: PteTable, lo: int, hi: int) -> None:
    """zap_pte_range(): page_remove_rmap + put_page for every normal page in the slice."""
    f = k.frames
    sl = slice(lo, hi)
    pfns = table.pfn[sl]
    normal = pfns[(pfns >= 0) & ((table.bits[sl] & PTE_SPECIAL) == 0)]
    table.pfn[sl] = -1
    table.bits[sl] = 0
    if normal.size == 0:
        return
    f._mapcount[normal] -= 1
    if (f._mapcount[normal] < -1).any():
        raise KernelBug("zap_pte_range: _mapcount below -1")
    mm.anon_rss -= int(normal.size)
    if k.tracing:
        k.trace("zap_pte_range", f"pid {mm.pid}: {normal.size} PTEs unmapped (page_remove_rmap)")
    compound = (f.flags[normal] & (PG_head | PG_tail)) != 0
    emptied = normal[compound & (f._mapcount[normal] == -1)]
    for head in np.unique(emptied & ~(HPAGE_PMD_NR - 1)):
        deferred_split_huge_page(k, int(head))
    heads, counts = np.unique(heads_of(k, normal), return_counts=True)
    for head, nr in zip(heads.tolist(), counts.tolist(), strict=True):
        put_page(k, head, nr)
