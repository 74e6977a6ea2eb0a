"""Linux 6.9: a page of a large folio is reused only when it is exclusive; MADV_PAGEOUT splits a
PTE-mapped THP whose first page is unmapped."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.mm.mm import PageAnonExclusive, PageTransCompound
from cowlab.policy.base import Policy, WpDecision, large_folios_only
from cowlab.policy.history import landed

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.mm.mm_types import VmArea


@landed(
    "6.9",
    ("cd197c3a2040",),
    "mm: prohibit the last subpage from reusing the entire large folio",
    "do_wp_page copies a page of a large folio that is not PageAnonExclusive, even at "
    "page_count == 1",
    "6.8.0 -> 6.9.0 mm/memory.c wp_can_reuse_anon_folio; id: kernel.org push logs of trees on "
    "mainline after the 6.9-rc1 MM merge (Mar 2024), whose pull lists the title",
)
class NoLargeFolioReuse(Policy):
    @large_folios_only
    def wp_reuse(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        f = k.frames
        if not PageTransCompound(f, pfn) or PageAnonExclusive(f, pfn):
            return super().wp_reuse(k, vma, pfn)
        read = (("PageAnonExclusive", 0), ("folio_test_large", 1))
        return WpDecision(False, False, False, read, "a large folio's page is never reused")


@landed(
    "6.9",
    ("cc864ebba5f6",),
    "madvise:madvise_cold_or_pageout_pte_range(): allow split while folio_estimated_sharers = 0",
    "MADV_PAGEOUT at a PTE-mapped THP whose first page no PTE maps (folio_estimated_sharers 0) "
    "splits it and pages out the pages in the range, where 6.5 .. 6.8 stopped the walk of that "
    "page table; only a first page mapped more than once now counts as shared (a PMD-mapped THP "
    "keeps the test != 1, the same there: its first page is mapped at least by the PMD)",
    "6.8.0 (folio_estimated_sharers != 1) -> 6.9.0 (> 1 in the PTE branch, != 1 kept in the PMD "
    "branch) mm/madvise.c madvise_cold_or_pageout_pte_range (verified; id: a kernel.org push of "
    "a tree on mainline after the 6.9 MM merge, 15 Mar 2024, lists it with the title; posted "
    "by Barry Song on 21 Feb 2024 with Fixes: 2f406263e3e9)",
)
class PageoutZeroSharersSplits(Policy):
    def pageout_sharers_shared(self, sharers: int) -> tuple[bool, str]:
        """v6_5.PageoutEstimatedSharers' test: shared only when the first page is mapped more
        than once."""
        return sharers > 1, "MADV_PAGEOUT: folio_estimated_sharers <= 1"
