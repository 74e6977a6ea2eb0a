"""Linux 4.14: a PMD-mapped THP is swapped out whole on a swap area with clusters, so
reuse_swap_page() counts swap entries per subpage; do_huge_pmd_wp_page takes the page lock."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "4.14",
    ("bd4c82c22c36",),
    "mm, THP, swap: delay splitting THP after swapped out",
    "a PMD-mapped THP gets a 512-slot cluster on a non-rotational block device (ssd, zram): "
    "it stays whole in the swap cache, its PMD split into 512 swap PTEs at unmap, written and "
    "freed as one; a swap file (on a rotational disk) or an HDD has no clusters and still splits",
    "4.9.0, 4.13.4 -> 4.14.177 mm/vmscan.c shrink_page_list (4.13.4 splits the THP in the swap "
    "cache before unmapping it), mm/swap_state.c add_to_swap, "
    "mm/swapfile.c get_swap_pages, swap_alloc_cluster, swapon's cluster_info (verified "
    "4.13.4 -> 4.14.177; docs/sources-swap.md §1a; 4.13's half, 38d8b4e6bdc8, is "
    "v4_13.ThpSwapClusterBeforeSplit, invisible); bd4c82c22c36: id confirmed by Fixes: tags "
    "and a 2018 bisection that names it "
    "(docs/timeline-sources.md)",
)
class ThpSwapOut(Policy):
    thp_swap_devices = frozenset({"ssd", "zram"})


@landed(
    "4.14",
    ("ba3c4ce6def4",),
    "mm, THP, swap: make reuse_swap_page() works for THP swapped out",
    "reuse_swap_page of a page of a THP in the swap cache: the largest subpage mapcount + swap "
    "count <= 1 reuses it; the THP leaves the swap cache only when no other subpage is swapped "
    "out; do_huge_pmd_wp_page locks the page",
    "4.9.0, 4.13.4 (page_trans_huge_mapcount, no page lock) -> 4.14.177 mm/swapfile.c "
    "reuse_swap_page, page_trans_huge_map_swapcount, "
    "mm/huge_memory.c do_huge_pmd_wp_page (verified 4.13.4 -> 4.14.177)",
)
class ThpSwapCounts(Policy):
    thp_swap_counts = True
