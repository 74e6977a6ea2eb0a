"""Linux 4.14 (to 5.7): do_huge_pmd_wp_page takes the THP's page lock and reuse_swap_page() counts
swap entries per subpage too (ba3c4ce6def4, "mm, THP, swap: make reuse_swap_page() works for THP
swapped out"). Without swap and without concurrent faults the decisions equal 4.5.5's: the page
lock closes the CVE-2020-29368 race that a sequential model cannot take anyway."""

from __future__ import annotations

from typing import ClassVar

from cowlab.mm.constants import HPAGE_PMD_NR
from cowlab.policy.v4_5_6d0a07e import V4_5_6d0a07e


class V4_14(V4_5_6d0a07e):
    id = "v4.14"
    release = "4.14 (2017-11-12) .. 5.7"
    commits: ClassVar[tuple[str, ...]] = ("ba3c4ce6def4", "c444eb564fb1")
    summary = (
        "as v4.5+6d0a07e, with the THP page lock and swap counts per subpage "
        "(page_trans_huge_map_swapcount)"
    )
    move_anon_rmap_checks_index = False  # 5a49973d7143 (4.7)
    collapse_swaps_in = True  # 4.8 (bracketed 4.7.4 -> 4.9.0)

    def collapse_referenced_ok(self, referenced: int, swapped: int) -> bool:
        """4.8-5.7: the swap-in step refuses any collapse with fewer than 256 young pages."""
        return referenced >= HPAGE_PMD_NR // 2
