"""Linux 5.4: MADV_PAGEOUT."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "5.4",
    ("1a4e58cce84e",),
    "mm: introduce MADV_PAGEOUT",
    "a swap-out of a range is MADV_PAGEOUT, which leaves a THP it would split (a PMD it covers "
    "in part, a PTE-mapped THP) alone when that page is mapped more than once, but takes a "
    "small page or a whole PMD however it is mapped (5.6's 12e967fd8e4e tests those too); "
    "before, it is the reclaim path taking every page of the range",
    "5.2.1 (absent) -> 5.4.6 mm/madvise.c madvise_pageout, madvise_cold_or_pageout_pte_range "
    "(bracketed, docs/sources-swap.md §2)",
)
class MadvPageout(Policy):
    madv_pageout = True
