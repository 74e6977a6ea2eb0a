"""Linux 6.10: a large folio's mapcount in one counter; mTHP swap-out whole; MADV_PAGEOUT and
khugepaged judge a large folio shared as a whole."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.mm.huge_memory import folio_likely_mapped_shared
from cowlab.mm.mm import PageTransCompound
from cowlab.policy.base import Policy
from cowlab.policy.history import landed

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.policy.base import Reads


@landed(
    "6.10",
    ("05c5323b2a34",),
    "mm: track mapcount of large folios in single value",
    "_large_mapcount counts every PTE and PMD mapping of a large folio; folio_mapcount and "
    "folio_mapped read it instead of summing the entire and per-page mapcounts",
    "6.9.0 (absent) -> 6.10.0 include/linux/mm.h folio_mapcount (UBC-BPF/linux-6.10-3po, a "
    "fork), 6.11.11 and 6.12.0 include/linux/mm_types.h",
    invisible="counters only: the value equals the sum it replaced, which the model keeps "
    "(the 6.10 decisions that read folio_mapcount are their own changes: CollapseLikelyShared, "
    "PageoutLikelyShared); the checker recounts it from the page tables",
)
class LargeMapcount(Policy):
    large_mapcount = True


@landed(
    "6.10",
    ("845982eb264b", "5ed890ce5147", "3931b871c493"),
    "mm: swap: allow storage of all mTHP orders; mm: vmscan: avoid split during "
    "shrink_folio_list(); mm: madvise: avoid split during MADV_PAGEOUT and MADV_COLD",
    "every large folio order gets a run of slots where a THP does (ssd, zram); reclaim splits a "
    "large folio first only when it is on the deferred-split list; MADV_PAGEOUT takes a "
    "PTE-mapped large folio the range covers whole without splitting it (if mapped once per "
    "page)",
    "6.9.0 -> 6.12.0 mm/vmscan.c shrink_folio_list, mm/swapfile.c get_swap_pages, mm/madvise.c "
    "madvise_cold_or_pageout_pte_range (bracketed by trees; ids: in 6.10-rc1, listed in "
    "axboe/linux-block's push of 19 May 2024 whose new head, 61307b7be41a, is Linus' merge of "
    "mm-stable-2024-05-17-19-19; docs/sources-swap.md §1b, §2)",
)
class MthpSwapOut(Policy):
    mthp_swapout = True


@landed(
    "6.10",
    ("3931b871c493",),
    "mm: madvise: avoid split during MADV_PAGEOUT and MADV_COLD",
    "MADV_PAGEOUT skips a PTE-mapped large folio it leaves alone (shared, or its split fails) "
    "and goes on with the next PTE; before, the walk of that page table stopped there, so the "
    "later pages it maps were not paged out",
    "6.9.0 (break) -> 6.11.11, 6.12.0 (continue) mm/madvise.c madvise_cold_or_pageout_pte_range "
    "(bracketed; the 5.10.7, 6.2.1, 6.3.8, 6.6.9 and 6.8.0 trees break too; 3931b871c493's "
    "v4 text says so: a failed split now moves on to the next PTE; in 6.10-rc1, docs/"
    "timeline-sources.md; docs/sources-swap.md §2)",
)
class PageoutSkipsLargeFolio(Policy):
    pageout_large_stops = False


@landed(
    "6.10",
    ("1bafe96e89f0",),
    "mm/khugepaged: replace page_mapcount() check by folio_likely_mapped_shared()",
    "khugepaged counts a PTE against max_ptes_shared when its folio is likely mapped shared "
    "(folio_likely_mapped_shared, ebb34f78d72c), not when that page is mapped more than once: "
    "every PTE of a PTE-mapped THP another process maps a part of counts",
    "6.9.0 (page_mapcount > 1) -> 6.11.11, 6.12.0, 6.14.0 (folio_likely_mapped_shared) "
    "mm/khugepaged.c hpage_collapse_scan_pmd, __collapse_huge_page_isolate (bracketed; "
    "1bafe96e89f0 dated 2024-04-24, in 6.10-rc1: listed in the push whose new head is Linus' "
    "merge 61307b7be41a of mm-stable-2024-05-17-19-19, docs/timeline-sources.md)",
)
class CollapseLikelyShared(Policy):
    def collapse_page_shared(self, k: Kernel, pfn: int) -> bool:
        """hpage_collapse_scan_pmd(): the folio, not the page, is judged shared."""
        return folio_likely_mapped_shared(k.frames, pfn)


@landed(
    "6.10",
    ("ebb34f78d72c",),
    "mm: convert folio_estimated_sharers() to folio_likely_mapped_shared()",
    "MADV_PAGEOUT leaves a PMD-mapped THP, or a PTE-mapped large folio the range covers in "
    "part, alone when folio_likely_mapped_shared: more mappings than pages, a PMD mapping "
    "with any other, or a first page mapped twice; before (6.5-6.9), by the first page's "
    "mapcount alone",
    "6.9.0 (folio_estimated_sharers > 1, != 1 for a PMD) -> 6.11.11, 6.12.0, 6.14.0 "
    "(folio_likely_mapped_shared) mm/madvise.c madvise_cold_or_pageout_pte_range, "
    "include/linux/mm.h (bracketed; ebb34f78d72c in 6.10-rc1: listed in the push whose new "
    "head is Linus' merge 61307b7be41a of mm-stable-2024-05-17-19-19)",
)
class PageoutLikelyShared(Policy):
    def pageout_skips(self, k: Kernel, pfn: int) -> tuple[bool, Reads, str]:
        """A large folio is judged as a whole (folio_likely_mapped_shared)."""
        if not PageTransCompound(k.frames, pfn):
            return super().pageout_skips(k, pfn)
        shared = folio_likely_mapped_shared(k.frames, pfn)
        read: Reads = (("folio_likely_mapped_shared", int(shared)),)
        return shared, read, "MADV_PAGEOUT: !folio_likely_mapped_shared"
