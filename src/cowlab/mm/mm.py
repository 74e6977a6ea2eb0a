"""Per-page helpers of include/linux/mm.h, mm/util.c and mm/swap.c (4.5 semantics).

Every function takes the frames (or the kernel, when it may free memory) and a pfn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from cowlab.errors import KernelBug
from cowlab.mm.constants import (
    PG_anon_exclusive,
    PG_dirty,
    PG_double_map,
    PG_head,
    PG_ksm,
    PG_mm_ids_shared,
    PG_reserved,
    PG_swapcache,
    PG_tail,
)
from cowlab.mm.page_alloc import PageFrames

if TYPE_CHECKING:
    from cowlab.kernel import Kernel

I64 = npt.NDArray[np.int64]
# one page's value (an int or a bool) or a run's (an array): a rule stated once reads either
Field = TypeVar("Field", int, npt.NDArray[Any])


def compound_head(f: PageFrames, pfn: int) -> int:
    """compound_head(): the head for a tail page, the page itself otherwise."""
    return pfn & ~((1 << f.order_at[pfn]) - 1) if f.flags_at[pfn] & PG_tail else pfn


def heads_of(f: PageFrames, pfns: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """compound_head() of many pages at once."""
    tail = (f.flags[pfns] & PG_tail) != 0
    return np.where(tail, pfns & ~((1 << f.order[pfns].astype(np.int64)) - 1), pfns)


def folio_nr_pages(f: PageFrames, head: int) -> int:
    """folio_nr_pages(): 512 for a PMD-sized THP, 4..256 for an mTHP, 1 for a small page."""
    return 1 << f.order_at[head]


def PageTransCompound(f: PageFrames, pfn: int) -> bool:
    """PageTransCompound(): true for the head and every tail of a THP."""
    return bool(f.flags_at[pfn] & (PG_head | PG_tail))


def PageTransHuge(f: PageFrames, pfn: int) -> bool:
    """PageTransHuge(): the head of a THP (callers never pass a tail)."""
    return bool(f.flags[pfn] & PG_head)


def PageDoubleMap(f: PageFrames, head: int) -> bool:
    """PageDoubleMap(): PG_double_map lives in page[1].flags."""
    return bool(f.flags[head + 1] & PG_double_map)


def PageAnon(f: PageFrames, pfn: int) -> bool:
    return f.mapping_at[compound_head(f, pfn)] != 0


def PageKsm(f: PageFrames, pfn: int) -> bool:
    return bool(f.flags_at[compound_head(f, pfn)] & PG_ksm)


def PageSwapCache(f: PageFrames, pfn: int) -> bool:
    return bool(f.flags_at[pfn] & PG_swapcache)


def is_zero_pfn(f: PageFrames, pfn: int) -> bool:
    return bool(f.flags[pfn] & PG_reserved)


def compound_mapcount(f: PageFrames, pfn: int) -> int:
    """compound_mapcount(): PMD mappings of the THP (the counter lives in page[1])."""
    return int(f.compound_mapcount[compound_head(f, pfn) + 1]) + 1


def small_page_mapcount(f: PageFrames, pfn: int) -> int:
    """page_mapcount() of a page no compound page holds: its _mapcount, which starts at -1."""
    return f._mapcount_at[pfn] + 1


def page_mapcount(f: PageFrames, pfn: int) -> int:
    """page_mapcount() / __page_mapcount(): PTE maps of this subpage plus PMD maps, minus DoubleMap.

    Not exact for a THP: it cannot tell two PMD maps from one PMD map plus this subpage's own PTE.
    """
    own = small_page_mapcount(f, pfn)
    if not PageTransCompound(f, pfn):
        return own
    head = compound_head(f, pfn)
    return own + compound_mapcount(f, head) - int(PageDoubleMap(f, head))


GUP_PIN_COUNTING_BIAS = 1024


def PageAnonExclusive(f: PageFrames, pfn: int) -> bool:
    """PageAnonExclusive() (5.19): a PMD-mapped THP keeps the bit on its head only."""
    return bool(f.flags_at[pfn] & PG_anon_exclusive)


def page_maybe_dma_pinned(f: PageFrames, pfn: int) -> bool:
    """page_maybe_dma_pinned() (5.7): a compound page's exact pin count, else _count >= 1024."""
    head = compound_head(f, pfn)
    if f.flags[head] & PG_head:
        return bool(f._pincount[head] > 0)
    return bool(f._count[head] >= GUP_PIN_COUNTING_BIAS)


