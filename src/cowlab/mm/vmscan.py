"""mm/vmscan.c and mm/madvise.c's MADV_PAGEOUT: reclaim of anonymous pages to swap.

A swap-out runs shrink_page_list() on the pages a range maps, in stages a scenario can stop
after (``until``): ``swapcache`` (in the swap cache, unmapped), ``writeback`` (a dirty page being
written), ``written`` (written, still in the swap cache: what one MADV_PAGEOUT pass leaves on an
asynchronous device once the writes complete), ``freed`` (also freed from the swap cache where
nothing else holds it, as a later pass would). A clean page that needs no write is freed in the
pass unless it stops at ``swapcache``. end_writeback and shrink_swapcache move pages on later.
On zram the write completes inside pageout, so a page is written and freed in the one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cowlab.errors import SyscallError
from cowlab.mm import huge_memory
from cowlab.mm.constants import (
    HPAGE_PMD_NR,
    HPAGE_PMD_SIZE,
    PAGE_SHIFT,
    PMD_SHIFT,
    PG_allocated,
    PG_anon_exclusive,
    PG_dirty,
    PG_head,
    PG_ksm,
    PG_swapcache,
    PG_tail,
    PG_writeback,
)
from cowlab.mm.decision import Reads
from cowlab.mm.huge_memory import total_mapcount
from cowlab.mm.mm import (
    Field,
    PageAnon,
    compound_head,
    compound_mapcount,
    folio_mapped,
    folio_nr_pages,
    page_count,
    page_maybe_dma_pinned,
    put_pages,
)
from cowlab.mm.mm_types import MmStruct, VmArea, pmd_index, pte_index
from cowlab.mm.mmap import has_holes
from cowlab.mm.page_alloc import PageFrames, flags_without
from cowlab.mm.pgtable import (
    PTE_MIGRATION,
    PTE_PROTNONE,
    PTE_SOFT_DIRTY,
    PTE_SPECIAL,
    PTE_SWP_EXCLUSIVE,
    HugePmd,
    PteTable,
)
from cowlab.mm.range_fault import Ints, _leading, by_key
from cowlab.mm.rmap import rmap_walk_anon, try_to_unmap
from cowlab.mm.swap_state import add_to_swap
from cowlab.mm.swapfile import delete_from_swap_cache

if TYPE_CHECKING:
    from cowlab.kernel import Kernel

STAGES = ("swapcache", "writeback", "written", "freed")
SWAP_AREAS = {
    "file": "swap file on a rotational disk",
    "hdd": "rotational block device",
    "ssd": "non-rotational block device",
    "zram": "zram device",
}


def swapout_range(k: Kernel, mm: MmStruct, start: int, end: int, until: str) -> int:
    """MADV_PAGEOUT (5.4+, madvise_pageout) on [start, end), or before 5.4 the reclaim path
    taking exactly the pages the range maps. Returns how many pages reached the swap cache;
    like madvise, a range with holes is done where mapped, then fails with ENOMEM. A page the
    range maps more than once (a KSM page) is taken once: isolate_lru_page() fails for a page
    already off the LRU (4.5.0, 5.4.6 mm/vmscan.c; 5.4.6 madvise_cold_or_pageout_pte_range)."""
    pages: list[int] = []
    holes = has_holes(mm, start, end)
    for vma in mm.vmas_in(start, end):
        pages += _pages_to_reclaim(k, vma, max(start, vma.vm_start), min(end, vma.vm_end))
    pages = list(dict.fromkeys(pages))
    swapped = shrink_page_list(k, pages, until) if k.config.swap else 0
    if not k.config.swap:
        k.event("shrink_page_list", "keep", rule="CONFIG_SWAP=n: no swap device")
    if holes:
        raise SyscallError("ENOMEM", f"swapout: [{start:#x}, {end:#x}) has unmapped pages")
    return swapped


def _pages_to_reclaim(k: Kernel, vma: VmArea, start: int, end: int) -> list[int]:
    """madvise_cold_or_pageout_pte_range(): a PMD covered whole is taken as one THP; a PMD
    covered in part is split; a PTE-mapped THP is split (split_huge_page) before its pages are
    taken. MADV_PAGEOUT skips pages mapped more than once (the generation's rule): from 5.4 a
    THP it would split, from 5.6 (_skip_cow_page) a small page and a whole PMD too."""
    mm = vma.mm
    found: list[int] = []
    for idx in range(pmd_index(start), pmd_index(end - 1) + 1):
        base = idx << PMD_SHIFT
        lo, hi = max(start, base), min(end, base + HPAGE_PMD_SIZE)
        entry = mm.pmds.get(idx)
        if isinstance(entry, HugePmd):
            if entry.huge_zero or entry.protnone:
                continue
            if hi - lo == HPAGE_PMD_SIZE:
                if not _skip_cow_page(k, entry.pfn):
                    found.append(entry.pfn)
                continue
            if _skip_shared(k, entry.pfn):
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
    i = lo
    while i < hi:
        pfn = int(table.pfn[i])
        if not _normal_anon(f, table, i):
            i += 1
        elif f.flags[pfn] & (PG_head | PG_tail):
            step = _large_folio_ptes(k, table, i, hi, found)
            if step is None:
                break
            i += step
        else:
            if not _skip_cow_page(k, pfn):
                found.append(pfn)
            i += 1
    return found


def _normal_anon(f: PageFrames, table: PteTable, i: int) -> bool:
    """Does PTE i map an anonymous page the walk may take (not the zero page, a migration or
    NUMA-hinting entry)? A KSM page is one: MADV_PAGEOUT takes it when it is mapped once, and
    reclaim unmaps it through rmap_walk_ksm (no KSM test in madvise_cold_or_pageout_pte_range
    or shrink_page_list: 5.4.6, 5.10.7, 6.1.20, 6.9.0, 6.12.0, 6.18.2)."""
    pfn = int(table.pfn[i])
    if pfn < 0 or table.bits[i] & (PTE_SPECIAL | PTE_MIGRATION | PTE_PROTNONE):
        return False
    return PageAnon(f, pfn)


def _large_folio_ptes(k: Kernel, table: PteTable, i: int, hi: int, found: list[int]) -> int | None:
    """madvise_cold_or_pageout_pte_range() at a PTE mapping a large folio: how many PTEs the
    walk moves on (0: the folio was split and this PTE is looked at again, now a small page or,
    6.12+, the zero page), or None: the walk of this page table stops when the folio is shared
    or its split fails (5.4 .. 6.9, `break` in the 5.10.7, 6.6.9 and 6.9.0 trees); 6.10
    (3931b871c493; 6.11.11 and 6.12.0 trees) skips the folio's PTEs instead."""
    f = k.frames
    pfn = int(table.pfn[i])
    head, nr = compound_head(f, pfn), 1
    if k.policy.mthp_swapout:
        nr = _folio_pte_batch(table, i, hi, head, f)
        if nr == folio_nr_pages(f, head):
            found += _whole_folio(k, pfn)
            return nr
    if not _skip_shared(k, pfn) and _split(k, head):
        return 0
    if not (k.policy.madv_pageout and k.policy.pageout_large_stops):
        return nr
    rule = "a large folio left alone stops the walk of this page table (break)"
    k.event("madvise_pageout", "stop", pfn=head, rule=rule)
    return None


def _folio_pte_batch(table: PteTable, i: int, hi: int, head: int, f: PageFrames) -> int:
    """madvise_folio_pte_batch() (6.10): how many PTEs from i map the folio's pages in order,
    within the range."""
    end = min(hi, i + folio_nr_pages(f, head) - (int(table.pfn[i]) - head))
    run = table.pfn[i:end] - int(table.pfn[i])
    return int((run == np.arange(run.size)).cumprod().sum())


def _whole_folio(k: Kernel, pfn: int) -> list[int]:
    """madvise_cold_or_pageout_pte_range() (6.10, 3931b871c493): a large folio the range maps
    whole is not split; it is taken when it is mapped once per page (folio_mapcount)."""
    f = k.frames
    head = compound_head(f, pfn)
    mapcount, nr = total_mapcount(f, head), folio_nr_pages(f, head)
    if mapcount == nr:
        return [head]
    read = (("folio_mapcount", mapcount), ("folio_nr_pages", nr))
    k.event("madvise_pageout", "skip", pfn=head, read=read, rule="folio_mapcount == nr_pages")
    return []


def _split(k: Kernel, head: int) -> bool:
    """A THP only partly in the range is split first (split_huge_page); one that cannot be split
    is left as it is, its PMD included."""
    if huge_memory.split_huge_page(k, head) == 0:
        return True
    k.event("madvise_pageout", "skip", pfn=head, rule="a THP that cannot be split")
    return False


def _skip_cow_page(k: Kernel, pfn: int) -> bool:
    """A small page, or a THP a PMD maps whole: tested for sharing only from 12e967fd8e4e (5.6;
    stable 5.4.28, 5.5.12); 5.4.0-5.4.27 and 5.5.0-5.5.11 take it however it is mapped."""
    return k.policy.pageout_skips_cow_pages and _skip_shared(k, pfn)


def _skip_shared(k: Kernel, pfn: int) -> bool:
    skip, read, rule = k.policy.pageout_skips(k, pfn)
    if skip:
        k.event("madvise_pageout", "skip", pfn=pfn, read=read, rule=rule)
    return skip


def shrink_page_list(k: Kernel, pages: list[int], until: str) -> int:
    """shrink_page_list() on isolated pages: swap cache, unmap, write, free. The range path
    takes runs of plain pages (_plain) together (_shrink_plain); the others, and every page
    without it, go one at a time."""
    swapped = 0
    run: list[int] = []
    f = k.frames
    for pfn in pages:
        if k.range_ops and _plain(
            f.flags.item(pfn), f.mapping.item(pfn), f._mapcount.item(pfn), f._count.item(pfn)
        ):
            run.append(pfn)
            continue
        swapped += _shrink_plain(k, run, until)
        run = []
        folios = _folios(k, pfn)
        if k.range_ops and len(folios) > 1:  # the small pages of a split THP
            swapped += _shrink_plain(k, folios, until)
            continue
        for folio in folios:
            swapped += _shrink_one(k, folio, until)
    return swapped + _shrink_plain(k, run, until)


def _plain(flags: Field, mapping: Field, mapcount: Field, count: Field) -> Field:
    """A small anonymous page outside KSM and the swap cache, mapped once, with no reference
    but that mapping's: its way through reclaim reads and writes only its own fields and slot.
    The one statement, of one page's fields (ints: shrink_page_list groups by it) or of a
    run's (arrays: _shrink_plain decides by it)."""
    small = (flags & (PG_head | PG_tail | PG_swapcache | PG_ksm)) == 0
    return small & (mapping > 0) & (mapcount == 0) & (count == 1)


def _shrink_plain(k: Kernel, pages: list[int], until: str) -> int:
    """_shrink_one() of each of these small pages, in order: runs of plain ones whose one
    mapping the rmap walk finds go together (_shrink_run), any other page alone."""
    if not pages:
        return 0
    run = np.array(pages, dtype=np.int64)
    f = k.frames
    plain = _plain(f.flags[run], f.mapping[run], f._mapcount[run], f._count[run])
    found = _walk_small(k, run)
    ok = plain & (found.places >= 0)
    start = swapped = 0
    while start < run.size:
        n = _leading(ok[start:] == ok[start])
        if ok[start]:
            _shrink_run(k, run[start : start + n], found.part(start, n), until)
            swapped += n  # each reaches the swap cache
        else:
            swapped += sum(_shrink_one(k, pfn, until) for pfn in run[start : start + n].tolist())
        start += n
    return swapped


@dataclass
class Walked:
    """What rmap_walk_anon() finds of each of many small pages: where ``places[i]`` >= 0,
    exactly one PTE, entry ``ptes[i]`` of ``tables[places[i]]`` (a VMA and its page table) at
    ``addrs[i]``; ``vmas[i]``, how many VMAs the walk visits."""

    places: Ints
    ptes: Ints
    addrs: Ints
    vmas: Ints
    tables: list[tuple[VmArea, PteTable]]

    def part(self, start: int, n: int) -> Walked:
        sl = slice(start, start + n)
        return Walked(self.places[sl], self.ptes[sl], self.addrs[sl], self.vmas[sl], self.tables)


def distinct(values: Ints) -> list[int]:
    """np.unique(values).tolist(), ascending, of the few values a walk groups by, without
    np.unique's first-call import of numpy.ma (7 ms, its masked-array test)."""
    return sorted(set(values.tolist()))


def _walk_small(k: Kernel, pages: Ints) -> Walked:
    """rmap_walk_anon() of many small pages at once: each VMA of the page's anon_vma at the
    address its index gives (mappings_in_vma); a page found other than once is marked -1."""
    f = k.frames
    n = pages.size
    hits = np.zeros(n, dtype=np.int64)
    out = Walked(np.full(n, -1, np.int64), hits.copy(), hits.copy(), hits.copy(), [])
    mapping, index = f.mapping[pages].astype(np.int64), f.index[pages].astype(np.int64)
    for av_id in distinct(mapping):
        av = k.anon_vmas.get(av_id)
        if av is None:
            continue
        sel = np.flatnonzero(mapping == av_id)
        out.vmas[sel] = len(av.vmas)
        for vma in av.vmas:
            pgoff = index[sel]
            inside = (pgoff >= vma.vm_pgoff) & (pgoff < vma.vm_pgoff + vma.pages)
            addrs = vma.vm_start + ((pgoff - vma.vm_pgoff) << PAGE_SHIFT)
            for idx in distinct(addrs[inside] >> PMD_SHIFT):
                table = vma.mm.pmds.get(idx)
                if not isinstance(table, PteTable):
                    continue  # a huge PMD maps no small page
                at = np.flatnonzero(inside & ((addrs >> PMD_SHIFT) == idx))
                i = (addrs[at] >> PAGE_SHIFT) & (HPAGE_PMD_NR - 1)
                match = (table.pfn[i] == pages[sel[at]]) & ((table.bits[i] & PTE_MIGRATION) == 0)
                who = sel[at[match]]
                hits[who] += 1
                out.places[who] = len(out.tables)
                out.ptes[who] = i[match]
                out.addrs[who] = addrs[at[match]]
                out.tables.append((vma, table))
    out.places[hits != 1] = -1
    return out


# what became of each page of a run: kept mapped (try_to_unmap_one refused), unmapped into the
# swap cache, its bytes written or (6.12) zero-filled into the zeromap, and then freed
KEPT, UNMAPPED, WRITTEN, ZEROMAP = range(4)
FREED = 4  # added to WRITTEN or ZEROMAP


def _shrink_run(k: Kernel, pages: Ints, found: Walked, until: str) -> None:
    """_shrink_one() of plain pages each mapped by the one PTE the walk finds, at once: slots
    in the order get_swap_page() hands them out, the swap cache, try_to_unmap_one() where the
    generation lets it (asked once per distinct value of what it reads, as range_fault's
    _wp_run asks wp_reuse), then pageout(), end_page_writeback() and __remove_mapping() as far
    as ``until``. No page's step reads another's fields or slot, and none allocates."""
    f = k.frames
    _ = k.policy.reclaim_skips_pinned  # _shrink_one's test, false at _count 1
    anon_vmas = f.mapping[pages].tolist()  # for the events: a freed page has none
    slots = k.swap.get_swap_page_each(pages.size)
    for page, slot in zip(pages.tolist(), slots.tolist(), strict=True):  # add_to_swap_cache
        f.swapcache.add(page)
        f.private[page] = slot
    f.flags[pages] |= PG_swapcache | PG_dirty
    k.swap.cache[slots] = pages
    f._count[pages] += 1
    k.vmstat["rmap_walk"] += int(pages.size)
    k.vmstat["rmap_walk_vmas"] += int(found.vmas.sum())
    refusals, which = by_key(f, pages, lambda i: k.policy.try_to_unmap_refuses(k, int(pages[i])))
    kept = np.array([refuse for refuse, _, _ in refusals])[which]
    stage = np.full(pages.size, KEPT, dtype=np.int64)
    go = ~kept
    _unmap(k, pages[go], slots[go], found.places[go], found.ptes[go], found.tables)
    stage[go] = UNMAPPED
    if until != "swapcache":
        stage[go] = _write_and_free(k, pages[go], slots[go], until)
    if k.tracing:
        refused = [refusals[i] for i in which.tolist()]
        _trace_run(k, pages, slots, found, stage, anon_vmas, refused)


def _unmap(
    k: Kernel,
    pages: Ints,
    slots: Ints,
    places: Ints,
    ptes: Ints,
    tables: list[tuple[VmArea, PteTable]],
) -> None:
    """try_to_unmap_one() at each page's one PTE: a swap PTE for its slot, soft-dirty kept
    and (5.19) the exclusive marker from PG_anon_exclusive; the page loses the mapping and
    the reference. A dirty PTE would dirty the page, which the swap cache already did."""
    f = k.frames
    marker = np.where(f.flags[pages] & PG_anon_exclusive, PTE_SWP_EXCLUSIVE, 0)
    f.flags[pages] &= flags_without(PG_anon_exclusive)
    k.swap.swap_map[slots] += 1  # swap_duplicate: one slot each
    for place in distinct(places):
        vma, table = tables[place]
        at = places == place
        i = ptes[at]
        table.bits[i] = (table.bits[i] & PTE_SOFT_DIRTY) | marker[at]
        table.pfn[i] = -2 - slots[at]  # swp_entry_to_pte
        vma.mm.anon_rss -= int(at.sum())
        vma.mm.swapents += int(at.sum())
    f._mapcount[pages] -= 1  # page_remove_rmap: 0 -> -1
    f._count[pages] -= 1  # put_page: the swap cache's reference is left


def _write_and_free(k: Kernel, pages: Ints, slots: Ints, until: str) -> Ints:
    """pageout() of unmapped, dirty pages only the swap cache references, then as far as
    ``until`` end_page_writeback() and __remove_mapping(); returns each page's stage. A write
    on zram, or none (a zero-filled page, 6.12), ends in pageout: freed in this pass."""
    f = k.frames
    zero = ~f.has_data(pages) if k.policy.swapout_zeromap else np.zeros(pages.size, bool)
    written = pages[~zero]
    f.flags[pages] &= flags_without(PG_dirty)
    f.flags[written] |= PG_writeback
    for page, slot in zip(pages.tolist(), slots.tolist(), strict=True):
        data = f.page_data(page)
        if data:
            k.swap.data[slot] = data
        else:
            k.swap.data.pop(slot, None)
    k.vmstat["pswpout"] += int(written.size)
    if zero.any():
        k.vmstat["swpout_zero"] += int(zero.sum())
    synchronous = k.swap.synchronous
    if synchronous or until != "writeback":
        f.flags[written] &= flags_without(PG_writeback)
    done = zero | (synchronous or until == "freed")
    freed = pages[done]
    f.flags[freed] &= flags_without(PG_swapcache)
    for page in freed.tolist():
        f.swapcache.remove(page)
    k.swap.cache[slots[done]] = -1
    put_pages(k, freed, np.ones(freed.size, dtype=np.int64))
    return np.where(zero, ZEROMAP, WRITTEN) + FREED * done


def _trace_run(
    k: Kernel,
    pages: Ints,
    slots: Ints,
    found: Walked,
    stage: Ints,
    anon_vmas: list[int],
    refusals: list[tuple[bool, Reads, str]],
) -> None:
    """The events _shrink_one() records page by page, in order."""
    how = "completed synchronously (zram)" if k.swap.synchronous else "started"
    for pfn, slot, addr, place, at, av_id, (_, read, rule) in zip(
        pages.tolist(),
        slots.tolist(),
        found.addrs.tolist(),
        found.places.tolist(),
        stage.tolist(),
        anon_vmas,
        refusals,
        strict=True,
    ):
        k.event("add_to_swap", pfn=pfn, detail=f"in the swap cache, slot {slot}")
        av = k.anon_vmas[av_id]
        k.event("rmap_walk_anon", pfn=pfn, detail=f"{av}: {len(av.vmas)} VMAs visited")
        if at == KEPT:
            k.event("try_to_unmap_one", "keep", addr=addr, pfn=pfn, read=read, rule=rule)
            continue
        pid = found.tables[place][0].mm.pid
        k.event("try_to_unmap_one", addr=addr, pfn=pfn, detail=f"pid {pid}: swap PTE, slot {slot}")
        if at == UNMAPPED:
            continue
        if at % FREED == ZEROMAP:
            detail = f"slot {slot} zero-filled: in the zeromap, no I/O"
        else:
            detail = f"slot {slot}: write {how}"
        k.event("pageout", pfn=pfn, detail=detail)
        if at >= FREED:
            k.event("delete_from_swap_cache", pfn=pfn, detail=f"slot {slot} leave the swap cache")


def _folios(k: Kernel, pfn: int) -> list[int]:
    """What reclaim swaps out of an isolated page: the page, a large folio the swap area takes
    whole (_swaps_whole), or else the small pages split_huge_page_to_list() makes of it (6.12+:
    but those the split mapped as the zero page, which it freed). A THP that cannot be split
    is kept."""
    f = k.frames
    if not f.flags[pfn] & PG_head or f.flags[pfn] & PG_swapcache:
        return [pfn]
    if page_maybe_dma_pinned(f, pfn) and k.policy.reclaim_skips_pinned:
        return [pfn]  # _shrink_one keeps it and says why
    whole = _swaps_whole(k, pfn)
    if whole is not None:
        return [pfn] if whole else []
    nr = 1 << int(f.order[pfn])
    if huge_memory.split_huge_page(k, pfn) != 0:
        k.event("add_to_swap", "keep", pfn=pfn, rule="split_huge_page failed: the THP is kept")
        return []
    return [p for p in range(pfn, pfn + nr) if f.flags[p] & PG_allocated]  # some are freed


def _swaps_whole(k: Kernel, head: int) -> bool | None:
    """shrink_page_list() of a large folio on a swap area that gives its order a run of slots
    (4.14 bd4c82c22c36; mTHP 6.10 845982eb264b, 5ed890ce5147): True to swap it out whole,
    False to keep it (can_split_huge_page(): a reference beyond its mappings), None to split
    it first: 4.14 splits a THP no PMD maps; 6.10 only a folio on the deferred-split list."""
    f = k.frames
    order, device = int(f.order[head]), k.swap.device
    whole = k.policy.swaps_whole(device, order)
    read: Reads = (("folio_order", order), ("a run of slots on this area", int(whole)))
    if k.policy.mthp_swapout:
        read += (("on the deferred-split list", int(head in k.deferred_split)),)
        whole = whole and head not in k.deferred_split
    else:
        read += (("compound_mapcount", compound_mapcount(f, head)),)
        whole = whole and compound_mapcount(f, head) > 0
    rule = f"get_swap_pages() on a {SWAP_AREAS[device]}, and the folio is not split first"
    k.event("shrink_page_list", "whole" if whole else "split", pfn=head, read=read, rule=rule)
    if not whole:
        return None
    count, mapcount = page_count(f, head), total_mapcount(f, head)
    if count == mapcount:
        return True
    read = (("page_count", count), ("total_mapcount", mapcount))
    rule = "can_split_huge_page(): no reference beyond the mappings"
    k.event("shrink_page_list", "keep", pfn=head, read=read, rule=rule)
    return False


def _shrink_one(k: Kernel, pfn: int, until: str) -> int:
    """One page or whole folio through reclaim; returns how many pages reached the swap cache.
    On a synchronous device (zram) the write ends inside pageout and the same pass frees the
    folio, so it never stops at ``writeback`` or ``written``; nor does a zero-filled folio from
    6.12, which is not written at all (the zeromap)."""
    f = k.frames
    nr = folio_nr_pages(f, pfn)
    if not f.flags[pfn] & PG_swapcache:
        if page_maybe_dma_pinned(f, pfn) and k.policy.reclaim_skips_pinned:
            read = (("folio_maybe_dma_pinned", 1),)
            k.event("shrink_page_list", "keep", pfn=pfn, read=read, rule="never swap a pinned page")
            return 0
        offset = add_to_swap(k, pfn)
        if k.tracing:
            where = f"slot {offset}" if nr == 1 else f"slots {offset}..{offset + nr - 1}, whole"
            k.event("add_to_swap", pfn=pfn, detail=f"in the swap cache, {where}")
    if nr > 1:
        _split_pmds(k, pfn)
    if not try_to_unmap(k, pfn) or until == "swapcache":
        return nr
    if f.flags[pfn] & PG_dirty:  # a clean page (already written) is freed at once
        if not pageout(k, pfn):
            return nr  # PAGE_KEEP: stays dirty in the swap cache
        if f.flags[pfn] & PG_writeback:  # not zram's, nor a zero-filled folio's (6.12)
            if until == "writeback":
                return nr
            end_page_writeback(k, pfn)
            if until == "written":  # PG_reclaim: freed by a later pass
                return nr
    __remove_mapping(k, pfn)
    return nr


def _split_pmds(k: Kernel, head: int) -> None:
    """try_to_unmap() with TTU_SPLIT_HUGE_PMD: each PMD mapping of the THP becomes 512 PTEs
    (split_huge_pmd_address) before they are unmapped; the THP stays whole."""
    for m in rmap_walk_anon(k, head):
        if m.pmd:
            huge_memory.split_huge_pmd(k, m.vma, m.addr)


def pageout(k: Kernel, pfn: int) -> bool:
    """pageout() -> swap_writepage(): a dirty folio is written, in one I/O for a large one; it
    is under writeback until the write completes, which on a synchronous device (zram) is before
    swap_writepage returns. The device gets the bytes the pages hold now.
    is_page_cache_freeable(): a folio someone else still references (a pin) is not written
    (PAGE_KEEP)."""
    f = k.frames
    count, nr = page_count(f, pfn), folio_nr_pages(f, pfn)
    if count != nr:  # the swap cache's references only (the model takes no isolation reference)
        read = (("page_count", count), ("folio_nr_pages", nr))
        rule = "is_page_cache_freeable(): only the swap cache holds it"
        k.event("pageout", "keep", pfn=pfn, read=read, rule=rule)
        return False
    offset = int(f.private[pfn])
    if k.policy.swapout_zeromap and not (
        f.content[pfn] if nr == 1 else f.has_data(np.arange(pfn, pfn + nr)).any()
    ):
        return _zeromap(k, pfn, offset, nr)
    f.flags[pfn] = (f.flags[pfn] & flags_without(PG_dirty)) | PG_writeback
    for i in range(nr):
        data = f.page_data(pfn + i)
        if data:
            k.swap.data[offset + i] = data
        else:
            k.swap.data.pop(offset + i, None)
    k.vmstat["pswpout"] += nr
    synchronous = k.swap.synchronous
    if synchronous:
        end_page_writeback(k, pfn)
    if k.tracing:
        slots = f"slot {offset}" if nr == 1 else f"slots {offset}..{offset + nr - 1}"
        how = "completed synchronously (zram)" if synchronous else "started"
        k.event("pageout", pfn=pfn, detail=f"{slots}: write {how}")
    return True


def _zeromap(k: Kernel, pfn: int, offset: int, nr: int) -> bool:
    """swap_writeout() since 6.12 (0ca0c24e3211): a folio whose every byte is zero is marked in
    the device's zeromap instead of written; no I/O, so no writeback, and the same pass frees
    it. A swap-in of those slots reads zeros."""
    k.frames.flags[pfn] &= flags_without(PG_dirty)
    for i in range(nr):
        k.swap.data.pop(offset + i, None)
    k.vmstat["swpout_zero"] += nr
    if k.tracing:
        slots = f"slot {offset}" if nr == 1 else f"slots {offset}..{offset + nr - 1}"
        k.event("pageout", pfn=pfn, detail=f"{slots} zero-filled: in the zeromap, no I/O")
    return True


def end_page_writeback(k: Kernel, pfn: int) -> None:
    """end_page_writeback(): the write completed; the folio is clean in the swap cache."""
    k.frames.flags[pfn] &= flags_without(PG_writeback)


def __remove_mapping(k: Kernel, pfn: int) -> bool:
    """__remove_mapping(): free a clean, unmapped swap-cache folio only if the swap cache holds
    its last references (the refcount freeze at 1 + nr, less the isolation reference the model
    does not take, fails while a pin or anyone else holds one)."""
    f = k.frames
    count, nr = int(f._count[pfn]), folio_nr_pages(f, pfn)  # pfn is the head
    if f.flags[pfn] & (PG_dirty | PG_writeback) or count != nr or folio_mapped(f, pfn):
        read = (("page_count", count), ("total_mapcount", total_mapcount(f, pfn)))
        rule = "clean, unmapped, and only the swap cache holds it"
        k.event("__remove_mapping", "keep", pfn=pfn, read=read, rule=rule)
        return False
    delete_from_swap_cache(k, pfn)
    return True


def end_writeback(k: Kernel) -> int:
    """Every folio under writeback completes (the device's interrupts arrive)."""
    f = k.frames
    pages = (f.flags[: f.nr] & PG_writeback).nonzero()[0].tolist()
    for pfn in pages:
        end_page_writeback(k, pfn)
    return len(pages)


def shrink_swapcache(k: Kernel) -> int:
    """A reclaim pass over the unmapped swap-cache folios: dirty ones are written (and stay under
    writeback, but on zram), clean ones are freed where nothing else holds them. Returns the
    folios freed."""
    freed = 0
    f = k.frames
    for pfn in k.swap.cache[k.swap.cache >= 0].tolist():
        if f.flags[pfn] & PG_tail or folio_mapped(f, pfn) or f.flags[pfn] & PG_writeback:
            continue
        if f.flags[pfn] & PG_dirty:
            pageout(k, pfn)
            if not k.swap.synchronous:
                continue
        freed += __remove_mapping(k, pfn)
    return freed
