"""The decisions a kernel generation makes, as one interface; the kernel paths ask, never branch.

A generation is a subclass that overrides only what changed. Class attributes state what the
generation's struct page/folio keeps; methods answer the questions the fault, fork, GUP,
mprotect and clear_refs paths ask.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from cowlab.mm.constants import HPAGE_PMD_ORDER, VM_SOFTDIRTY
from cowlab.mm.decision import (
    DECISIONS_KEPT,
    Reads,
    ReuseCount,
    ReuseDecision,
    SwapinDecision,
    WpDecision,
)
from cowlab.mm.mm import PageSwapCache, page_count, page_mapcount
from cowlab.policy.history import Landed

__all__ = [
    "DECISIONS_KEPT",
    "Policy",
    "Reads",
    "ReuseCount",
    "ReuseDecision",
    "SwapinDecision",
    "WpDecision",
]

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.mm.mm_types import MmStruct, VmArea
    from cowlab.mm.page_alloc import PageFrames


Rule = TypeVar("Rule", bound=Callable[..., WpDecision])


def large_folios_only(rule: Rule) -> Rule:
    """Marks a change's wp_reuse that decides only pages of large folios and hands any other
    page to super(): a small page's wp_reuse_small passes it by (Policy.__init_subclass__)."""
    rule.large_folios_only = True  # type: ignore[attr-defined]
    return rule


def _small_page_rule(cls: type) -> Any:
    """The wp_reuse a small page reaches in cls: the first in its MRO not marked
    large_folios_only (None: Policy's abstract one, which wp_reuse_small asks by name)."""
    for c in cls.__mro__:
        rule = vars(c).get("wp_reuse")
        if rule is not None and not getattr(rule, "large_folios_only", False):
            return None if c is Policy else rule
    return None


@lru_cache(maxsize=DECISIONS_KEPT)
def page_mapcount_reuse(count: int) -> ReuseCount:
    """reuse_swap_page()'s count when it is page_mapcount (mm/swapfile.c of 4.5.0, before
    6d0a07edd17c made it page_trans_huge_mapcount in 4.6 and 4.5.5), made once per value."""
    return ReuseCount(count, count, (("page_mapcount", count),), "page_mapcount <= 1")


# the knobs of 4.5 that scenarios set (thp_alloc_fail and numa_misplaced stand for conditions)
KNOBS_4_5 = frozenset({"thp", "thp_alloc_fail", "numa_misplaced", "max_ptes_none"})


