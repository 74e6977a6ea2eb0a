"""Linux 6.5: MADV_PAGEOUT and MADV_COLD judge a large folio by its first page (also 6.4.13+)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.mm.mm import PageTransCompound, compound_head, page_mapcount
from cowlab.policy.base import Policy
from cowlab.policy.history import landed

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.policy.base import Reads


def folio_estimated_sharers(k: Kernel, pfn: int) -> int:
    """folio_estimated_sharers() (6.3.8 .. 6.9.0 include/linux/mm.h): page_mapcount of the
    folio's first page (its PTE mappings plus the folio's PMD mappings)."""
    return page_mapcount(k.frames, compound_head(k.frames, pfn))


@landed(
    "6.5",
    ("2f406263e3e9",),
    "madvise:madvise_cold_or_pageout_pte_range(): don't use mapcount() against large folio for "
    "sharing check",
    "MADV_PAGEOUT leaves a THP alone unless its first page's mapcount "
    "(folio_estimated_sharers) is 1, whichever page the walk is at: a PTE-mapped THP mapped "
    "once is split and paged out again; one whose first page is mapped twice, or not at all, "
    "stops the walk",
    "6.4.6 (folio_mapcount != 1; a stable tree, so 6.4.0 has it too) -> 6.5.0 "
    "(folio_estimated_sharers != 1, PMD and PTE branches; also 6.6.9, 6.8.0) mm/madvise.c "
    "madvise_cold_or_pageout_pte_range (verified; id confirmed by a mainline log after the "
    "6.5-rc7 merges, docs/sources-swap.md §2)",
    stable=(("6.4.13", "63f230177510"),),
    stable_evidence="6.4.y: 6.4.6 tree (lewisevans2007/linux-6.4) still folio_mapcount; the "
    "linux-stable push of 30 Aug 2023 that released 6.4.13 lists 63f230177510 with the "
    "upstream title (the 6.4.13-rc1 push of 28 Aug 2023 listed it as aeeebf4010fb); no 6.4.13+ "
    "tree was found, so the backport is taken as the upstream change (the 6.4.y resend seen is "
    "of the madvise_free_pte_range patch only); 6.3.y had ended and never took it",
)
class PageoutEstimatedSharers(Policy):
    def pageout_skips(self, k: Kernel, pfn: int) -> tuple[bool, Reads, str]:
        """madvise_cold_or_pageout_pte_range(): a large folio is shared unless its first page
        is mapped exactly once."""
        if not PageTransCompound(k.frames, pfn):
            return super().pageout_skips(k, pfn)
        sharers = folio_estimated_sharers(k, pfn)
        shared, rule = self.pageout_sharers_shared(sharers)
        return shared, (("folio_estimated_sharers", sharers),), rule

    def pageout_sharers_shared(self, sharers: int) -> tuple[bool, str]:
        """Is a large folio with this folio_estimated_sharers shared (6.5: unless exactly 1)?"""
        return sharers != 1, "MADV_PAGEOUT: folio_estimated_sharers == 1"
