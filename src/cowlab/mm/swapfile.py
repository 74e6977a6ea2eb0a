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

from cowlab.mm.decision import ReuseCount, ReuseDecision
from cowlab.mm.mm import PageKsm
from cowlab.mm.page_alloc import PageFrames

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


def reuse_swap_page(
    k: Kernel, pfn: int, mapcount: Callable[[PageFrames, int], ReuseCount]
) -> ReuseDecision:
    """reuse_swap_page(page, &total_mapcount): reuse when the generation's mapcount is <= 1."""
    if k.config.swap and PageKsm(k.frames, pfn):
        return ReuseDecision(False, 0, (("PageKsm", 1),), "never for a KSM page")
    count = mapcount(k.frames, pfn)
    if count.mapcount is None:
        return ReuseDecision(False, count.total_mapcount, count.read, count.rule)
    if k.config.swap:
        reuse, rule = count.mapcount <= 1, count.rule
    else:  # the CONFIG_SWAP=n macro of include/linux/swap.h asks for exactly 1
        reuse, rule = count.mapcount == 1, count.rule.replace("<=", "==")
    return ReuseDecision(reuse, count.total_mapcount, count.read, rule)
