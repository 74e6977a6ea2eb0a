"""Linux 5.4: MADV_PAGEOUT."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "5.4",
    ("1a4e58cce84e",),
    "mm: introduce MADV_PAGEOUT",
    "a swap-out of a range is MADV_PAGEOUT, which skips pages mapped more than once; before, "
    "it is the reclaim path taking every page of the range",
    "5.2.1 (absent) -> 5.6.4 mm/madvise.c madvise_pageout (bracketed, docs/sources-swap.md)",
)
class MadvPageout(Policy):
    madv_pageout = True
