"""Linux 4.15: swap-in from a synchronous device (zram) skips the swap cache."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "4.15",
    ("0bcac06f27d7",),
    "mm, swap: skip swapcache for swapin of synchronous device",
    "do_swap_page on a SWP_SYNCHRONOUS_IO area (zram) reads a slot only this swap PTE holds into "
    "a new page outside the swap cache and frees the slot; a write fault reuses it at once, a "
    "read fault leaves a page with no swap-cache reference",
    "4.14.177 (absent) -> 5.0.1 mm/memory.c do_swap_page, mm/swapfile.c swapon "
    "SWP_SYNCHRONOUS_IO (bracketed; docs/sources-swap.md §3f)",
)
class SwapinBypass(Policy):
    swapin_bypass = True
