"""Linux 5.8: a shared PMD-mapped THP is split and 4 KiB copied instead of copied whole; every
GUP on a COW mapping breaks COW first; khugepaged collapses shared and PTE-mapped THP pages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.mm.constants import HPAGE_PMD_NR
from cowlab.mm.huge_memory import total_mapcount
from cowlab.mm.mm import PageSwapCache, compound_head, folio_nr_pages, page_count
from cowlab.policy.base import Policy
from cowlab.policy.history import landed

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


@landed(
    "5.8",
    ("3917c80280c9",),
    "thp: change CoW semantics for anon-THP",
    "a PMD-mapped THP that is not reused is split and only the faulting 4 KiB copied; a write "
    "to the huge zero page splits it",
    "5.7.14 -> 5.8.1 mm/huge_memory.c do_huge_pmd_wp_page",
)
class ThpCowSplits(Policy):
    pmd_cow_splits = True
    huge_zero_wp_allocates = False


@landed(
    "5.8",
    ("17839856fd58",),
    "gup: document and work around 'COW can break either way' issue",
    "every GUP on a COW mapping, read pins included, faults as a write first (FOLL_WRITE forced)",
    "5.6.4 -> 5.8.1 mm/gup.c __get_user_pages, mm/huge_memory.c (bracketed; 5.7.14 carries the "
    "stable backport)",
    stable=(
        ("4.9.298", "0c29640bdeca"),
        ("4.14.232", "407faed92b4a"),
        ("4.19.189", "5e24029791e8"),
        ("5.4.47", "1027dc04f557"),
    ),
    stable_evidence="mm/gup.c should_force_cow_break in __get_user_pages: absent in 4.9.0, "
    "4.9.229, 4.14.177, 4.19.1, 4.19.124, 5.4.6, 5.4.38; present in 4.9.337, 4.14.280, "
    "4.19.222, 5.4.49, 5.4.59, 5.4.286. FOLL_GET-only backports (no FOLL_PIN before 5.6), the "
    "same decision. 4.9.298's is Ben Hutchings' redo (after reverting 4.9.287's, 6fbb8383884f), "
    "which forces the write flag in x86's own GUP-fast too (4.9.337 arch/x86/mm/gup.c)",
)
class GupBreaksCowOnRead(Policy):
    gup_breaks_cow_on_read = True


@landed(
    "5.8",
    ("17839856fd58",),
    "gup: document and work around 'COW can break either way' issue (4.9.287's backport)",
    "slow GUP on a COW mapping faults as a write first, but x86's GUP-fast still takes a "
    "read-only entry as it is (the backport forced only the generic GUP-fast walk)",
    "a stable-only form, not a mainline change: docs/timeline-sources.md, 'Stable backports'",
    stable=(("4.9.287", "9bbd42e79720"),),
    stable_evidence="Suren Baghdasaryan's 4.9 backport: should_force_cow_break in mm/gup.c "
    "__get_user_pages, and the write flag in the generic RCU GUP-fast of arm, arm64 and powerpc "
    "(and, wrongly, __get_user_pages_fast), but not in arch/x86/mm/gup.c; reverted in 4.9.298 "
    "(6fbb8383884f) and redone there (0c29640bdeca, GupBreaksCowOnRead), as Ben Hutchings' "
    "revert explains. Tree: 4.9.229 (neither) -> 4.9.337 (the redo: arch/x86/mm/gup.c forces "
    "the write flag); no tree of 4.9.287-4.9.297 was found",
)
class GupBreaksCowOnReadSlowOnly(Policy):
    """x86 4.9.287-4.9.297 (9bbd42e79720): __get_user_pages breaks COW, x86 GUP-fast does not."""

    gup_breaks_cow_on_read = True
    gup_fast_breaks_cow_on_read = False


@landed(
    "5.8",
    ("5503fbf2b0b8", "71a2c112a0f6", "9445689f3b61", "ffe945e633b5"),
    "khugepaged: allow to collapse PTE-mapped compound pages; introduce max_ptes_shared",
    "khugepaged copies PTE-mapped THP subpages, allows max_ptes_shared shared pages, wants "
    "references = mappings (+ swap cache), and 256 young pages only when it swaps in",
    "5.7.14 -> 5.8.1 mm/khugepaged.c khugepaged_scan_pmd, __collapse_huge_page_isolate",
)
class CollapseSharedPages(Policy):
    collapse_pte_mapped_thp = True
    collapse_counts_shared = True
    new_knobs = frozenset({"max_ptes_shared"})

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
