"""Linux 4.6: the seed, 6d0a07edd17c "mm: thp: calculate the mapcount correctly for THP pages
during WP faults" (in 4.5.5 as 9d3320adf7ca). page_move_anon_rmap's assertion is still 4.5's
unrounded one: its rounding, 0798d3c022dc, came after 4.6 (v4_7). A THP split freezes and
remaps its mappings with migration entries."""

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
    ("fec89c109f3a",),
    "thp: rewrite freeze_page()/unfreeze_page() with generic rmap walkers",
    "a THP split maps its pages again with remove_migration_pte, which makes every PTE clean "
    "(4.5's unfreeze_page_vma made it dirty where the page was PG_dirty); the page keeps "
    "PG_dirty",
    "4.5.0 mm/huge_memory.c unfreeze_page_vma (pte_mkdirty if PageDirty) -> 4.6.2 "
    "mm/huge_memory.c unfreeze_page -> mm/migrate.c remove_migration_pte (no pte_mkdirty; the "
    "same in 4.7.4, 4.9.0, 4.14.177 and 5.19.0); id: a public copy of the commit (msm-4.9)",
)
class RemapByMigrationEntries(Policy):
    def remap_pte_dirty(self, page_dirty: bool, entry_dirty: bool) -> bool:
        """remove_migration_pte() (4.6-6.0): never pte_mkdirty."""
        return False
