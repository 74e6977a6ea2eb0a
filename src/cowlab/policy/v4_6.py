"""Linux 4.6: the seed, 6d0a07edd17c "mm: thp: calculate the mapcount correctly for THP pages
during WP faults" (in 4.5.5 as 9d3320adf7ca), and 0798d3c022dc, which rounds the address in
page_move_anon_rmap's assertion to the PMD for a THP head."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.mm.huge_memory import page_trans_huge_mapcount
from cowlab.mm.page_alloc import PageFrames
from cowlab.policy.base import Policy, Reads, ReuseCount, WpDecision
from cowlab.policy.history import landed

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


@landed(
    "4.6",
    ("6d0a07edd17c",),
    "mm: thp: calculate the mapcount correctly for THP pages during WP faults",
    "PTE and PMD: reuse iff page_trans_huge_mapcount == 1 (pins ignored); page_move_anon_rmap "
    "only when total_mapcount == 1",
    "4.5.0 -> 4.6.2 mm/memory.c do_wp_page, mm/swapfile.c reuse_swap_page, mm/huge_memory.c "
    "page_trans_huge_mapcount (docs/verification-4.5.md)",
    stable=(("4.5.5", "9d3320adf7ca"),),
)
class ThpMapcountOnWpFault(Policy):
    def reuse_mapcount(self, f: PageFrames, pfn: int) -> ReuseCount:
        ptm, total, worst = page_trans_huge_mapcount(f, pfn)
        read: Reads = (("page_trans_huge_mapcount", ptm), ("total_mapcount", total))
        if worst is not None:
            read += (("most-mapped subpage", worst),)
        return ReuseCount(ptm, total, read, "page_trans_huge_mapcount <= 1")

    def move_anon_rmap_on_reuse(self, total_mapcount: int) -> bool:
        return total_mapcount == 1

    def huge_pmd_wp_reuse(self, k: Kernel, head: int) -> WpDecision:
        ptm, total, _ = page_trans_huge_mapcount(k.frames, head)
        read = (("page_trans_huge_mapcount", ptm), ("total_mapcount", total))
        return WpDecision(ptm == 1, False, False, read, "page_trans_huge_mapcount == 1")


@landed(
    "4.6",
    ("0798d3c022dc",),
    "mm: thp: avoid false positive VM_BUG_ON_PAGE in page_move_anon_rmap()",
    "with CONFIG_DEBUG_VM, page_move_anon_rmap rounds the address to the PMD for a THP head "
    "before comparing it with the head's index",
    "4.5.0 -> 4.6.2 mm/rmap.c page_move_anon_rmap (docs/timeline-sources.md 4.7); upstream it "
    "is a v4.7-rc1 commit (27 May 2016, after 4.6) carried by stable 4.5.7 and 4.6.2, so 4.6.0 "
    "lacks it: labelled 4.6 until the 4.6.y stable commit is found",
)
class MoveAnonRmapRoundsAddress(Policy):
    move_anon_rmap_check = "pmd_rounded"
