"""Linux 4.5.5 (stable 9d3320adf7ca) / 4.6: 6d0a07edd17c "mm: thp: calculate the mapcount correctly
for THP pages during WP faults". Reuse when no subpage is mapped twice (pins are ignored); move the
page to the faulting VMA's anon_vma only when the faulting mapping is the THP's only mapping."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from cowlab.mm.huge_memory import page_trans_huge_mapcount
from cowlab.mm.page_alloc import PageFrames
from cowlab.policy.base import Reads, ReuseCount, WpDecision
from cowlab.policy.v4_5 import V4_5

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


class V4_5_6d0a07e(V4_5):
    id = "v4.5+6d0a07e"
    release = "4.5.5 (2016-05-18), 4.6"
    commits: ClassVar[tuple[str, ...]] = ("6d0a07edd17c", "9d3320adf7ca")
    summary = (
        "PTE and PMD: reuse iff page_trans_huge_mapcount == 1 (pins ignored); "
        "page_move_anon_rmap only when total_mapcount == 1"
    )

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
