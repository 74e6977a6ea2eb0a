"""Linux 5.11: soft-dirty clearing and reclaim leave pinned pages alone."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "5.11",
    ("9348b73c2e1b",),
    "mm: don't play games with pinned pages in clear_page_refs",
    "clear_refs 4 leaves the PTE of a maybe-pinned page writable and soft-dirty",
    "5.10.7 -> 5.11.0 fs/proc/task_mmu.c clear_soft_dirty, pte_is_pinned",
    stable=(("5.10.9", "1eea108995a2"),),
    stable_evidence="fs/proc/task_mmu.c pte_is_pinned: absent in 5.10.7, present in 5.10.89 and "
    "5.10.198 (and 5.15.55, 5.15.148); 5.10.9's release notes list it; the same decision",
)
class ClearRefsSkipsPinned(Policy):
    clear_refs_skips_pinned = True


@landed(
    "5.11",
    ("feb889fb40fa",),
    "mm: don't put pinned pages into the swap cache",
    "reclaim keeps a maybe-pinned anonymous page (no swap slot, no unmapping)",
    "5.10.7 -> 5.11.0 mm/vmscan.c shrink_page_list (docs/sources-swap.md)",
    stable=(("5.10.9", "72c5ce89427f"),),
    stable_evidence="mm/vmscan.c shrink_page_list, page_maybe_dma_pinned before add_to_swap: "
    "absent in 5.10.7, present in 5.10.89 and 5.10.198; 5.10.9's release notes list it; the "
    "same decision",
)
class ReclaimSkipsPinned(Policy):
    reclaim_skips_pinned = True