def pages_maybe_dma_pinned(f: PageFrames, pfns: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """page_maybe_dma_pinned() of many pages at once."""
    heads = heads_of(f, pfns)
    compound = (f.flags[heads] & PG_head) != 0
    return np.where(compound, f._pincount[heads] > 0, f._count[heads] >= GUP_PIN_COUNTING_BIAS)


def folio_mapped(f: PageFrames, head: int) -> bool:
    """folio_mapped() / page_mapped(): any PTE or PMD maps a page of the folio."""
    if not f.flags[head] & PG_head:
        return bool(f._mapcount[head] >= 0)
    nr = folio_nr_pages(f, head)
    return compound_mapcount(f, head) > 0 or bool((f._mapcount[head : head + nr] >= 0).any())


def folio_large_mapcount(f: PageFrames, head: int) -> int:
    """folio_large_mapcount() (6.x): every PTE and PMD mapping of the large folio."""
    return int(f._large_mapcount[head]) + 1


def average_page_mapcount(total: I64, entire: I64, order: I64) -> I64:
    """folio_average_page_mapcount() (fs/proc/internal.h, 6.15 .. 6.18.2), what /proc/kpagecount
    reports for every page of a large folio under CONFIG_NO_PAGE_MAPCOUNT: its PTE mappings
    (total minus the PMD ones) shared out over its pages, rounded to nearest, plus the PMD
    mappings; at least 1 while anything maps it. Element-wise over arrays of folios."""
    ptes = total - entire
    avg = np.maximum(((ptes + ((1 << order) >> 1)) >> order) + entire, 1)
    return np.where(total <= 0, 0, np.where(ptes <= 0, entire, avg))


def page_mapcount_reported(k: Kernel, pfn: int) -> int:
    """The mapcount of a page as the build reports it (kpagecount): page_mapcount(), or for a
    large folio under CONFIG_NO_PAGE_MAPCOUNT its average_page_mapcount()."""
    f = k.frames
    if k.page_mapcount or not PageTransCompound(f, pfn):
        return page_mapcount(f, pfn)
    head = compound_head(f, pfn)
    total, entire = folio_large_mapcount(f, head), compound_mapcount(f, head)
    one = np.array([total, entire, f.order.item(head)], dtype=np.int64)
    return int(average_page_mapcount(one[0:1], one[1:2], one[2:3]).item())


def folio_maybe_mapped_shared(f: PageFrames, head: int) -> bool:
    """folio_maybe_mapped_shared() (6.15): MM-id tracking saw a second MM map the folio."""
    return bool(f.flags_at[head] & PG_mm_ids_shared)


def folio_ref_count(f: PageFrames, head: int) -> int:
    """folio_ref_count(): the folio's references, on its head."""
    return f._count_at[head]


def page_count(f: PageFrames, pfn: int) -> int:
    """page_count(): the head's _count (tails carry no references since 4.5's ddc58f27f9ee)."""
    return f._count_at[compound_head(f, pfn)]


def get_page(f: PageFrames, pfn: int, nr: int = 1) -> None:
    """get_page(): a reference on the compound head."""
    f._count[compound_head(f, pfn)] += nr


def set_page_dirty(f: PageFrames, pfn: int) -> None:
    """set_page_dirty(): the (compound) page must be written before it is dropped."""
    f.flags[compound_head(f, pfn)] |= PG_dirty


def put_page(k: Kernel, pfn: int, nr: int = 1) -> None:
    """put_page(): drop a reference on the head; the last one frees the (compound) page."""
    f = k.frames
    head = compound_head(f, pfn)
    count = f._count_at[head] - nr
    if count < 0:
        raise KernelBug(f"put_page: _count of pfn {head:#x} went negative")
    f._count_at[head] = count
    if count == 0:
        __put_page(k, head)


def put_pages(k: Kernel, heads: npt.NDArray[np.int64], nrs: npt.NDArray[np.int64]) -> None:
    """put_page() nrs[i] times on each head, in order; small pages whose last reference goes
    are freed together."""
    f = k.frames
    counts = f._count[heads] - nrs
    if (counts < 0).any():
        head = int(heads[np.argmax(counts < 0)])
        raise KernelBug(f"put_page: _count of pfn {head:#x} went negative")
    f._count[heads] = counts
    dead = heads[counts == 0]
    if not ((f.flags[dead] & (PG_head | PG_ksm)) == 0).all():
        for head in dead.tolist():
            __put_page(k, head)
    elif dead.size:
        f.free_pages(dead)


def __put_page(k: Kernel, head: int) -> None:
    """__put_page(): free_transhuge_page for THPs (also leaves the split queue), else free."""
    f = k.frames
    flags = f.flags_at[head]
    if flags & PG_ksm:
        k.ksm.drop(-int(f.mapping[head]))
    if flags & PG_head:
        k.deferred_split.discard(head)
        f.free_folio(head)
    else:
        f.free_page(head)
