"""Linux 6.1: MADV_COLLAPSE."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "6.1",
    ("7d8faaf15545",),
    "mm/madvise: introduce MADV_COLLAPSE sync hugepage collapse",
    "madvise(MADV_COLLAPSE) collapses a range synchronously, ignoring max_ptes_* and the young "
    "test; a block without a page table reports SCAN_PMD_NONE",
    "5.19.0 (absent) -> 6.1.20 mm/khugepaged.c madvise_collapse (bracketed, "
    "docs/sources-khugepaged.md)",
)
class MadvCollapse(Policy):
    madv_collapse = True
    collapse_no_table_code = "SCAN_PMD_NONE"
