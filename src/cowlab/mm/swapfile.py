"""mm/swapfile.c: reuse_swap_page(), the question "is this page all ours?" of a write fault
(4.5 to 5.17; 5.18 removed it, 03104c2c5db8).

With CONFIG_SWAP=n the kernel uses the include/linux/swap.h macro instead, which asks for a
mapcount of exactly 1. The mapcount it compares is the kernel generation's decision (policy).
Swap-out does not exist in the model yet, so PG_swapcache is never set and the swap-cache
branch (page_swapcount, try to free the swap slot) has nothing to act on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cowlab.mm.mm import PageKsm
from cowlab.mm.page_alloc import PageFrames
from cowlab.policy.base import ReuseCount, ReuseDecision

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


def reuse_swap_page(
    k: Kernel, pfn: int, mapcount: Callable[[PageFrames, int], ReuseCount]
) -> ReuseDecision:
    """reuse_swap_page(page, &total_mapcount): reuse when the generation's mapcount is <= 1."""
    if k.config.swap and PageKsm(k.frames, pfn):
        return ReuseDecision(False, 0, "PageKsm")
    count = mapcount(k.frames, pfn)
    if count.mapcount is None:
        return ReuseDecision(False, count.total_mapcount, count.why)
    reuse = count.mapcount == 1 if not k.config.swap else count.mapcount <= 1
    return ReuseDecision(reuse, count.total_mapcount, count.why)
