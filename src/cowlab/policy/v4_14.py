"""Linux 4.14: THP swap-out whole, so reuse_swap_page() counts swap entries per subpage, and
do_huge_pmd_wp_page takes the page lock."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "4.14",
    ("ba3c4ce6def4",),
    "mm, THP, swap: make reuse_swap_page() works for THP swapped out",
    "reuse_swap_page adds each subpage's swap count to its mapcount; do_huge_pmd_wp_page locks "
    "the page",
    "4.9.0 -> 4.14.177 mm/swapfile.c reuse_swap_page, mm/huge_memory.c do_huge_pmd_wp_page "
    "(bracketed)",
    invisible="cowlab splits a THP before it is swapped (no THP is in the swap cache whole), so "
    "the per-subpage swap counts add nothing; the page lock only closes a race (CVE-2020-29368) "
    "between concurrent faults, which a sequential model cannot take",
)
class ThpSwapCounts(Policy):
    pass
