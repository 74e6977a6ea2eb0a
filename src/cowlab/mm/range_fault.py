"""The model's range path: a CPU access to many pages as array operations.

The kernel takes one fault per page, and so does the model page by page (Process._copy with
``range_ops`` off, the reference). The range path takes a run of consecutive pages of one VMA
and one page table that follow the same kernel path at once:

- pages the MMU lets through (present, permitted): accessed and dirty bits only;
- pte_none pages a write fills with new small pages (do_anonymous_page), or a read maps to the
  zero page — when neither a THP nor an mTHP could be allocated there;
- read-only PTEs a write sends through do_wp_page, for the zero page and for small anonymous
  pages outside KSM and the swap cache. The generation decides once per distinct value of what
  its rule reads for such a page (flags, _mapcount, _count, mapping); every page with those
  values gets that verdict, as it would page by page. Small anonymous pages in the swap cache
  (untraced) are decided one by one in address order, the verdicts made together after;
- the same for pages of PTE-mapped large folios (a THP after a PMD split, mTHPs): each verdict
  may change what the next reads, so the generation decides each page in turn, its old page
  settled before the next is asked; the copies are then made, mapped and logged together
  (6.15+, untraced: a folio's copies decided from the first page's decision, _large_copies);
- swap PTEs whose slots hold small pages in the swap cache, outside KSM (do_swap_page): the
  swap-in decision asked once per distinct value of what it reads (before 5.18 a write's with
  the slot's swap count, untraced), do_wp_page after each page a write finds mapped read-only.

Anything else (a THP or mTHP fault, a swap entry whose page must be read, a NUMA hint, a KSM or
swap-cache page under a write, CONFIG_DEBUG_VM's checks) is left to handle_mm_fault for one
page. With tracing on, each page's events are recorded as the per-page path records them. The
result must be the per-page path's, frame for frame and event for event: tests/test_range_ops.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import numpy.typing as npt

from cowlab.mm import huge_memory, ksm
from cowlab.mm.constants import (
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SHIFT,
    VM_EXEC,
    VM_READ,
    VM_WRITE,
    PG_anon_exclusive,
    PG_dirty,
    PG_head,
    PG_ksm,
    PG_swapcache,
    PG_tail,
    PG_writeback,
)
from cowlab.mm.decision import SwapinDecision, WpDecision
from cowlab.mm.memory import (
    ZERO_PAGE_COPY,
    do_wp_page,
    new_pte_bits,
    trace_anonymous,
    trace_copied,
    trace_fault,
    trace_swapin,
)
from cowlab.mm.mm import Field, compound_head, folio_large_mapcount, heads_of
from cowlab.mm.mm_types import MmStruct, VmArea, pmd_index, pte_index
from cowlab.mm.page_alloc import ZERO_PFN, PageFrames, flags_without
from cowlab.mm.pgtable import (
    PTE_DIRTY,
    PTE_MIGRATION,
    PTE_NONE,
    PTE_PROTNONE,
    PTE_SOFT_DIRTY,
    PTE_SPECIAL,
    PTE_SWP_EXCLUSIVE,
    PTE_WRITE,
    PTE_YOUNG,
    HugePmd,
    PteTable,
)
from cowlab.mm.rmap import (
    anon_vma_prepare,
    page_remove_folio_pte,
    pages_add_new_anon_rmap,
    removals_keeping_shared,
    rmap_remove_ptes,
)
from cowlab.mm.swapfile import frees_swap, only_user
from cowlab.mm.trace import CowCopies, Decisions, Packed

if TYPE_CHECKING:
    from cowlab.kernel import Kernel

Ints = npt.NDArray[np.int64]
T = TypeVar("T")
NONE: Ints = np.zeros(0, dtype=np.int64)
# what a small page's wp_reuse reads, beside the VMA: the same values give the same verdict
KEY_FIELDS = ("flags", "_mapcount", "_count", "mapping")


def access_permitted(vma: VmArea, write: bool) -> bool:
    """access_error() of the x86 fault handler: writes need VM_WRITE, reads any permission."""
    if write:
        return bool(vma.vm_flags & VM_WRITE)
    return bool(vma.vm_flags & (VM_READ | VM_WRITE | VM_EXEC))


def pte_access_permitted(pfn: Field, bits: Field, write: bool) -> Field:
    """pte_access_permitted() of x86 (e7884f8ead4a, 2017, named it in the move to the generic
    GUP, as Dan Williams's linux-mm review recounts; pte_allows_gup 4.6, 1874f6895c92):
    does the MMU let the access through a PTE without a fault? A present entry, not a NUMA
    hint nor a migration entry, writable for a write. The one statement, of one PTE's values
    (kernel.mmu_walk) or a run's (arrays: _pte_run, _wp_run)."""
    want = PTE_WRITE if write else 0
    return (pfn >= 0) & ((bits & (PTE_PROTNONE | PTE_MIGRATION | want)) == want)


def fault_in_range(
    k: Kernel, mm: MmStruct, va: int, end: int, write: bool, small_only: bool = False
) -> Ints:
    """The frames of the pages from va's page on that one run settles (the MMU then lets the
    access through), in address order; empty when va's page needs handle_mm_fault alone.
    ``small_only`` leaves pages of large folios to handle_mm_fault (GUP: a reference taken
    between two faults of one folio changes the second's decision)."""
    vma = mm.find_vma(va)
    if vma is None or not access_permitted(vma, write) or k.config.debug_vm:
        return NONE
    idx = pmd_index(va)
    stop = min(end, vma.vm_end, (idx + 1) << PMD_SHIFT)
    first, last = pte_index(va), pte_index(stop - 1) + 1
    entry = mm.pmds.get(idx)
    if isinstance(entry, HugePmd):
        if entry.protnone or (write and not entry.write):
            return NONE
        entry.young = True
        entry.dirty |= write
        return entry.pfn + np.arange(first, last, dtype=np.int64)
    if entry is not None:
        return _pte_run(k, vma, entry, idx << PMD_SHIFT, first, last, write, va, small_only)
    if huge_memory.transparent_hugepage_enabled(k, vma):
        return NONE
    table = mm.pmds[idx] = PteTable()  # what the first page's fault makes
    pfns = _pte_run(k, vma, table, idx << PMD_SHIFT, first, last, write, va, small_only)
    if not pfns.size:
        del mm.pmds[idx]
    return pfns


def _leading(mask: npt.NDArray[np.bool_]) -> int:
    """How many entries at the start of mask are true. One argmin method call (the first
    false entry, or the first entry when all are true): np.argmin and mask.all() took several
    times as long, a cost every run pays a few times."""
    if not mask.size:
        return 0
    i = int(mask.argmin())
    return mask.size if mask.item(i) else i


def _pte_run(
    k: Kernel,
    vma: VmArea,
    table: PteTable,
    base: int,
    first: int,
    last: int,
    write: bool,
    start: int,
    small_only: bool = False,
) -> Ints:
    """The run from PTE ``first`` of the table mapping [base, base + 2 MiB); the access
    faults at ``start`` in that first page (the address the COW log records)."""
    pfn, bits = table.pfn[first:last], table.bits[first:last]
    n = _leading(pte_access_permitted(pfn, bits, write))
    if n:
        table.bits[first : first + n] |= PTE_YOUNG | (PTE_DIRTY if write else 0)
        return table.pfn[first : first + n].copy()
    if pfn[0] == PTE_NONE:
        n = _leading(pfn == PTE_NONE)
        if not write:
            return _zero_page_run(k, vma, table, first, n, start)
        if huge_memory.mthp_sizes_on(k) and any(
            huge_memory.thp_vma_allowable_order(k, vma, o) for o in huge_memory.MTHP_ORDERS
        ):
            return NONE
        return _anonymous_run(k, vma, table, first, n, start)
    if write and pte_access_permitted(int(pfn[0]), int(bits[0]), False):  # read-only
        return _wp_run(k, vma, table, first, last, start, small_only)
    if pfn[0] <= -2:
        return _swapin_run(k, vma, table, first, last, write, start)
    return NONE


def fault_addrs(start: int, n: int) -> Ints:
    """The addresses n faults from ``start``'s page on are taken at: where the access began,
    then the start of each following page."""
    addrs = (start & ~(PAGE_SIZE - 1)) + (np.arange(n, dtype=np.int64) << PAGE_SHIFT)
    addrs[0] = start
    return addrs


def _zero_page_run(k: Kernel, vma: VmArea, table: PteTable, first: int, n: int, start: int) -> Ints:
    """do_anonymous_page() read faults: the zero page, special, at every PTE."""
    table.pfn[first : first + n] = ZERO_PFN
    table.bits[first : first + n] = PTE_SPECIAL | PTE_YOUNG
    k.vmstat["pgfault"] += n
    if k.tracing:
        for addr in fault_addrs(start, n).tolist():
            trace_fault(k, vma, addr, "read")
            trace_anonymous(k, addr, None)
    return np.full(n, ZERO_PFN, dtype=np.int64)


def _anonymous_run(k: Kernel, vma: VmArea, table: PteTable, first: int, n: int, start: int) -> Ints:
    """do_anonymous_page() write faults: a new zeroed small page at every PTE."""
    anon_vma_prepare(k, vma)
    pfns = k.frames.alloc_pages(n)
    table.pfn[first : first + n] = pfns
    table.bits[first : first + n] = new_pte_bits(vma) | PTE_YOUNG | PTE_DIRTY
    addrs = fault_addrs(start, n)
    pages_add_new_anon_rmap(k, pfns, vma, addrs)
    vma.mm.anon_rss += n
    k.vmstat["pgfault"] += n
    if k.tracing:
        for addr, pfn in zip(addrs.tolist(), pfns.tolist(), strict=True):
            trace_fault(k, vma, addr, "write")
            trace_anonymous(k, addr, pfn)
    return pfns


def _wp_run(
    k: Kernel,
    vma: VmArea,
    table: PteTable,
    first: int,
    last: int,
    start: int,
    small_only: bool = False,
) -> Ints:
    """do_wp_page() for the read-only PTEs from ``first`` on that map the zero page, or small
    anonymous pages (one verdict per distinct key) none of which a copy would free."""
    pfn, bits = table.pfn[first:last], table.bits[first:last]
    readable: npt.NDArray[np.bool_] = pte_access_permitted(pfn, bits, False)
    present_ro = readable & ((bits & PTE_WRITE) == 0)
    special = (bits & PTE_SPECIAL) != 0
    if special[0]:
        n = _leading(present_ro & special)
        olds = np.full(n, -1, dtype=np.int64)
        zero = np.zeros(n, np.int64)
        return _apply(k, vma, table, start, first, olds, [ZERO_PAGE_COPY], zero)
    f = k.frames
    pages = pfn[: _leading(present_ro & ~special)].copy()  # the PTEs change below
    if not pages.size:
        return NONE
    # a run of small pages it leaves alone (swap-cache, KSM pages) is told of its first page:
    # the page-by-page path asks again from the next page, so the arrays of the rest of the
    # table would be made once for each page of the run (a small page is its own head)
    page = pages.item(0)
    if _swapcache_anon(f, page) and not k.tracing:
        return _wp_swapcache_run(k, vma, table, start, first, pages)
    if not f.flags.item(page) & (PG_head | PG_tail) and not _plain_anon(f, page, page):
        return NONE
    pages = pages[: _leading(_plain_anon(f, pages, heads_of(f, pages)))]
    if not pages.size:  # a large folio it leaves alone (in the swap cache, KSM)
        return NONE
    large = (f.flags[pages] & (PG_head | PG_tail)) != 0
    if large[0]:
        if small_only:
            return NONE
        return _wp_large_run(k, vma, table, start, first, pages[: _leading(large)])
    pages = pages[: _leading(~large)]
    decisions, which = by_key(f, pages, lambda i: k.policy.wp_reuse(k, vma, int(pages[i])))
    copy = ~np.array([d.reuse for d in decisions])[which]
    # a copy that drops the last reference would free the old frame for the next copy to take
    freed = copy & (f._count[pages] <= 1)
    n = _leading(~freed)
    if not n:
        return NONE
    return _apply(k, vma, table, start, first, pages[:n], decisions, which[:n])


def _plain_anon(f: PageFrames, pages: Field, heads: Field) -> Field:
    """Whether pages (their heads given) are anonymous, and neither they nor their heads KSM or
    in the swap cache (reuse_swap_page's cases): those _wp_run decides by key. Of one page
    (an int) or a run (arrays)."""
    odd = (f.flags[pages] | f.flags[heads]) & (PG_ksm | PG_swapcache)
    return (odd == 0) & (f.mapping[heads] > 0)


def _swapcache_anon(f: PageFrames, pages: Field) -> Field:
    """Whether pages are small anonymous pages in the swap cache, outside KSM: those whose
    do_wp_page verdict may first drop the swap-cache copy (_wp_swapcache_run). Of one page
    (an int) or a run (arrays)."""
    flags = f.flags[pages]
    odd = flags & (PG_head | PG_tail | PG_ksm)
    return (odd == 0) & ((flags & PG_swapcache) != 0) & (f.mapping[pages] > 0)


def _wp_swapcache_run(
    k: Kernel, vma: VmArea, table: PteTable, start: int, first: int, pages: Ints
) -> Ints:
    """do_wp_page() for the read-only PTEs from ``first`` on of small anonymous pages in the
    swap cache, untraced: each decided in address order as a write's swapped-in pages are
    (_wp_decided_in_order: its verdict may drop the page's swap-cache copy, which reads and
    changes only that page and its slot), then reused and copied together."""
    run = pages[: _leading(_swapcache_anon(k.frames, pages))]
    _wp_decided_in_order(k, vma, table, start, first + np.arange(run.size), run)
    k.vmstat["pgfault"] += int(run.size)
    return table.pfn[first : first + run.size].copy()


def by_key(
    f: PageFrames, pages: Ints, decide: Callable[[int], T], *more: Ints
) -> tuple[list[T], Ints]:
    """A decision that reads, of the small page, only KEY_FIELDS (and of the i-th page only
    ``more``'s i-th values), taken once for each distinct value of them, the first page with
    it asked (``decide`` gets its position): the decisions, and which applies to each page."""
    columns = [getattr(f, name)[pages].astype(np.int64) for name in KEY_FIELDS]
    keys = np.stack([*columns, *(m.astype(np.int64) for m in more)], axis=1)
    _, first_of, which = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return [decide(i) for i in first_of.tolist()], which.reshape(-1)


def _wp_large_run(
    k: Kernel, vma: VmArea, table: PteTable, start: int, first: int, pages: Ints
) -> Ints:
    """do_wp_page() for PTE-mapped pages of large folios: every verdict may change what the
    next one reads (a copy the folio's counters, a reuse its anon_vma and the page's
    PG_anon_exclusive), so each page is decided in turn and its old page settled — a copied
    page loses its mapping and reference, a reused one moves and becomes exclusive, as
    wp_reuse_anon() — before the next is asked; the run ends before a copy would drop the
    last reference (the freed frame would be the next allocation). Where _large_copies can
    settle copies in bulk, a run is one folio's."""
    f = k.frames
    heads = heads_of(f, pages)
    if k.policy.large_reuse_reads_folio and not k.tracing:
        news = _large_copies(k, vma, table, start, first, pages, heads)
        if news.size:
            return news
        pages = pages[: _leading(heads == heads.item(0))]
        heads = heads[: pages.size]
    decisions: list[WpDecision] = []
    wp_reuse, count, mm = k.policy.wp_reuse_large, f._count, vma.mm
    for pfn, head in zip(pages.tolist(), heads.tolist(), strict=True):
        d = wp_reuse(k, vma, pfn, head)
        if d.reuse:
            _settle_reuse(k, vma, pfn, head, d)
        else:
            refs = count.item(head)
            if refs <= 1:
                break
            page_remove_folio_pte(k, mm, pfn, head)
            count[head] = refs - 1  # put_page(), not the last reference
        decisions.append(d)
    n = len(decisions)
    if not n:
        return NONE
    which = np.arange(n, dtype=np.int64)
    return _apply(k, vma, table, start, first, pages[:n], decisions, which, settled=True)


# what a copy lowers of the counters a large folio's reuse rule reads: a mapping, a reference
COPY_STEP = {"_large_mapcount": -1, "refcount": -1}


def _large_copies(
    k: Kernel, vma: VmArea, table: PteTable, start: int, first: int, pages: Ints, heads: Ints
) -> Ints:
    """do_wp_page() copying a run's first pages, of one folio, at once (large_copies_settled);
    empty: fewer than two copies."""
    settled = large_copies_settled(k, vma, pages, heads)
    if settled is None:
        return NONE
    d, values = settled
    n = len(values)
    which = np.arange(n, dtype=np.int64)
    logged = Decisions.of_values(d, values)
    return _apply(k, vma, table, start, first, pages[:n], [d] * n, which, True, logged)


def large_copies_settled(
    k: Kernel, vma: VmArea, pages: Ints, heads: Ints
) -> tuple[WpDecision, npt.NDArray[np.int64]] | None:
    """do_wp_page()'s verdicts for a run's first pages, of one folio, taken at once where the
    generation's rule reads of a page its PG_anon_exclusive alone, else the folio's counters
    (6.15, 1da190f4d0a6 __wp_can_reuse_large_anon_folio: policy.large_reuse_reads_folio), and
    the folio is outside the swap cache (else the rule's folio_free_swap may change what the
    next page reads). A copy lowers _large_mapcount and the refcount by one (COPY_STEP) and
    nothing else that rule reads, so while no page is exclusive, the maybe-shared bit stays
    (rmap.removals_keeping_shared) and neither counter comes down to one, page i's decision
    is the first page's with those counters i lower. The rule is asked of the first page and,
    the copies before it made, of the last, which must agree. The pages copied lose their
    mapping and reference (their copies are the caller's to make); returns the first page's
    decision and the values each copy read, a row a page. None: fewer than two copies."""
    f = k.frames
    head = heads.item(0)
    if f.flags.item(head) & PG_swapcache:
        return None
    d = k.policy.wp_reuse_large(k, vma, pages.item(0), head)
    if d.reuse:
        return None
    same = (heads == head) & ((f.flags[pages] & PG_anon_exclusive) == 0)
    refs, large = f._count.item(head), folio_large_mapcount(f, head)
    kept = removals_keeping_shared(k, vma.mm, head)
    n = min(_leading(same), refs - 1, large - 1, kept + 1)
    if n < 2:
        return None
    pages = pages[:n]
    names = [name for name, _ in d.read]
    step = np.array([COPY_STEP.get(name, 0) for name in names], dtype=np.int64)
    values = np.array([v for _, v in d.read], dtype=np.int64) + np.outer(np.arange(n), step)
    rmap_remove_ptes(k, vma.mm, pages[:-1])
    f._count[head] = refs - (n - 1)
    last = k.policy.wp_reuse_large(k, vma, pages.item(n - 1), head)
    expected = d._replace(read=tuple(zip(names, values[-1].tolist(), strict=True)))
    assert last == expected, f"the last copy of a bulk run decided {last}, not {expected}"
    page_remove_folio_pte(k, vma.mm, pages.item(n - 1), head)
    f._count[head] = refs - n  # put_page() of each, never the last reference
    return d, values


def _settle_reuse(k: Kernel, vma: VmArea, pfn: int, head: int, d: WpDecision) -> None:
    """wp_reuse_anon()'s changes to a reused page of a large folio, without its events (the
    run records them in address order): the folio moved to vma's anon_vma, the page made
    exclusive, as the decision says."""
    if d.move_anon_vma:
        assert vma.anon_vma is not None
        k.frames.mapping[head] = vma.anon_vma.id  # page_move_anon_rmap() of the head
    if d.set_exclusive:
        k.frames.flags[pfn] |= PG_anon_exclusive


def _apply(
    k: Kernel,
    vma: VmArea,
    table: PteTable,
    start: int,
    first: int,
    olds: Ints,
    decisions: list[WpDecision],
    which: Ints,
    settled: bool = False,
    logged: Decisions | None = None,
) -> Ints:
    """Carry out each page's verdict: wp_page_reuse in place, wp_page_copy into new frames
    allocated in address order (old -1: the zero page; ``settled``: the old pages already
    lost this mapping and reference, or were moved and made exclusive; ``logged``: the
    copies' decisions as the COW log keeps them, when the caller has them packed)."""
    n = olds.size
    reuse = np.array([d.reuse for d in decisions])[which]
    pos = first + np.arange(n)
    _reuse(k, vma, table, pos[reuse], olds[reuse], decisions, which[reuse], settled)
    copy = ~reuse
    if copy.any():
        args = (pos[copy], olds[copy], decisions, which[copy], settled, logged)
        _copy(k, vma, table, start, *args)
    k.vmstat["pgfault"] += n
    news = table.pfn[first : first + n].copy()
    if k.tracing:
        _trace_wp(k, vma, fault_addrs(start, n), olds, news, [decisions[i] for i in which])
    return news


def _trace_wp(
    k: Kernel, vma: VmArea, addrs: Ints, olds: Ints, news: Ints, decided: list[WpDecision]
) -> None:
    """The events do_wp_page() records page by page, in address order."""
    for addr, old_pfn, new, d in zip(
        addrs.tolist(), olds.tolist(), news.tolist(), decided, strict=True
    ):
        old = None if old_pfn < 0 else old_pfn
        trace_fault(k, vma, addr, "write")
        verdict = "reuse" if d.reuse else "copy"
        k.event("do_wp_page", verdict, addr=addr, pfn=old, read=d.read, rule=d.rule)
        if d.reuse and d.move_anon_vma:  # page_move_anon_rmap() moves the folio: its head
            moved = compound_head(k.frames, old_pfn)
            k.event("page_move_anon_rmap", "move", pfn=moved, detail=f"to {vma.anon_vma}")
        elif not d.reuse:
            trace_copied(k, addr, old, new)


def _reuse(
    k: Kernel,
    vma: VmArea,
    table: PteTable,
    pos: Ints,
    pages: Ints,
    decisions: list[WpDecision],
    which: Ints,
    settled: bool = False,
) -> None:
    """wp_page_reuse(), after page_move_anon_rmap() and PG_anon_exclusive where decided
    (already, if ``settled``)."""
    if not pages.size:
        return
    if not settled:
        f = k.frames
        assert vma.anon_vma is not None
        move = np.array([d.move_anon_vma for d in decisions])[which]
        f.mapping[pages[move]] = vma.anon_vma.id
        exclusive = np.array([d.set_exclusive for d in decisions])[which]
        f.flags[pages[exclusive]] |= PG_anon_exclusive
    table.bits[pos] |= new_pte_bits(vma) | PTE_YOUNG | PTE_DIRTY
    k.vmstat["pgreuse"] += int(pages.size)


def _copy(
    k: Kernel,
    vma: VmArea,
    table: PteTable,
    start: int,
    pos: Ints,
    olds: Ints,
    decisions: list[WpDecision],
    which: Ints,
    settled: bool = False,
    logged: Decisions | None = None,
) -> None:
    """wp_page_copy() for each page: a new frame with the old bytes (zeros for the zero page),
    mapped writable; the old page loses this mapping and its reference (already, if
    ``settled``)."""
    f = k.frames
    anon_vma_prepare(k, vma)
    news = f.alloc_pages(pos.size)
    real = olds >= 0
    f.copy_pages(news[real], olds[real])
    table.pfn[pos] = news
    table.bits[pos] = new_pte_bits(vma) | PTE_YOUNG | PTE_DIRTY
    addrs = fault_addrs(start, int(pos[-1]) - pte_index(start) + 1)[pos - pte_index(start)]
    pages_add_new_anon_rmap(k, news, vma, addrs)
    vma.mm.anon_rss += int((~real).sum())
    if real.any() and not settled:
        rmap_remove_ptes(k, vma.mm, olds[real])
        f._count[olds[real]] -= 1  # put_page(): never the last reference (the caller checks)
    k.cow_log.extend_copies(
        CowCopies(
            len(k.history),
            k.current_op(),
            "wp_page_copy",
            vma.mm.pid,
            Packed(addrs),
            Packed(olds),
            Packed(news),
            Decisions(decisions) if logged is None else logged,
            Packed(which),
        )
    )


def _swapin_run(
    k: Kernel, vma: VmArea, table: PteTable, first: int, last: int, write: bool, start: int
) -> Ints:
    """do_swap_page() for the swap PTEs from ``first`` on whose slots (each once in the run)
    hold a small page in the swap cache, outside KSM. No page's fault reads another's fields
    or slot, and none allocates but the copies do_wp_page makes after a write the mapping does
    not satisfy, in address order. Before 5.18 a write's reuse_swap_page may drop the page
    from the swap cache as it decides: then every page of that key is dropped
    (_drop_as_decided; untraced only: that drop's event falls between the fault's and
    do_swap_page's)."""
    f, swap = k.frames, k.swap
    frees_first = k.policy.swapin_frees_swap_first
    decides_each = write and not frees_first
    if decides_each and k.tracing:
        return NONE
    values = table.pfn[first:last]
    slots = -2 - values[: _leading(values <= -2)]
    pages = swap.cache[slots]
    slots = slots[: _leading((pages >= 0) & (_swapped_dups(slots) == 0))]
    pages = pages[: slots.size]
    pages = pages[: _leading((f.flags[pages] & (PG_head | PG_tail | PG_ksm)) == 0)]
    pages = pages[: _in_place(k, vma, pages, start)]
    n = pages.size
    if not n:
        return NONE
    slots, pos = slots[:n], first + np.arange(n)
    swp_bits = table.bits[pos].copy()
    f._count[pages] += 1  # lookup_swap_cache
    freed = np.zeros(n, dtype=bool)
    if frees_first:
        swap.swap_map[slots] -= 1  # swap_free: the swap cache still holds each slot
        if write:  # should_try_to_free_swap, try_to_free_swap: in the swap cache, not KSM
            freed = only_user(k, f._count[pages], 1)
            freed &= frees_swap(f.flags[pages] & PG_writeback, swap.swap_map[slots])
            _free_swap_cache(k, pages[freed], slots[freed])
    marker, soft_dirty = swp_bits & PTE_SWP_EXCLUSIVE, swp_bits & PTE_SOFT_DIRTY

    def decide(i: int) -> SwapinDecision:
        return k.policy.swapin_decision(
            k, vma, int(pages[i]), write, bool(marker[i]), bool(soft_dirty[i])
        )

    if decides_each:  # reuse_swap_page also reads the slot's swap count
        swapped = swap.swap_map[slots].astype(np.int64)
        decisions, which = by_key(f, pages, decide, marker, soft_dirty, swapped)
        _drop_as_decided(k, pages, slots, which)
    else:
        decisions, which = by_key(f, pages, decide, marker, soft_dirty)
    writable = np.array([d.writable for d in decisions])[which]
    exclusive = np.array([d.exclusive for d in decisions])[which]
    table.pfn[pos] = pages
    table.bits[pos] = PTE_YOUNG | soft_dirty
    if write:
        table.bits[pos[writable]] |= PTE_WRITE | PTE_DIRTY | PTE_SOFT_DIRTY
    else:
        table.bits[pos[writable]] |= PTE_WRITE
    vma.mm.anon_rss += n
    vma.mm.swapents -= n
    _add_anon_rmap(k, vma, pages, fault_addrs(start, n), exclusive)
    if not frees_first:  # swap_free after the mapping; a slot reuse_swap_page emptied is freed
        swap.swap_map[slots] -= 1
        for slot in slots[swap.cache[slots] < 0].tolist():
            swap.release_if_unused(slot)
    k.vmstat["pgfault"] += n
    wp = ~writable if write else np.zeros(n, dtype=bool)
    if write and not wp.all():
        k.vmstat["swapin_reuse"] += int(n - wp.sum())  # the model's: no do_wp_page needed
    if k.tracing:
        decided = [decisions[i] for i in which.tolist()]
        _trace_swapins(k, vma, table, start, write, slots, pages, freed, wp, decided)
    elif wp.any():
        _wp_decided_in_order(k, vma, table, start, pos[wp], pages[wp])
    return table.pfn[first : first + n].copy()


def _in_place(k: Kernel, vma: VmArea, pages: Ints, start: int) -> int:
    """How many of the pages faulted from ``start`` on, from the first, ksm_might_need_to_copy()
    maps as they are (each its own page: no fault of the run changes another's anon_vma or
    index); the run stops before a page it copies, which do_swap_page copies alone."""
    for i in np.flatnonzero(k.frames.mapping[pages] != 0).tolist():
        if not ksm.anon_in_place(k, vma, start + (i << PAGE_SHIFT), int(pages[i])):
            return i
    return pages.size


def _drop_as_decided(k: Kernel, pages: Ints, slots: Ints, which: Ints) -> None:
    """reuse_swap_page() of a write's swap-in before 5.18 (do_swap_page, 4.5 .. 5.17, until
    c145e0b47c77) drops a small page all ours from the swap cache as it decides. It reads of
    the page only its fields and its slot's swap count (by_key's key) and changes only that
    page and slot, which no other page's fault reads: so each page whose key's asked page it
    dropped is dropped too (try_to_free_swap's steps; the slot keeps this fault's entry)."""
    f = k.frames
    asked = np.unique(which, return_index=True)[1]  # the page each decision was asked of
    kept = (f.flags[pages] & PG_swapcache) != 0
    drop = ~kept[asked][which] & kept
    _free_swap_cache(k, pages[drop], slots[drop])


def _wp_decided_in_order(
    k: Kernel, vma: VmArea, table: PteTable, start: int, pos: Ints, olds: Ints
) -> None:
    """do_wp_page() of each small page mapped read-only at pos, untraced, that a write's
    swap-in mapped so or that is in the swap cache: the generation decides each in address
    order (wp_reuse may first drop the swap-cache copy — reuse_swap_page before 5.9,
    try_to_free_swap after — which reads only the page and its slot), then the reuses and
    copies are made together. No copy drops an old page's last reference (which would free
    its frame for the next copy): a page wp_reuse copies is mapped more than once or
    referenced beyond its mapping (a write's swap-in: it kept a reference when it was not
    mapped writable; 5.18: page_count == 1 maps it writable; before, reuse_swap_page left it
    in the swap cache), and wp_reuse reuses a page left with one."""
    decisions = [k.policy.wp_reuse(k, vma, pfn) for pfn in olds.tolist()]
    reuse = np.array([d.reuse for d in decisions])
    assert (k.frames._count[olds[~reuse]] > 1).all(), "a copy would free its old page"
    which = np.arange(olds.size, dtype=np.int64)
    _reuse(k, vma, table, pos[reuse], olds[reuse], decisions, which[reuse])
    if not reuse.all():
        _copy(k, vma, table, start, pos[~reuse], olds[~reuse], decisions, which[~reuse])


def _swapped_dups(slots: Ints) -> Ints:
    """1 where a slot comes again after its first PTE in the run, else 0."""
    dups = np.ones(slots.size, dtype=np.int64)
    dups[np.unique(slots, return_index=True)[1]] = 0
    return dups


def _free_swap_cache(k: Kernel, pages: Ints, slots: Ints) -> None:
    """try_to_free_swap() of small pages no swap PTE needs any more: each dirtied and out of
    the swap cache (delete_from_swap_cache), its slot freed, the cache's reference dropped (the
    fault's is left)."""
    f, swap = k.frames, k.swap
    f.flags[pages] = (f.flags[pages] | PG_dirty) & flags_without(PG_swapcache)
    for page, slot in zip(pages.tolist(), slots.tolist(), strict=True):
        f.swapcache.remove(page)
        swap.cache[slot] = -1
        swap.release_if_unused(slot)
    f._count[pages] -= 1


def _add_anon_rmap(
    k: Kernel, vma: VmArea, pages: Ints, addrs: Ints, exclusive: npt.NDArray[np.bool_]
) -> None:
    """page_add_anon_rmap() of small pages, one PTE each: PG_anon_exclusive where exclusive
    (5.19), and a page without an anon_vma gets vma's own (exclusive) or its root's, and the
    index of its address (__page_set_anon_rmap)."""
    f = k.frames
    f._mapcount[pages] += 1
    if k.policy.anon_exclusive:
        f.flags[pages[exclusive]] |= PG_anon_exclusive
    new = f.mapping[pages] == 0
    if not new.any():
        return
    assert vma.anon_vma is not None and vma.anon_vma.root is not None
    own, root = vma.anon_vma.id, vma.anon_vma.root.id
    f.mapping[pages[new]] = np.where(exclusive[new], own, root)
    f.index[pages[new]] = ((addrs[new] - vma.vm_start) >> PAGE_SHIFT) + vma.vm_pgoff


def _trace_swapins(
    k: Kernel,
    vma: VmArea,
    table: PteTable,
    start: int,
    write: bool,
    slots: Ints,
    pages: Ints,
    freed: npt.NDArray[np.bool_],
    wp: npt.NDArray[np.bool_],
    decided: list[SwapinDecision],
) -> None:
    """Each fault's events as do_swap_page() records them, in address order, and do_wp_page()
    where a write found the page mapped read-only."""
    kind = "write" if write else "read"
    for addr, slot, page, drop, copy, d in zip(
        fault_addrs(start, pages.size).tolist(),
        slots.tolist(),
        pages.tolist(),
        freed.tolist(),
        wp.tolist(),
        decided,
        strict=True,
    ):
        if k.tracing:
            trace_fault(k, vma, addr, kind)
            if drop:
                k.event(
                    "delete_from_swap_cache", pfn=page, detail=f"slot {slot} leave the swap cache"
                )
            trace_swapin(k, addr, page, d, f"from the swap cache, slot {slot}", 1)
        if copy:
            do_wp_page(k, vma, addr, table, pte_index(addr))
