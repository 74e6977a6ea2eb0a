"""Linux 5.8: a shared PMD-mapped THP is no longer copied whole — the PMD is split and only the
faulting 4 KiB is copied (3917c80280c9, "thp: change CoW semantics for anon-THP"); every GUP on
a COW mapping, read pins included, breaks COW first (17839856fd58, "gup: document and work around
'COW can break either way' issue"); FOLL_PIN pins are counted (5.7: GUP_PIN_COUNTING_BIAS)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from cowlab.mm.constants import HPAGE_PMD_NR
from cowlab.mm.huge_memory import total_mapcount
from cowlab.mm.mm import (
    PageSwapCache,
    compound_head,
    folio_nr_pages,
    page_count,
)
from cowlab.policy.v4_14 import V4_14

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


class V5_8(V4_14):
    id = "v5.8"
    release = "5.8 (2020-08-02)"
    commits: ClassVar[tuple[str, ...]] = ("3917c80280c9", "17839856fd58", "47e29d32afba")
    summary = (
        "PTE/PMD reuse iff page_trans_huge_mapcount == 1; a PMD not reused is split and 4 KiB "
        "copied; GUP breaks COW for reads too"
    )
    foll_pin = True
    pmd_cow_splits = True
    huge_zero_wp_allocates = False
    gup_breaks_cow_on_read = True
    madv_pageout = True  # 5.4
    collapse_pte_mapped_thp = True
    collapse_counts_shared = True
    reuses_ksm_page = True  # 5.1, 52d1e606ee73

    def collapse_referenced_ok(self, referenced: int, swapped: int) -> bool:
        """ffe945e633b5: one young page, and 256 only when there is something to swap in."""
        return referenced > 0 and (swapped == 0 or referenced >= HPAGE_PMD_NR // 2)

    def collapse_refcount_ok(self, k: Kernel, pfn: int) -> tuple[bool, str]:
        """is_refcount_suitable() (9445689f3b61): references = mappings (+ the swap cache's)."""
        f = k.frames
        head = compound_head(f, pfn)
        nr = folio_nr_pages(f, head)
        want = total_mapcount(f, head) + (nr if PageSwapCache(f, head) else 0)
        count = page_count(f, head)
        return count == want, f"page_count {count}, expected mappings + swap cache = {want}"
