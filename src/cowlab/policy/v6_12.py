"""Linux 6.12: splitting a THP maps its zero-filled pages to the zero page; swap-in from zram may
allocate an mTHP; a zero-filled folio is swapped out without I/O."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "6.12",
    ("b1f202060afe",),
    "mm: remap unused subpages to shared zeropage when splitting isolated thp",
    "split_huge_page maps the zero-filled subpages of an anonymous THP to the shared zero page "
    "and frees them",
    "6.9.0 -> 6.12.0 mm/huge_memory.c remap_page, RMP_USE_SHARED_ZEROPAGE (bracketed)",
)
class SplitMapsZeropage(Policy):
    split_maps_unused_to_zeropage = True


@landed(
    "6.12",
    ("242d12c98174",),
    "mm: support large folios swap-in for sync io devices",
    "on the swap-cache bypass (zram), do_swap_page allocates the highest mTHP order below PMD "
    "size enabled for the VMA whose PTEs are the folio's consecutive swap PTEs, slots aligned "
    "as the address and none in the swap cache, and maps it whole",
    "6.9.0 -> 6.12.0 mm/memory.c alloc_swap_folio, can_swapin_thp, thp_swap_suitable_orders "
    "(bracketed; id confirmed; docs/sources-swap.md §3g)",
)
class LargeFolioSwapin(Policy):
    swapin_large_folio = True


@landed(
    "6.12",
    ("0ca0c24e3211",),
    "mm: store zero pages to be swapped out in a bitmap",
    "reclaim does not write a folio whose every byte is zero: swap_writeout marks its slots in "
    "the device's zeromap, so it is never under writeback and the same pass frees it; a "
    "swap-in of those slots reads zeros",
    "6.9.0 -> 6.12.0 mm/page_io.c swap_writepage, swap_zeromap_folio_set, "
    "swap_read_folio_zeromap (bracketed; id confirmed by Fixes: tags); 6.18.2 swap_writeout",
)
class SwapoutZeromap(Policy):
    swapout_zeromap = True
