"""mm/swapfile.c: the swap device — each slot's count of swap PTEs (swap_map) and its swap-cache
page — and reuse_swap_page(), the write fault's "is this page all ours?" (4.5 to 5.17; 5.18
removed it, 03104c2c5db8).

The swap area is one of SWAP_DEVICES (Config.swap_device; docs/sources-swap.md §1a, §1g): a swap
file on a rotational disk (the default), a rotational or non-rotational block device, or zram.
Which of them gives a THP a run of slots, so that it is swapped out whole, is the generation's
(Policy.swaps_whole). zram writes synchronously (SWP_SYNCHRONOUS_IO from 4.15; its rw_page
before); the others are under writeback until end_page_writeback. The device is never full
(vm_swap_full() is false). zram asks for stable writes, but a page is never caught under
writeback on it, so the rules that read SWP_STABLE_WRITES (4.10 f05714293a59; 5.19's
exclusivity) are never reached.

A large folio in the swap cache is there whole: page i holds slot first + i (page->private), the
cache holds one reference per page on the head, PG_dirty and PG_writeback live on the head.

With CONFIG_SWAP=n nothing is swapped, and reuse_swap_page is the include/linux/swap.h macro,
which asks for a mapcount of exactly 1. The mapcount compared is the generation's (policy).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from cowlab.mm.constants import PAGE_SIZE, PG_dirty, PG_swapcache, PG_writeback
from cowlab.mm.decision import DECISIONS_KEPT, Reads, ReuseCount, ReuseDecision
from cowlab.mm.mm import (
    Field,
    PageDoubleMap,
    PageKsm,
    PageSwapCache,
    PageTransCompound,
    compound_head,
    compound_mapcount,
    folio_mapped,
    folio_nr_pages,
    put_page,
)
from cowlab.mm.page_alloc import PageFrames, flags_without

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


# the swap areas a machine may have (Config.swap_device): a swap file on a rotational disk, a
# rotational or non-rotational block device (a partition), zram
SWAP_DEVICES = ("file", "hdd", "ssd", "zram")


class SwapInfo:
    """struct swap_info_struct: swap_map (swap PTEs per slot), the swap cache (the page of each
    slot, -1 for none: SWAP_HAS_CACHE) and what the device holds for the slots written.
    ``device`` is the kind of area (SWAP_DEVICES)."""

    def __init__(self, device: str = "file") -> None:
        self.device = device
        self.swap_map: npt.NDArray[np.int32] = np.zeros(1024, dtype=np.int32)
        self.cache: npt.NDArray[np.int64] = np.full(1024, -1, dtype=np.int64)
        self.data: dict[int, bytes] = {}  # slot -> bytes written (trimmed after the last nonzero)
        self.nr = 0  # slots ever handed out
        self._free: list[int] = []  # freed slots below nr (min-heap: scan_swap_map's lowest)

    @property
    def synchronous(self) -> bool:
        """SWP_SYNCHRONOUS_IO (4.15), and before it zram's rw_page: the write of a page ends
        before swap_writepage returns."""
        return self.device == "zram"

    def get_swap_page(self) -> int:
        """get_swap_page(): the lowest free slot."""
        if self._free:
            return heapq.heappop(self._free)
        offset = self.nr
        self._reserve(offset + 1)
        self.nr += 1
        return offset

    def get_swap_page_each(self, n: int) -> npt.NDArray[np.int64]:
        """n get_swap_page() calls in turn: the n lowest free slots, then new ones."""
        reused = [heapq.heappop(self._free) for _ in range(min(n, len(self._free)))]
        fresh = n - len(reused)
        self._reserve(self.nr + fresh)
        slots = np.array(reused + list(range(self.nr, self.nr + fresh)), dtype=np.int64)
        self.nr += fresh
        return slots

    def get_swap_pages(self, nr: int) -> int:
        """get_swap_pages() of a large folio: a free run of nr slots starting at a multiple of
        nr (a whole cluster for a THP, swap_alloc_cluster). The model takes the lowest such run;
        slots it skips above the old end become free slots."""
        if nr == 1:
            return self.get_swap_page()
        used = (self.swap_map[: self.nr] > 0) | (self.cache[: self.nr] >= 0)
        start = 0
        while start < self.nr and used[start : start + nr].any():
            start += nr
        end = start + nr
        self._reserve(end)
        for skipped in range(self.nr, start):
            heapq.heappush(self._free, skipped)
        self._free = [slot for slot in self._free if not start <= slot < end]
        heapq.heapify(self._free)
        self.nr = max(self.nr, end)
        return start

    def _reserve(self, end: int) -> None:
        while end > self.swap_map.size:
            self.swap_map = np.concatenate([self.swap_map, np.zeros_like(self.swap_map)])
            self.cache = np.concatenate([self.cache, np.full_like(self.cache, -1)])

    def release_if_unused(self, offset: int) -> None:
        """swap_entry_free(): no swap PTE and no swap-cache page left, the slot is free."""
        if self.swap_map[offset] == 0 and self.cache[offset] < 0:
            self.data.pop(offset, None)
            heapq.heappush(self._free, offset)

    def in_use(self) -> npt.NDArray[np.int64]:
        """Every slot a swap PTE or a swap-cache page holds."""
        n = self.nr
        return np.flatnonzero((self.swap_map[:n] > 0) | (self.cache[:n] >= 0)).astype(np.int64)

    def slot_bytes(self, frames: PageFrames, offset: int) -> bytes:
        """What a swap-in of this slot reads: its swap-cache page, else what was written."""
        data = self.slot_data(frames, offset)
        return data + bytes(PAGE_SIZE - len(data))

    def slot_data(self, frames: PageFrames, offset: int) -> bytes:
        """slot_bytes trimmed after the last nonzero byte, as the content store keeps a page."""
        page = int(self.cache[offset])
        return frames.page_data(page) if page >= 0 else self.data.get(offset, b"")


def swap_duplicate(k: Kernel, offsets: npt.NDArray[np.int64]) -> None:
    """swap_duplicate(): one more swap PTE for each slot (fork, try_to_unmap_one)."""
    np.add.at(k.swap.swap_map, offsets, 1)


def swap_free(k: Kernel, offset: int) -> None:
    """swap_free(): a swap PTE is gone; the slot is freed once nothing else holds it."""
    s = k.swap
    s.swap_map[offset] -= 1
    s.release_if_unused(offset)


def page_swapcount(k: Kernel, pfn: int) -> int:
    """page_swapcount(): the swap PTEs of the slot this swap-cache page belongs to."""
    if not PageSwapCache(k.frames, pfn):
        return 0
    return int(k.swap.swap_map[int(k.frames.private[pfn])])


def page_swapped(k: Kernel, pfn: int) -> bool:
    """page_swapped() (4.14) / folio_swapped(): a swap PTE still refers to a slot of the page's
    folio (any of a large folio's slots)."""
    f = k.frames
    head = compound_head(f, pfn)
    offset, nr = int(f.private[head]), folio_nr_pages(f, head)
    if nr == 1:  # one element read, not a slice: try_to_free_swap asks it of every small page
        return k.swap.swap_map.item(offset) != 0
    return bool(k.swap.swap_map[offset : offset + nr].any())


def add_to_swap_cache(k: Kernel, head: int, offset: int) -> None:
    """add_to_swap_cache(): the folio's pages become the swap-cache pages of slots offset + i
    (one reference each, on the head)."""
    f = k.frames
    nr = folio_nr_pages(f, head)
    for page, slot in zip(range(head, head + nr), range(offset, offset + nr), strict=True):
        f.swapcache.add(page)  # scalar stores: a small page is the hot case
        f.private[page] = slot
        f.flags[page] |= PG_swapcache
        k.swap.cache[slot] = page
    f._count[head] += nr


def delete_from_swap_cache(k: Kernel, pfn: int) -> None:
    """delete_from_swap_cache(): the page's folio leaves the swap cache and drops its references;
    each slot is freed if no swap PTE holds it. The folio may be freed."""
    f = k.frames
    head = int(compound_head(f, pfn))
    nr = folio_nr_pages(f, head)
    offset = int(f.private[head])
    without = flags_without(PG_swapcache)
    for page, slot in zip(range(head, head + nr), range(offset, offset + nr), strict=True):
        f.flags[page] &= without  # scalar stores: a small page is the hot case
        f.swapcache.remove(page)
        k.swap.cache[slot] = -1
        k.swap.release_if_unused(slot)
    if k.tracing:
        slots = f"slot {offset}" if nr == 1 else f"slots {offset}..{offset + nr - 1}"
        k.event("delete_from_swap_cache", pfn=head, detail=f"{slots} leave the swap cache")
    put_page(k, head, nr)


def try_to_free_swap(k: Kernel, pfn: int) -> bool:
    """try_to_free_swap() / folio_free_swap(): drop the swap-cache copy of a folio no swap PTE
    needs any more (page_swapped), unless it is being written."""
    f = k.frames
    head = compound_head(f, pfn)
    if not PageSwapCache(f, head):
        return False
    if not frees_swap(f.flags.item(head) & PG_writeback, page_swapped(k, head)):
        return False
    f.flags[head] |= PG_dirty
    delete_from_swap_cache(k, head)
    return True


def should_try_to_free_swap(k: Kernel, pfn: int, write: bool) -> bool:
    """should_try_to_free_swap() (5.18, c145e0b47c77): a write swap-in that looks like the
    folio's only user drops the swap-cache copy first: refcount 2 (6.11: 1 + the folio's pages);
    swap full and mlock are not modelled."""
    f = k.frames
    if not write or not PageSwapCache(f, pfn) or PageKsm(f, pfn):
        return False
    head = compound_head(f, pfn)
    return bool(only_user(k, f._count.item(head), folio_nr_pages(f, head)))


def frees_swap(writeback: Field, swapped: Field) -> Field:
    """try_to_free_swap() of a folio in the swap cache (4.5, the model's base; every slot of a
    THP from 4.14, page_swapped): not under writeback, no swap PTE left on its slots. The one
    statement, of one folio's values (the page-by-page path) or a run of small pages' (arrays:
    the swap-in run)."""
    return (writeback == 0) & (swapped == 0)


def only_user(k: Kernel, count: Field, nr: int) -> Field:
    """should_try_to_free_swap()'s refcount test (5.18 c145e0b47c77): the swap cache's and the
    fault's references only, 2 (6.11 4c3f96643687: 1 + the folio's pages). Of one
    folio's count (the page-by-page path) or a run of small pages' (an array, nr 1)."""
    return count == (1 + nr if k.policy.swapin_maps_whole_folio else 2)


def free_swap_and_cache(k: Kernel, offset: int) -> None:
    """free_swap_and_cache(): a zapped swap PTE; the swap-cache folio goes too once no swap PTE
    is left on any of its slots (4.14 swap_page_trans_huge_swapped), nothing maps it and it is
    not under writeback."""
    swap_free(k, offset)
    s = k.swap
    page = int(s.cache[offset])
    if page < 0 or s.swap_map[offset]:
        return
    f = k.frames
    head = compound_head(f, page)
    if page_swapped(k, head) or f.flags[head] & PG_writeback or folio_mapped(f, head):
        return
    f.flags[head] |= PG_dirty  # whoever still holds it must not lose its bytes
    delete_from_swap_cache(k, head)


def reuse_swap_page(
    k: Kernel, pfn: int, mapcount: Callable[[PageFrames, int], ReuseCount]
) -> ReuseDecision:
    """reuse_swap_page(page, &total_mapcount): reuse when the generation's mapcount, plus the
    slot's swap PTEs for a swap-cache page, is <= 1; a page that is then all ours leaves the
    swap cache (it will be dirtied) unless it is being written."""
    f = k.frames
    if k.config.swap and PageKsm(f, pfn):
        return ReuseDecision(False, 0, (("PageKsm", 1),), "never for a KSM page")
    if PageTransCompound(f, pfn) and PageSwapCache(f, pfn) and k.policy.thp_swap_counts:
        return _reuse_thp_in_swap_cache(k, pfn)
    count = mapcount(f, pfn)
    if count.mapcount is None:
        return ReuseDecision(False, count.total_mapcount, count.read, count.rule)
    if not k.config.swap:  # the CONFIG_SWAP=n macro of include/linux/swap.h asks for exactly 1
        rule = count.rule.replace("<=", "==")
        return ReuseDecision(count.mapcount == 1, count.total_mapcount, count.read, rule)
    if count.mapcount > 1 or not PageSwapCache(f, pfn):
        return _as_counted(count)
    swapped = page_swapcount(k, pfn)
    total = count.mapcount + swapped
    read = (*count.read, ("page_swapcount", swapped))
    rule = count.rule.replace(" <= 1", " + page_swapcount <= 1")
    if total == 1 and not f.flags[pfn] & PG_writeback:
        f.flags[pfn] |= PG_dirty
        delete_from_swap_cache(k, pfn)
    return ReuseDecision(total <= 1, count.total_mapcount, read, rule)


@lru_cache(maxsize=DECISIONS_KEPT)
def _as_counted(count: ReuseCount) -> ReuseDecision:
    """reuse_swap_page()'s answer where the swap cache adds nothing (mm/swapfile.c, 4.5 to
    5.17; COW fixes part 1 removed it in 5.18): the count's own, made once per count."""
    assert count.mapcount is not None
    return ReuseDecision(count.mapcount <= 1, count.total_mapcount, count.read, count.rule)


def page_trans_huge_map_swapcount(k: Kernel, head: int) -> tuple[int, int, int, Reads]:
    """page_trans_huge_map_swapcount() (4.14, ba3c4ce6def4) of a THP in the swap cache: the
    largest over its pages of (mapcount + swap count of its slot), less the DoubleMap offset,
    plus the PMD mappings. Returns it, total_mapcount, total_swapcount and what was read."""
    f = k.frames
    nr = folio_nr_pages(f, head)
    offset = int(f.private[head])
    own = f._mapcount[head : head + nr].astype(np.int64) + 1
    swaps = k.swap.swap_map[offset : offset + nr].astype(np.int64)
    worst = int((own + swaps).argmax())
    count, total_map, total_swap = int(own[worst] + swaps[worst]), int(own.sum()), int(swaps.sum())
    if PageDoubleMap(f, head):
        count -= 1
        total_map -= nr
    pmd = compound_mapcount(f, head)
    read: Reads = (("page_trans_huge_map_swapcount", count + pmd), ("total_swapcount", total_swap))
    return count + pmd, total_map + pmd, total_swap, (*read, ("most-counted subpage", worst))


def _reuse_thp_in_swap_cache(k: Kernel, pfn: int) -> ReuseDecision:
    """reuse_swap_page() of 4.14 for a page of a THP in the swap cache: reuse iff the largest
    map + swap count is <= 1; the THP leaves the swap cache (whole) only when it is 1 and no
    other page of it still has a swap PTE, and not while it is being written. The caller's
    total is total_mapcount + total_swapcount."""
    f = k.frames
    head = compound_head(f, pfn)
    count, total_map, total_swap, read = page_trans_huge_map_swapcount(k, head)
    mine = page_swapcount(k, pfn)
    read += (("page_swapcount", mine),)
    if count == 1 and total_swap == mine and not f.flags[head] & PG_writeback:
        f.flags[head] |= PG_dirty
        delete_from_swap_cache(k, head)
    rule = "page_trans_huge_map_swapcount <= 1"
    return ReuseDecision(count <= 1, total_map + total_swap, read, rule)
