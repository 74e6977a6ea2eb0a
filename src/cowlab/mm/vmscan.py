"""mm/vmscan.c and mm/madvise.c's MADV_PAGEOUT: reclaim of anonymous pages to swap.

A swap-out runs shrink_page_list() on the pages a range maps, in stages a scenario can stop
after (``until``): ``swapcache`` (in the swap cache, unmapped), ``writeback`` (a dirty page being
written), ``written`` (written, still in the swap cache: what one MADV_PAGEOUT pass leaves on an
asynchronous device once the writes complete), ``freed`` (also freed from the swap cache where
nothing else holds it, as a later pass would). A clean page that needs no write is freed in the
pass unless it stops at ``swapcache``. end_writeback and shrink_swapcache move pages on later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.errors import SyscallError
from cowlab.mm import huge_memory
from cowlab.mm.constants import (
    HPAGE_PMD_SIZE,
    PMD_SHIFT,
    PG_allocated,
    PG_dirty,
    PG_head,
    PG_swapcache,
    PG_tail,
    PG_writeback,
)
from cowlab.mm.mm import PageAnon, PageKsm, compound_head, page_count, page_maybe_dma_pinned
from cowlab.mm.mm_types import MmStruct, VmArea, pmd_index, pte_index
from cowlab.mm.mmap import has_holes
from cowlab.mm.page_alloc import flags_without
from cowlab.mm.pgtable import PTE_MIGRATION, PTE_PROTNONE, PTE_SPECIAL, HugePmd, PteTable
from cowlab.mm.rmap import try_to_unmap
from cowlab.mm.swap_state import add_to_swap
from cowlab.mm.swapfile import delete_from_swap_cache

if TYPE_CHECKING:
    from cowlab.kernel import Kernel

STAGES = ("swapcache", "writeback", "written", "freed")


def swapout_range(k: Kernel, mm: MmStruct, start: int, end: int, until: str) -> int:
    """MADV_PAGEOUT (5.4+, madvise_pageout) on [start, end), or before 5.4 the reclaim path
    taking exactly the pages the range maps. Returns how many pages reached the swap cache;
    like madvise, a range with holes is done where mapped, then fails with ENOMEM."""
    pages: list[int] = []
    holes = has_holes(mm, start, end)
    for vma in mm.vmas_in(start, end):
        pages += _pages_to_reclaim(k, vma, max(start, vma.vm_start), min(end, vma.vm_end))
    swapped = shrink_page_list(k, pages, until) if k.config.swap else 0
    if not k.config.swap:
        k.event("shrink_page_list", "keep", rule="CONFIG_SWAP=n: no swap device")
    if holes:
        raise SyscallError("ENOMEM", f"swapout: [{start:#x}, {end:#x}) has unmapped pages")
    return swapped


def _pages_to_reclaim(k: Kernel, vma: VmArea, start: int, end: int) -> list[int]:
    """madvise_cold_or_pageout_pte_range(): a PMD covered whole is taken as one THP; a PMD
    covered in part is split; a PTE-mapped THP is split (split_huge_page) before its pages are
    taken. MADV_PAGEOUT skips pages mapped more than once (the generation's rule)."""
    mm = vma.mm
    found: list[int] = []
    for idx in range(pmd_index(start), pmd_index(end - 1) + 1):
        base = idx << PMD_SHIFT
        lo, hi = max(start, base), min(end, base + HPAGE_PMD_SIZE)
        entry = mm.pmds.get(idx)
        if isinstance(entry, HugePmd):
            if entry.huge_zero or entry.protnone or _skip_shared(k, entry.pfn):
                continue
            if hi - lo == HPAGE_PMD_SIZE:
                found.append(entry.pfn)
                continue
            if not _split(k, entry.pfn):
                continue
            entry = mm.pmds.get(idx)
        if isinstance(entry, PteTable):
            found += _pte_pages(k, entry, pte_index(lo), pte_index(hi - 1) + 1)
    return found


def _pte_pages(k: Kernel, table: PteTable, lo: int, hi: int) -> list[int]:
    f = k.frames
    found: list[int] = []
    for i in range(lo, hi):
        pfn = int(table.pfn[i])
        if pfn < 0 or table.bits[i] & (PTE_SPECIAL | PTE_MIGRATION | PTE_PROTNONE):
            continue
        if not PageAnon(f, pfn) or PageKsm(f, pfn) or _skip_shared(k, pfn):
            continue
        if f.flags[pfn] & (PG_head | PG_tail):
            if not _split(k, compound_head(f, pfn)):
                continue
            if table.pfn[i] != pfn:  # the split mapped it as the zero page (6.12+)
                continue
        found.append(pfn)
    return found


def _split(k: Kernel, head: int) -> bool:
    """A THP only partly in the range is split first (split_huge_page); one that cannot be split
    is left as it is, its PMD included."""
    if huge_memory.split_huge_page(k, head) == 0:
        return True
    k.event("madvise_pageout", "skip", pfn=head, rule="a THP that cannot be split")
    return False


def _skip_shared(k: Kernel, pfn: int) -> bool:
    skip, read, rule = k.policy.pageout_skips(k, pfn)
    if skip:
        k.event("madvise_pageout", "skip", pfn=pfn, read=read, rule=rule)
    return skip


def shrink_page_list(k: Kernel, pages: list[int], until: str) -> int:
    """shrink_page_list() on isolated pages: swap cache, unmap, write, free."""
    swapped = 0
    for pfn in pages:
        for page in _small_pages(k, pfn):
            swapped += _shrink_one(k, page, until)
    return swapped


def _small_pages(k: Kernel, pfn: int) -> list[int]:
    """add_to_swap() of a THP on a device without swap clusters: split_huge_page_to_list()
    first; every subpage then goes through reclaim (6.12+: but those the split mapped as the zero
    page, which it freed). A THP that cannot be split is kept."""
    f = k.frames
    if not f.flags[pfn] & PG_head or f.flags[pfn] & PG_swapcache:
        return [pfn]
    if k.policy.reclaim_skips_pinned and page_maybe_dma_pinned(f, pfn):
        return [pfn]  # _shrink_one keeps it and says why
    nr = 1 << int(f.order[pfn])
    if huge_memory.split_huge_page(k, pfn) != 0:
        k.event("add_to_swap", "keep", pfn=pfn, rule="split_huge_page failed: the THP is kept")
        return []
    return [p for p in range(pfn, pfn + nr) if f.flags[p] & PG_allocated]  # some are freed


def _shrink_one(k: Kernel, pfn: int, until: str) -> int:
    f = k.frames
    if not f.flags[pfn] & PG_swapcache:
        if k.policy.reclaim_skips_pinned and page_maybe_dma_pinned(f, pfn):
            read = (("folio_maybe_dma_pinned", 1),)
            k.event("shrink_page_list", "keep", pfn=pfn, read=read, rule="never swap a pinned page")
            return 0
        offset = add_to_swap(k, pfn)
        k.event("add_to_swap", pfn=pfn, detail=f"in the swap cache, slot {offset}")
    if not try_to_unmap(k, pfn) or until == "swapcache":
        return 1
    if k.frames.flags[pfn] & PG_dirty:  # a clean page (already written) is freed at once
        if not pageout(k, pfn):
            return 1  # PAGE_KEEP: stays dirty in the swap cache
        if until == "writeback":
            return 1
        end_page_writeback(k, pfn)
        if until == "written":  # PG_reclaim: freed by a later pass
            return 1
    __remove_mapping(k, pfn)
    return 1


def pageout(k: Kernel, pfn: int) -> bool:
    """pageout() -> swap_writepage(): a dirty page is written; it is under writeback until the
    write completes. The device gets the bytes the page holds now. is_page_cache_freeable():
    a page someone else still references (a pin) is not written (PAGE_KEEP)."""
    f = k.frames
    count = page_count(f, pfn)
    if count != 1:  # the swap cache's reference only (the model takes no isolation reference)
        read = (("page_count", count),)
        rule = "is_page_cache_freeable(): only the swap cache holds it"
        k.event("pageout", "keep", pfn=pfn, read=read, rule=rule)
        return False
    offset = int(f.private[pfn])
    f.flags[pfn] = (f.flags[pfn] & flags_without(PG_dirty)) | PG_writeback
    data = f.page_data(pfn)
    if data:
        k.swap.data[offset] = data
    else:
        k.swap.data.pop(offset, None)
    k.vmstat["pswpout"] += 1
    k.event("pageout", pfn=pfn, detail=f"writing slot {offset}")
    return True


def end_page_writeback(k: Kernel, pfn: int) -> None:
    """end_page_writeback(): the write completed; the page is clean in the swap cache."""
    k.frames.flags[pfn] &= flags_without(PG_writeback)


def __remove_mapping(k: Kernel, pfn: int) -> bool:
    """__remove_mapping(): free a clean, unmapped swap-cache page only if the swap cache holds
    its last reference (the refcount freeze fails while a pin or anyone else holds one)."""
    f = k.frames
    count = page_count(f, pfn)
    if f.flags[pfn] & (PG_dirty | PG_writeback) or f._mapcount[pfn] >= 0 or count != 1:
        read = (("page_count", count), ("page_mapcount", int(f._mapcount[pfn]) + 1))
        rule = "clean, unmapped, and only the swap cache holds it"
        k.event("__remove_mapping", "keep", pfn=pfn, read=read, rule=rule)
        return False
    delete_from_swap_cache(k, pfn)
    return True


def end_writeback(k: Kernel) -> int:
    """Every page under writeback completes (the device's interrupts arrive)."""
    f = k.frames
    pages = (f.flags[: f.nr] & PG_writeback).nonzero()[0].tolist()
    for pfn in pages:
        end_page_writeback(k, pfn)
    return len(pages)


def shrink_swapcache(k: Kernel) -> int:
    """A reclaim pass over the unmapped swap-cache pages: dirty ones are written (and stay under
    writeback), clean ones are freed where nothing else holds them. Returns the pages freed."""
    freed = 0
    for pfn in k.swap.cache[k.swap.cache >= 0].tolist():
        f = k.frames
        if f._mapcount[pfn] >= 0 or f.flags[pfn] & PG_writeback:
            continue
        if f.flags[pfn] & PG_dirty:
            pageout(k, pfn)
            continue
        freed += __remove_mapping(k, pfn)
    return freed
