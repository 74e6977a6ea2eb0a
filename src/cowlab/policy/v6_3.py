"""Linux 6.3: MADV_PAGEOUT and MADV_COLD judge a large folio by all its mappings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.mm.huge_memory import total_mapcount
from cowlab.mm.mm import PageTransCompound, compound_head
from cowlab.policy.base import Policy
from cowlab.policy.history import landed

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.policy.base import Reads


@landed(
    "6.3",
    ("07e8c82b5eff",),
    "madvise: convert madvise_cold_or_pageout_pte_range() to use folios",
    "MADV_PAGEOUT leaves a THP alone (PMD-mapped, or PTE-mapped: the walk of that page table "
    "stops there) unless folio_mapcount, every PMD and PTE mapping of it, is 1: a PTE-mapped THP "
    "with more than one page mapped is never paged out; before, page_mapcount of the page at "
    "hand (for a PMD, the head) decided",
    "6.2.1 (page_mapcount) -> 6.3.8 (folio_mapcount != 1, PMD and PTE branches), 6.4.6 (the same) "
    "mm/madvise.c madvise_cold_or_pageout_pte_range, include/linux/mm.h folio_mapcount, mm/rmap.c "
    "folio_total_mapcount (bracketed: no 6.3.0 tree; the id and title from the Fixes: tag of "
    "2f406263e3e9, the commit dated 21 Dec 2022, after 6.2's merge window, as quoted in its "
    "review thread; docs/sources-swap.md §2)",
)
class PageoutFolioMapcount(Policy):
    def pageout_skips(self, k: Kernel, pfn: int) -> tuple[bool, Reads, str]:
        """madvise_cold_or_pageout_pte_range(): a large folio is shared unless mapped once in
        all (folio_mapcount == 1)."""
        if not PageTransCompound(k.frames, pfn):
            return super().pageout_skips(k, pfn)
        count = total_mapcount(k.frames, compound_head(k.frames, pfn))
        return count != 1, (("folio_mapcount", count),), "MADV_PAGEOUT: folio_mapcount == 1"
