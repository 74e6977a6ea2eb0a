"""Linux 4.8: khugepaged swaps pages in to collapse them (mm/khugepaged.c split out)."""

from __future__ import annotations

from cowlab.mm.constants import HPAGE_PMD_NR
from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "4.8",
    ("0db501f7a34c",),
    "mm, thp: convert from optimistic swapin collapsing to conservative (the last of Ebru "
    "Akagunduz's six-patch series, after 'mm: make optimistic check for swapin readahead'; the "
    "other five mainline ids not found)",
    "khugepaged allows up to max_ptes_swap swap PTEs in a block and swaps them in, but only with "
    "at least 256 young pages",
    "4.7.4 mm/huge_memory.c -> 4.9.0 mm/khugepaged.c khugepaged_scan_pmd, "
    "__collapse_huge_page_swapin (bracketed, docs/sources-khugepaged.md); 4.8: mmotm "
    "2016-06-06 (on 4.7-rc2) still queues the series for the next merge window, and the mmotm "
    "since-4.7 branch (29 Jul 2016, on v4.7) carries its six patches; id: Kirill A. Shutemov's "
    "khugepaged fixes of Mar/Apr 2020 ('do not stop collapse if less than half PTEs are "
    "referenced', 5.8's ffe945e633b5) name 0db501f7a34c with this title in their Fixes: tags "
    "(acc067d59a1f and 363cd76e5b11 are 2015 mmotm copies of the first two patches)",
)
class CollapseSwapsIn(Policy):
    collapse_swaps_in = True
    new_knobs = frozenset({"max_ptes_swap"})

    def collapse_referenced_ok(self, referenced: int, swapped: int) -> bool:
        """4.8-5.7: the swap-in step refuses any collapse with fewer than 256 young pages."""
        return referenced >= HPAGE_PMD_NR // 2
