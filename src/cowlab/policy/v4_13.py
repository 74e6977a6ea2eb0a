"""Linux 4.13: a KSM page is shared by at most max_page_sharing mappings; reclaim gives a THP a
swap cluster before splitting it (invisible)."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "4.13",
    ("2c653d0ee2ae",),
    "ksm: introduce ksm_max_page_sharing per page deduplication limit",
    "a stable KSM page takes at most max_page_sharing (256) sharers, then a new KSM page of the "
    "same contents starts a chain; /sys/kernel/mm/ksm/max_page_sharing exists",
    "4.9.0 (absent) -> 4.13.4, 4.14.177 mm/ksm.c stable_node_chain, ksm_max_page_sharing "
    "(bracketed, "
    "docs/sources-ksm.md); id: Hugh Dickins on stable@ (2018) names 2c653d0ee2ae Andrea's 4.13 "
    "commit, absent from 4.9-stable",
)
class KsmMaxPageSharing(Policy):
    ksm_max_page_sharing = True
    new_knobs = frozenset({"ksm_max_page_sharing"})


@landed(
    "4.13",
    ("38d8b4e6bdc8",),
    "mm, THP, swap: delay splitting THP during swap out",
    "reclaim gives a PMD-mapped THP one 512-slot cluster and adds it to the swap cache whole, "
    "then splits it there before unmapping it; the subpages are unmapped, written and freed "
    "one by one as in 4.12",
    "4.13.4 (shizukanaskytree/linux-4.13.4, import commit; mm untouched since) mm/vmscan.c "
    "shrink_page_list (can_split_huge_page, add_to_swap, then split_huge_page_to_list of the "
    "swap-cache THP before try_to_unmap), mm/swap_state.c add_to_swap (no split), "
    "mm/swap_slots.c get_swap_page (a THP: get_swap_pages(1, cluster) under CONFIG_THP_SWAP); "
    "4.9.0 mm/swap_state.c add_to_swap (a slot for the head, then split); id: the Fixes: tag "
    "of 41663430588c (docs/sources-swap.md §1)",
    invisible="the THP is split before anything is unmapped, so every step ends with the "
    "state 4.12 leaves: 4 KiB swap PTEs, 4 KiB pages in the swap cache, each written and freed "
    "alone (4.14's bd4c82c22c36 writes the THP whole); a THP with a reference beyond its "
    "mappings stays mapped in both (4.13 by can_split_huge_page, 4.12 by the failed split in "
    "add_to_swap). Only the slot numbers differ (one aligned cluster against slots taken one "
    "by one), and no expectation reads a slot number, nor does the model read ahead "
    "neighbouring slots on swap-in (vm.page-cluster 0)",
)
class ThpSwapClusterBeforeSplit(Policy):
    pass
