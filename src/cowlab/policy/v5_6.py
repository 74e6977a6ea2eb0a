"""Linux 5.6: MADV_PAGEOUT leaves every page mapped more than once alone (also 5.4.28+, 5.5.12+)."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import STABLE_ID_NOT_FOUND, landed


@landed(
    "5.6",
    ("12e967fd8e4e",),
    "mm: do not allow MADV_PAGEOUT for CoW pages",
    "MADV_PAGEOUT leaves a small page, and a THP a PMD maps whole, alone unless its "
    "page_mapcount is 1; before (5.4, 5.5), it took them however many processes mapped them "
    "(fork or KSM sharing), and reclaim unmapped them from every process",
    "5.4.6 (no mapcount test for a small page or a whole PMD; a PMD covered in part is split "
    "only if the head's mapcount is 1) -> 5.4.38, 5.6.4 (page_mapcount != 1 before both) "
    "mm/madvise.c madvise_cold_or_pageout_pte_range; in 5.6-rc7 (Linus' 5.6-rc7 shortlog, "
    "22 Mar 2020; docs/sources-swap.md §2)",
    stable=(("5.4.28", STABLE_ID_NOT_FOUND), ("5.5.12", STABLE_ID_NOT_FOUND)),
    stable_evidence="5.4.y: the 5.4.28 announcement (25 Mar 2020) lists it, mm/madvise.c 12 "
    "lines; the 5.4.6 tree lacks it, the 5.4.38 tree has the upstream lines. 5.5.y: the 5.5.12 "
    "announcement of the same day lists it (no 5.5 tree found). The stable ids were not found",
)
class PageoutSkipsCowPages(Policy):
    pageout_skips_cow_pages = True
