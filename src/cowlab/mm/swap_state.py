"""mm/swap_state.c: putting a page in the swap cache for swap-out, and finding or reading one
for swap-in (and mm/page_io.c's read of a slot that bypasses the swap cache)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.mm.constants import PG_dirty
from cowlab.mm.mm import folio_nr_pages, get_page
from cowlab.mm.swapfile import add_to_swap_cache

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


def add_to_swap(k: Kernel, head: int) -> int:
    """add_to_swap() / folio_alloc_swap(): slots for the folio (a run of them for a large folio
    the area takes whole), the folio in the swap cache and dirty (it must be written before it
    can be freed). Returns the first slot."""
    offset = k.swap.get_swap_pages(folio_nr_pages(k.frames, head))
    add_to_swap_cache(k, head, offset)
    k.frames.flags[head] |= PG_dirty
    return offset


def lookup_swap_cache(k: Kernel, offset: int) -> int | None:
    """lookup_swap_cache(): the slot's swap-cache page (a page of a large folio: the one for this
    slot), with a reference on its folio for the caller."""
    page = int(k.swap.cache[offset])
    if page < 0:
        return None
    get_page(k.frames, page)
    return page


def read_swap_cache_async(k: Kernel, offset: int) -> int:
    """read_swap_cache_async() / swapin_readahead() of one slot: a new small page with the
    device's bytes, in the swap cache and clean, with a reference for the caller."""
    page = swap_readpage(k, k.frames.alloc_page(), offset, 1)
    add_to_swap_cache(k, page, offset)
    return page


def swap_readpage(k: Kernel, head: int, offset: int, nr: int) -> int:
    """swap_readpage() / swap_read_folio(): the folio's pages get slots offset.. offset+nr-1's
    bytes. Returns the head."""
    f = k.frames
    for i in range(nr):
        data = k.swap.data.get(offset + i)
        if data:
            f.write(head + i, 0, data)
    k.vmstat["pswpin"] += nr
    return head
