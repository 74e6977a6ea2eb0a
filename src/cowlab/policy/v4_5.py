"""Linux 4.5.0-4.5.4: the rules of 1f25fe20a76a ("mm, thp: adjust conditions when we can reuse
the page on WP fault"), before 6d0a07edd17c. A PTE-mapped THP subpage is never reused; a PMD is
reused only when nothing but its own mapping holds a reference."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from cowlab.mm.mm import PageTransCompound, page_count, page_mapcount, small_page_mapcount
from cowlab.mm.page_alloc import PageFrames
from cowlab.mm.swapfile import reuse_swap_page
from cowlab.policy.base import (
    DECISIONS_KEPT,
    Policy,
    ReuseCount,
    ReuseDecision,
    SwapinDecision,
    WpDecision,
    page_mapcount_reuse,
)
from cowlab.policy.history import landed

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.mm.mm_types import VmArea


NEVER_FOR_THP = ReuseCount(None, 0, (("PageTransCompound", 1),), "never for a THP subpage")


@lru_cache(maxsize=DECISIONS_KEPT)
def _reuse_swap_page_decision(d: ReuseDecision, move: bool) -> WpDecision:
    """do_wp_page() of 4.5.0: reuse_swap_page()'s verdict, and whether page_move_anon_rmap()
    follows it, made once per value."""
    return WpDecision(d.reuse, move, False, d.read, f"reuse_swap_page(): {d.rule}")


@landed(
    "4.5",
    ("1f25fe20a76a", "53f9263baba6", "ddc58f27f9ee", "61f5d698cc97"),
    "Linux 4.5: the THP refcounting rework",
    "PTE: reuse iff page_mapcount == 1, never for a THP subpage; PMD: reuse iff "
    "page_mapcount(head) == 1 and page_count(head) == 1",
    "4.5.0 mm/memory.c do_wp_page, mm/swapfile.c reuse_swap_page, mm/huge_memory.c "
    "do_huge_pmd_wp_page (docs/verification-4.5.md); ids: 53f9263baba6 and 61f5d698cc97 named "
    "with their titles in later Fixes: tags (61f5d698cc97's with 'Cc: stable 4.5+'), "
    "ddc58f27f9ee cited as the 2016 end of tail-page refcounting, 1f25fe20a76a the commit "
    "Andrea Arcangeli asked to revert on v4.6-rc5 in the seed's thread (29 Apr 2016)",
)
class Linux4_5(Policy):
    def wp_reuse(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        """do_wp_page(): reuse_swap_page() decides; a reused page may move to vma's anon_vma."""
        d = reuse_swap_page(k, pfn, self.reuse_mapcount)
        return _reuse_swap_page_decision(
            d, d.reuse and self.move_anon_rmap_on_reuse(d.total_mapcount)
        )

    def swapin_decision(
        self, k: Kernel, vma: VmArea, pfn: int, write: bool, marker: bool, soft_dirty: bool
    ) -> SwapinDecision:
        """do_swap_page(): a write fault maps writable and exclusive what reuse_swap_page()
        reuses; asked before this mapping is counted, while its swap entry still is."""
        if not write:
            return SwapinDecision(False, False, (), "a read fault maps the page read-only")
        d = reuse_swap_page(k, pfn, self.reuse_mapcount)
        return SwapinDecision(d.reuse, d.reuse, d.read, f"reuse_swap_page(): {d.rule}")

    def reuse_mapcount(self, f: PageFrames, pfn: int) -> ReuseCount:
        """reuse_swap_page() of 4.5.0: 0 for any PageTransCompound page, else page_mapcount."""
        if PageTransCompound(f, pfn):
            return NEVER_FOR_THP
        return page_mapcount_reuse(small_page_mapcount(f, pfn))

    def move_anon_rmap_on_reuse(self, total_mapcount: int) -> bool:
        """Always: a reused page is a small page mapped once."""
        return True

    def huge_pmd_wp_reuse(self, k: Kernel, head: int) -> WpDecision:
        """do_huge_pmd_wp_page of 4.5.0: any extra reference (a GUP pin) forces a 2 MiB copy."""
        f = k.frames
        mapcount, count = page_mapcount(f, head), page_count(f, head)
        read = (("page_mapcount(head)", mapcount), ("page_count(head)", count))
        rule = "page_mapcount(head) == 1 && page_count(head) == 1"
        return WpDecision(mapcount == 1 and count == 1, False, False, read, rule)
