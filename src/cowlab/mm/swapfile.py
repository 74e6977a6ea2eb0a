"""mm/swapfile.c: the swap device — each slot's count of swap PTEs (swap_map) and its swap-cache
page — and reuse_swap_page(), the write fault's "is this page all ours?" (4.5 to 5.17; 5.18
removed it, 03104c2c5db8).

The model has one swap device: a swap file on a rotational disk. Such a device has no swap
clusters, so the kernel cannot give a THP a run of slots and splits it before swap-out (every
release; docs/sources-swap.md). Writes are asynchronous: a page stays under writeback until
end_page_writeback. The device is never full (vm_swap_full() is false) and has no stable-writes
requirement (SWP_STABLE_WRITES unset).

With CONFIG_SWAP=n nothing is swapped, and reuse_swap_page is the include/linux/swap.h macro,
which asks for a mapcount of exactly 1. The mapcount compared is the generation's (policy).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from cowlab.mm.constants import PAGE_SIZE, PG_dirty, PG_swapcache, PG_writeback
from cowlab.mm.decision import ReuseCount, ReuseDecision
from cowlab.mm.mm import PageKsm, PageSwapCache, put_page
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

    def get_swap_page(self) -> int:
        """get_swap_page(): the lowest free slot."""
        if self._free:
            return heapq.heappop(self._free)
        offset = self.nr
        if offset >= self.swap_map.size:
            self.swap_map = np.concatenate([self.swap_map, np.zeros_like(self.swap_map)])
            self.cache = np.concatenate([self.cache, np.full_like(self.cache, -1)])
        self.nr += 1
        return offset

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
        page = int(self.cache[offset])
        if page >= 0:
            return frames.page_bytes(page)
        data = self.data.get(offset, b"")
        return data + bytes(PAGE_SIZE - len(data))


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


def add_to_swap_cache(k: Kernel, pfn: int, offset: int) -> None:
    """add_to_swap_cache(): the page becomes the slot's swap-cache page (+1 reference)."""
    f = k.frames
    f.flags[pfn] |= PG_swapcache
    f.swapcache.add(pfn)
    f.private[pfn] = offset
    f._count[pfn] += 1
    k.swap.cache[offset] = pfn


def delete_from_swap_cache(k: Kernel, pfn: int) -> None:
    """delete_from_swap_cache(): the page leaves the swap cache and drops its reference; the
    slot is freed if no swap PTE holds it. The page may be freed."""
    f = k.frames
    offset = int(f.private[pfn])
    f.flags[pfn] &= flags_without(PG_swapcache)
    f.swapcache.remove(pfn)
    k.swap.cache[offset] = -1
    k.swap.release_if_unused(offset)
    k.event("delete_from_swap_cache", pfn=pfn, detail=f"slot {offset} leaves the swap cache")
    put_page(k, pfn)


def try_to_free_swap(k: Kernel, pfn: int) -> bool:
    """try_to_free_swap() / folio_free_swap(): drop the swap-cache copy of a page no swap PTE
    needs any more, unless it is being written."""
    f = k.frames
    if not PageSwapCache(f, pfn) or f.flags[pfn] & PG_writeback or page_swapcount(k, pfn):
        return False
    f.flags[pfn] |= PG_dirty
    delete_from_swap_cache(k, pfn)
    return True


def should_try_to_free_swap(k: Kernel, pfn: int, write: bool) -> bool:
    """should_try_to_free_swap() (5.18, c145e0b47c77): a write swap-in that looks like the
    page's only user drops the swap-cache copy first (swap full and mlock are not modelled)."""
    f = k.frames
    return write and PageSwapCache(f, pfn) and not PageKsm(f, pfn) and int(f._count[pfn]) == 2


def free_swap_and_cache(k: Kernel, offset: int) -> None:
    """free_swap_and_cache(): a zapped swap PTE; the swap-cache page goes too once no swap PTE
    is left, the page is unmapped and not under writeback."""
    swap_free(k, offset)
    s = k.swap
    page = int(s.cache[offset])
    if page < 0 or s.swap_map[offset]:
        return
    f = k.frames
    if not f.flags[page] & PG_writeback and f._mapcount[page] < 0:
        f.flags[page] |= PG_dirty  # whoever still holds it must not lose its bytes
        delete_from_swap_cache(k, page)


def reuse_swap_page(
    k: Kernel, pfn: int, mapcount: Callable[[PageFrames, int], ReuseCount]
) -> ReuseDecision:
    """reuse_swap_page(page, &total_mapcount): reuse when the generation's mapcount, plus the
    slot's swap PTEs for a swap-cache page, is <= 1; a page that is then all ours leaves the
    swap cache (it will be dirtied) unless it is being written."""
    f = k.frames
    if k.config.swap and PageKsm(f, pfn):
        return ReuseDecision(False, 0, (("PageKsm", 1),), "never for a KSM page")
    count = mapcount(f, pfn)
    if count.mapcount is None:
        return ReuseDecision(False, count.total_mapcount, count.read, count.rule)
    if not k.config.swap:  # the CONFIG_SWAP=n macro of include/linux/swap.h asks for exactly 1
        rule = count.rule.replace("<=", "==")
        return ReuseDecision(count.mapcount == 1, count.total_mapcount, count.read, rule)
    total, read, rule = count.mapcount, count.read, count.rule
    if total <= 1 and PageSwapCache(f, pfn):
        swapped = page_swapcount(k, pfn)
        total += swapped
        read += (("page_swapcount", swapped),)
        rule = rule.replace(" <= 1", " + page_swapcount <= 1")
        if total == 1 and not f.flags[pfn] & PG_writeback:
            f.flags[pfn] |= PG_dirty
            delete_from_swap_cache(k, pfn)
    return ReuseDecision(total <= 1, count.total_mapcount, read, rule)