class Policy(ABC):
    """The decisions of a kernel, with the values of Linux 4.5 before its own rules.

    A rule change (policy/vX_Y.py) is a subclass holding what it changed, recorded by `landed`;
    the policy of a release (policy/timeline.py) is a class made of every change that had landed
    by then, newest first in its MRO, so `super()` in a change reaches the rule it replaced.
    """

    id: ClassVar[str] = ""  # the policy's name: v + the release of its newest change
    release: ClassVar[str] = ""  # the releases it answers for
    commits: ClassVar[tuple[str, ...]] = ()  # the commits whose rules it follows
    summary: ClassVar[str] = ""
    landed: ClassVar[Landed | None] = None  # set on a change class by history.landed
    changes: ClassVar[tuple[type[Policy], ...]] = ()  # a composed policy's changes, oldest first

    double_map: ClassVar[bool] = True  # PG_double_map offsets (4.5 .. 6.1)
    nr_pages_mapped: ClassVar[bool] = False  # 6.2 subpages_mapcount (6.3: _nr_pages_mapped)
    large_mapcount: ClassVar[bool] = False  # _large_mapcount (6.10, 05c5323b2a34)
    mm_ids: ClassVar[bool] = False  # _mm_id, _mm_id_mapcount, the maybe-shared bit (6.15)
    # the build may set CONFIG_NO_PAGE_MAPCOUNT (mm/Kconfig, 6.15; still there in 6.18.2)
    no_page_mapcount_option: ClassVar[bool] = False
    foll_pin: ClassVar[bool] = False  # FOLL_PIN: GUP_PIN_COUNTING_BIAS and _pincount (5.7)
    anon_exclusive: ClassVar[bool] = False  # PG_anon_exclusive (5.19)
    pmd_cow_splits: ClassVar[bool] = False  # a PMD that is not reused is split, 4 KiB COW (5.8)
    huge_zero_wp_allocates: ClassVar[bool] = True  # a write to the huge zero PMD gets a THP
    # (4.x; 5.8 split it instead; 6.13 "mm: Allocate THP on hugezeropage wp-fault" again)
    # ... only where THP is wanted for the VMA (4.5 do_huge_pmd_wp_page asks
    # transparent_hugepage_enabled(); 6.13's do_huge_zero_wp_pmd allocates whatever the VMA says)
    huge_zero_wp_checks_vma: ClassVar[bool] = True
    swapout_zeromap: ClassVar[bool] = False  # 6.12: a zero-filled folio is not written (zeromap)
    gup_breaks_cow_on_read: ClassVar[bool] = False  # every GUP on a COW mapping faults as a write
    # GUP-fast's own answer where it differs (x86 4.9.287-4.9.297); None: gup_breaks_cow_on_read
    gup_fast_breaks_cow_on_read: ClassVar[bool | None] = None
    gup_unshares_ro_pins: ClassVar[bool] = False  # R/O FOLL_PIN of a shared anon page unshares
    clear_refs_skips_pinned: ClassVar[bool] = False  # 5.11: soft-dirty clearing skips pins
    mprotect_maps_exclusive_writable: ClassVar[bool] = False  # 6.2: RW maps PAE pages writable
    mthp: ClassVar[bool] = False  # anonymous multi-size THP (6.8)
    mremap_looks_up_vma: ClassVar[bool] = False  # 5.16: EFAULT if no VMA at the old address
    mremap_efault_positive: ClassVar[bool] = False  # 5.16, 5.17: that EFAULT is +14
    # page_move_anon_rmap's VM_BUG_ON on page->index: "index" compares the passed page's index
    # with the faulting address (4.5, 4.6), "pmd_rounded" first rounds the address to the PMD
    # for a THP head (0798d3c022dc: stable 4.5.7, 4.6.2), "" none (4.7, 5a49973d7143)
    move_anon_rmap_check: ClassVar[str] = "index"
    # swap (docs/sources-swap.md): MADV_PAGEOUT exists (5.4, 1a4e58cce84e); before, a swap-out
    # is the reclaim path taking the range's pages, shared ones included
    madv_pageout: ClassVar[bool] = False
    # 5.6 12e967fd8e4e (stable 5.4.28, 5.5.12): MADV_PAGEOUT's mapcount test also covers a small
    # page and a THP a PMD maps whole; 5.4.0 tested only a THP it must split
    pageout_skips_cow_pages: ClassVar[bool] = False
    # MADV_PAGEOUT meeting a PTE-mapped large folio it may not split (shared, or the split
    # fails) stops the walk of that page table (5.4); 6.10 (3931b871c493) skips the folio
    pageout_large_stops: ClassVar[bool] = True
    reclaim_skips_pinned: ClassVar[bool] = False  # 5.11 feb889fb40fa: no pinned page swapped
    # 5.18 c145e0b47c77: do_swap_page drops the swap entry (and maybe the swap-cache copy)
    # before it decides, and decides by page_count
    swapin_frees_swap_first: ClassVar[bool] = False
    swapin_maps_writable_on_read: ClassVar[bool] = False  # 6.11, c18160dba5ff
    # whole large folios in the swap cache (docs/sources-swap.md §1a, §1b, §3g): the swap areas
    # that give a PMD-size THP a run of slots (4.14: non-rotational block devices; 6.14: every
    # block device), whether mTHP orders get one too (6.10), and reuse_swap_page's per-subpage
    # map + swap count of a THP in the swap cache (4.14)
    thp_swap_devices: ClassVar[frozenset[str]] = frozenset()
    mthp_swapout: ClassVar[bool] = False
    thp_swap_counts: ClassVar[bool] = False
    swapin_bypass: ClassVar[bool] = False  # 4.15: SWP_SYNCHRONOUS_IO swap-in skips the cache
    swapin_maps_whole_folio: ClassVar[bool] = False  # 6.11: a large folio found in the cache
    swapin_large_folio: ClassVar[bool] = False  # 6.12: mTHP orders on the bypass path
    # 6.12 b1f202060afe: splitting an anonymous THP maps its zero-filled subpages to the shared
    # zero page (remap_page with RMP_USE_SHARED_ZEROPAGE) and frees them
    split_maps_unused_to_zeropage: ClassVar[bool] = False
    # 6.1 2e3468778dbe: a split's migration entries remember the PTE's young bit
    migration_keeps_young: ClassVar[bool] = False
    pmd_split_keeps_dirty: ClassVar[bool] = False  # 6.2 e833bc503405: PTEs of a dirty PMD
    zeropage_remap_keeps_soft_dirty: ClassVar[bool] = False  # 6.18 tree (Fixes: b1f202060afe)
    # khugepaged and MADV_COLLAPSE (docs/sources-khugepaged.md)
    collapse_swaps_in: ClassVar[bool] = False  # 4.8: up to max_ptes_swap swap PTEs swapped in
    collapse_pte_mapped_thp: ClassVar[bool] = False  # 5.8 5503fbf2b0b8: THP subpages copied
    collapse_counts_shared: ClassVar[bool] = False  # 5.8 71a2c112a0f6: max_ptes_shared
    collapse_checks_swapcache: ClassVar[bool] = True  # until 5.17 (363106c4cefe removed it)
    collapse_needs_writable: ClassVar[bool] = True  # a writable PTE in the block (until 6.14+)
    madv_collapse: ClassVar[bool] = False  # 6.1 7d8faaf15545
    collapse_no_table_code: ClassVar[str] = "SCAN_PMD_NULL"  # 6.1: SCAN_PMD_NONE
    # KSM (docs/sources-ksm.md)
    ksm_unmerge_unshares: ClassVar[bool] = False  # 6.2: break_ksm is an unshare fault
    ksm_checksum_before_stable: ClassVar[bool] = False  # 6.11 d58a361b0350
    reuses_ksm_page: ClassVar[bool] = False  # 5.1-5.8: reuse_ksm_page() in do_wp_page
    ksm_max_page_sharing: ClassVar[bool] = False  # 4.13: stable node chains, a sharing limit
    ksm_zero_pages_marked: ClassVar[bool] = False  # 6.6 79271476b336: dirty zero PTEs
    ksm_swapin_large_as_is: ClassVar[bool] = False  # 6.8: a large folio is never copied
    # wp_reuse_large reads of a page its PG_anon_exclusive alone, else its folio's counters (6.15
    # 1da190f4d0a6 __wp_can_reuse_large_anon_folio): the range path may settle copies in bulk
    large_reuse_reads_folio: ClassVar[bool] = False
    # sysfs knobs (/sys/kernel/mm/...) a change adds; has_knob() looks through every change
    new_knobs: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: object) -> None:
        """A change whose wp_reuse decides every page is also its wp_reuse_small; one marked
        large_folios_only leaves a small page to the change before it, without a super() call
        (a user's patch is asked for every page, as it says, however its class gets wp_reuse:
        a helper class, a decorator object). A class stating wp_reuse_small keeps its own."""
        super().__init_subclass__(**kwargs)
        rule = _small_page_rule(cls)
        stated = "wp_reuse_small" in vars(cls)
        if rule is not None and rule is not cls.wp_reuse_small and not stated:
            cls.wp_reuse_small = rule  # type: ignore[method-assign]

    def has_knob(self, name: str) -> bool:
        """Does this release have the sysfs knob (4.5's, or one a landed change added)?"""
        return name in KNOBS_4_5 or any(name in c.new_knobs for c in self.changes)

    @abstractmethod
    def wp_reuse(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        """do_wp_page(): may the anonymous page mapped read-only at this PTE be reused?"""

    def wp_reuse_small(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        """wp_reuse() of a page that is no large folio's (do_wp_page read its flags): the rule
        of the newest change that decides such a page, the large-folio rules after it (6.9,
        6.15) passed by: set by __init_subclass__ to each change's wp_reuse."""
        return self.wp_reuse(k, vma, pfn)

    def wp_reuse_large(self, k: Kernel, vma: VmArea, pfn: int, head: int) -> WpDecision:
        """wp_reuse() of a page of a large folio whose head the caller knows (the range path's
        runs): the same rule, which a generation may state without finding the head again."""
        return self.wp_reuse(k, vma, pfn)

    @abstractmethod
    def swapin_decision(
        self, k: Kernel, vma: VmArea, pfn: int, write: bool, marker: bool, soft_dirty: bool
    ) -> SwapinDecision:
        """do_swap_page(): map the page swapped in writable, and as exclusive? ``marker`` is the
        swap PTE's exclusive bit, ``soft_dirty`` its soft-dirty bit."""

    def reuse_mapcount(self, f: PageFrames, pfn: int) -> ReuseCount:
        """The mapcount reuse_swap_page() compares (4.5 .. 5.17; each of those generations
        says which): page_mapcount."""
        return page_mapcount_reuse(page_mapcount(f, pfn))

    def swaps_whole(self, device: str, order: int) -> bool:
        """get_swap_pages()/folio_alloc_swap(): does this swap area give a folio of this order
        a run of slots, so it is swapped out whole (else it is split first)?"""
        pmd_size = order == HPAGE_PMD_ORDER or self.mthp_swapout
        return order > 0 and pmd_size and device in self.thp_swap_devices

    def pageout_skips(self, k: Kernel, pfn: int) -> tuple[bool, Reads, str]:
        """madvise_cold_or_pageout_pte_range(): leave a page mapped more than once alone (5.4: a
        THP it would split; 5.6: any, pageout_skips_cow_pages); the reclaim path before
        MADV_PAGEOUT takes every page."""
        if not self.madv_pageout:
            return False, (), ""
        count = page_mapcount(k.frames, pfn)
        return count != 1, (("page_mapcount", count),), "MADV_PAGEOUT: page_mapcount == 1"

    def gup_unshares_non_anon(
        self, k: Kernel, vma: VmArea, gup_flags: int
    ) -> tuple[bool, Reads, str]:
        """gup_must_unshare() for a R/O FOLL_PIN of a page that is not anonymous (the shared or
        the huge zero page): taken as mapped until 6.2."""
        return False, (("PageAnon", 0),), "!PageAnon: never"

    def remap_pte_dirty(self, page_dirty: bool, entry_dirty: bool) -> bool:
        """A PTE a THP split maps again: dirty? 4.5 unfreeze_page_vma(): where the page is
        PG_dirty (entry_dirty: the PTE or PMD was dirty when it was frozen)."""
        return page_dirty

    def try_to_unmap_refuses(self, k: Kernel, pfn: int) -> tuple[bool, Reads, str]:
        """try_to_unmap_one(): keep this mapping (5.19: an exclusive page that may be pinned)?"""
        return False, (), ""

    @abstractmethod
    def huge_pmd_wp_reuse(self, k: Kernel, head: int) -> WpDecision:
        """do_huge_pmd_wp_page(): may the PMD-mapped THP be reused?"""

    def ksm_refuses(self, k: Kernel, pfn: int) -> tuple[bool, Reads, str]:
        """write_protect_page(): refuse this page beyond the refcount test (5.19: pinned)?"""
        return False, (), ""

    def wp_reuse_ksm(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        """do_wp_page() on a KSM page: copied; with reuses_ksm_page, reuse_ksm_page() makes a
        KSM page with its stable node, no reference but this mapping and not in the swap cache
        this VMA's anonymous page again."""
        if not self.reuses_ksm_page:
            return WpDecision(False, False, False, (("PageKsm", 1),), "a KSM page is never reused")
        f = k.frames
        node = int(-int(f.mapping[pfn]) in k.ksm.nodes)
        swapcache, count = PageSwapCache(f, pfn), page_count(f, pfn)
        reuse = bool(node) and not swapcache and count == 1
        read: Reads = (("page_stable_node", node), ("PageSwapCache", int(swapcache)))
        read += (("page_count", count),)
        rule = "reuse_ksm_page(): page_stable_node && !PageSwapCache && page_count == 1"
        return WpDecision(reuse, reuse, False, read, rule)

    def collapse_referenced_ok(self, referenced: int, swapped: int) -> bool:
        """khugepaged's young test: at least one referenced page (4.5)."""
        return referenced > 0

    def collapse_page_shared(self, k: Kernel, pfn: int) -> bool:
        """Is the page mapped more than once (5.8: counted against max_ptes_shared)?"""
        return page_mapcount(k.frames, pfn) > 1

    def collapse_refcount_ok(self, k: Kernel, pfn: int) -> tuple[bool, str]:
        """4.5: page_count == 1 + PageSwapCache, refusing pins and every COW-shared page."""
        f = k.frames
        want = 1 + int(PageSwapCache(f, pfn))
        count = page_count(f, pfn)
        return count == want, f"page_count {count}, expected 1 + PageSwapCache = {want}"

    def collapse_errno(self, code: str) -> str:
        """madvise_collapse_errno() of 6.1."""
        return {"SCAN_ALLOC_HUGE_PAGE_FAIL": "ENOMEM", "SCAN_CGROUP_CHARGE_FAIL": "EBUSY"}.get(
            code, "EINVAL"
        )

    @staticmethod
    def soft_dirty_tracking(k: Kernel, vma: VmArea) -> bool:
        """vma_soft_dirty_enabled(): clear_refs may have cleared soft-dirty bits to watch."""
        return k.soft_dirty_enabled and not vma.vm_flags & VM_SOFTDIRTY

    def fork_must_copy(
        self, k: Kernel, src: MmStruct, vma: VmArea, pfns: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        """copy_present_pte(): which pages the child gets its own copy of (none before 5.9)."""
        return np.zeros(pfns.size, dtype=bool)

    def fork_pmd_must_split(self, k: Kernel, src: MmStruct, vma: VmArea, head: int) -> bool:
        """copy_huge_pmd(): split the parent's PMD so pinned subpages are copied (5.9)."""
        return False

    def mremap_moves_vmas(self, old_len: int, new_len: int) -> bool:
        """do_mremap(): does an MREMAP_FIXED move take several VMAs (and the holes between)
        along instead of requiring one VMA (6.17)?"""
        return False

    def mprotect_writable(
        self, k: Kernel, vma: VmArea, pfn: int, soft_dirty_pte: bool, dirty: bool, pmd: bool
    ) -> bool:
        """change_pte_range()/change_huge_pmd(): map this private page writable directly?"""
        return False
