"""Linux 6.6: a zero page KSM placed is marked, and MADV_UNMERGEABLE unshares it."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "6.6",
    ("79271476b336",),
    "ksm: support unsharing KSM-placed zero pages",
    "with use_zero_pages, replace_page marks the zero-page PTE it maps dirty (pte_mkdirty, "
    "soft-dirty too on x86) and counts it in ksm_zero_pages; break_ksm (MADV_UNMERGEABLE) "
    "treats a dirty zero-page PTE as a KSM page and unshares it: a private zeroed page, "
    "read-only and exclusive",
    "6.3.8 (replace_page maps a clean zero PTE; break_ksm_pmd_entry: PageKsm only) -> 6.6.9 "
    "mm/ksm.c replace_page, break_ksm_pmd_entry, include/linux/ksm.h is_ksm_zero_pte "
    "(bracketed); in akpm's mm-stable and mm-everything of 18 Aug 2023, before 6.5 (27 Aug), "
    "so the 6.6 merge window; the id is the one Lance Yang's later fix names in Fixes:",
)
class KsmZeroPagesUnshare(Policy):
    ksm_zero_pages_marked = True
