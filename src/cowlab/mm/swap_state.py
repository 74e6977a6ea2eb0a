"""mm/swap_state.c: putting a page in the swap cache for swap-out, and finding or reading one
for swap-in."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.mm.constants import PG_dirty
from cowlab.mm.swapfile import add_to_swap_cache

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


def add_to_swap(k: Kernel, pfn: int) -> int:
    """add_to_swap(): a slot for a small page, the page in the swap cache and dirty (it must be
    written before it can be freed). Returns the slot."""
    offset = k.swap.get_swap_page()
    add_to_swap_cache(k, pfn, offset)
    k.frames.flags[pfn] |= PG_dirty
    return offset


def lookup_swap_cache(k: Kernel, offset: int) -> int | None:
    """lookup_swap_cache(): the slot's swap-cache page, with a reference for the caller."""
    page = int(k.swap.cache[offset])
    if page < 0:
        return None
    k.frames._count[page] += 1
    return page


def read_swap_cache_async(k: Kernel, offset: int) -> int:
    """read_swap_cache_async() / swapin_readahead() of one slot: a new page with the device's
    bytes, in the swap cache and clean, with a reference for the caller."""
    f = k.frames
    page = f.alloc_page()
    data = k.swap.data.get(offset)
    if data:
        f.write(page, 0, data)
    add_to_swap_cache(k, page, offset)
    k.vmstat["pswpin"] += 1
    return page
