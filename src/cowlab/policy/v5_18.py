"""Linux 5.18, "COW fixes part 1": the PMD and PTE paths decide by page_count after dropping a
swap-cache copy nobody needs; reuse_swap_page() and page_trans_huge_mapcount() are gone;
do_swap_page drops the swap entry before it decides; khugepaged stops asking reuse_swap_page."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from cowlab.mm.constants import PG_ksm
from cowlab.mm.mm import PageKsm, PageSwapCache, compound_head, folio_ref_count, page_count
from cowlab.mm.swapfile import try_to_free_swap
from cowlab.policy.base import DECISIONS_KEPT, Policy, Reads, SwapinDecision, WpDecision
from cowlab.policy.history import landed

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.mm.mm_types import VmArea


@landed(
    "5.18",
    ("3bff7e3f1f16", "53a05ad9f21d", "d4c470970d45", "03104c2c5db8", "55c62fa7c533"),
    "mm/huge_memory: streamline COW logic in do_huge_pmd_wp_page(); mm: optimize do_wp_page() "
    "for exclusive pages in the swapcache; mm/swapfile: remove stale reuse_swap_page()",
    "PTE and PMD: a swap-cache page no one else needs leaves the swap cache, then reuse iff "
    "!PageKsm and page_count == 1 (a PMD otherwise split); no anon_vma move",
    "5.17.0 mm/memory.c do_wp_page (KSM or page_count != 1 copies; a swap-cache copy is never "
    "freed first), mm/huge_memory.c do_huge_pmd_wp_page (reuse_swap_page under the page lock) "
    "-> 5.18.12 (verified; 5.17.0 from kuangfei2019/linux-5.17-mini2440-dt, Makefile 5.17.0, "
    "mm/ touched only by its import commit)",
)
class CowFixesPart1(Policy):
    def wp_reuse(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        """do_wp_page(): no anon_vma move; see only_reference()."""
        return _only_reference_decision(*only_reference(k, pfn))

    def huge_pmd_wp_reuse(self, k: Kernel, head: int) -> WpDecision:
        count = page_count(k.frames, head)
        read = (("page_count(head)", count),)
        return WpDecision(count == 1, False, False, read, "page_count(head) == 1")


@landed(
    "5.18",
    ("c145e0b47c77",),
    "mm: streamline COW logic in do_swap_page()",
    "do_swap_page drops the swap entry (and maybe the swap-cache copy) first, then maps a write "
    "fault writable iff !PageKsm and page_count == 1",
    "5.17.0 mm/memory.c do_swap_page (a write fault reuses iff reuse_swap_page) -> 5.18.12 "
    "do_swap_page, should_try_to_free_swap (verified; 5.17.0 from "
    "kuangfei2019/linux-5.17-mini2440-dt, Makefile 5.17.0)",
)
class DoSwapPageByRefcount(Policy):
    swapin_frees_swap_first = True

    def swapin_decision(
        self, k: Kernel, vma: VmArea, pfn: int, write: bool, marker: bool, soft_dirty: bool
    ) -> SwapinDecision:
        """A write fault maps writable and exclusive a page only it references."""
        f = k.frames
        ksm, count = PageKsm(f, pfn), page_count(f, pfn)
        reuse = write and not ksm and count == 1
        read = (("PageKsm", int(ksm)), ("page_count", count))
        return SwapinDecision(reuse, reuse, read, "write fault && !PageKsm && page_count == 1")


@landed(
    "5.18",
    ("363106c4cefe",),
    "mm/khugepaged: remove reuse_swap_page() usage",
    "khugepaged's isolate step no longer refuses a swap-cache page reuse_swap_page would copy",
    "5.17.0 mm/khugepaged.c __collapse_huge_page_isolate (a read-only swap-cache page must pass "
    "reuse_swap_page; kuangfei2019/linux-5.17-mini2440-dt, Makefile 5.17.0) -> 5.18.12 (verified)",
)
class CollapseIgnoresSwapcache(Policy):
    collapse_checks_swapcache = False


@landed(
    "5.18",
    ("7d1e64966162",),
    "mm: mremap: fix sign for EFAULT error return value",
    "the VMA lookup's failure is -EFAULT again: the mremap call fails with EFAULT",
    "5.17.0 (+EFAULT; kuangfei2019/linux-5.17-mini2440-dt, Makefile 5.17.0) -> 5.18.12 "
    "mm/mremap.c SYSCALL_DEFINE5(mremap) (verified); id: the "
    "5.17-stable review (16 May 2022) says 'commit 7d1e64966162 upstream', Fixes: 550a7d60bd5e; "
    "a 5.18-rc7 hotfix",
)
class MremapEfaultNegative(Policy):
    mremap_efault_positive = False


ONLY_REFERENCE_RULE = "!PageKsm && page_count == 1 (after try_to_free_swap)"


def only_reference(k: Kernel, pfn: int) -> tuple[bool, bool, int]:
    """do_wp_page() of 5.18+ (53a05ad9f21d): a swap-cache page with no other reference drops
    its swap-cache copy (try_to_free_swap); then reuse iff !PageKsm and page_count == 1
    (ONLY_REFERENCE_RULE). Returns what it read: PageKsm, PageSwapCache, page_count."""
    f = k.frames
    head = compound_head(f, pfn)  # once: PageKsm and page_count read the head
    ksm, swapcache = bool(f.flags_at[head] & PG_ksm), PageSwapCache(f, pfn)
    if swapcache and not ksm and folio_ref_count(f, head) <= 2:
        try_to_free_swap(k, pfn)
    return ksm, swapcache, folio_ref_count(f, head)


def only_reference_reads(ksm: bool, swapcache: bool, count: int) -> tuple[bool, Reads]:
    """only_reference()'s verdict and its values read, by their kernel names."""
    read: Reads = (("PageKsm", int(ksm)), ("PageSwapCache", int(swapcache)), ("page_count", count))
    return not ksm and count == 1, read


@lru_cache(maxsize=DECISIONS_KEPT)
def _only_reference_decision(ksm: bool, swapcache: bool, count: int) -> WpDecision:
    """do_wp_page()'s verdict of 5.18 (d4c470970d45) on what only_reference() read, made once
    per value."""
    reuse, read = only_reference_reads(ksm, swapcache, count)
    return WpDecision(reuse, False, False, read, ONLY_REFERENCE_RULE)
