"""Linux 6.15: COW reuse of PTE-mapped large folios, built on per-folio MM tracking
(CONFIG_MM_ID): _large_mapcount, _mm_id, _mm_id_mapcount and the maybe-shared bit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.mm.mm import (
    PageAnonExclusive,
    PageSwapCache,
    PageTransCompound,
    compound_head,
    folio_large_mapcount,
    folio_maybe_mapped_shared,
    folio_ref_count,
)
from cowlab.mm.swapfile import try_to_free_swap
from cowlab.policy.base import Policy, Reads, WpDecision, large_folios_only
from cowlab.policy.history import landed

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.mm.mm_types import VmArea

LARGE_RULE = "!folio_maybe_mapped_shared && _large_mapcount == refcount > 1 (after folio_free_swap)"


@landed(
    "6.15",
    ("1da190f4d0a6",),
    "mm: Copy-on-Write (COW) reuse support for PTE-mapped THP",
    "a non-exclusive page of a large folio is reused iff only this MM maps the folio and its "
    "_large_mapcount equals its refcount (a swap-cache folio no swap PTE needs leaves the swap "
    "cache first); MADV_PAGEOUT and khugepaged call a large folio shared "
    "by the MM-id bit",
    "6.14.0 -> 6.18.2 mm/memory.c __wp_can_reuse_large_anon_folio, include/linux/mm_types.h "
    "_mm_id_mapcount (bracketed: no 6.15-6.17 tree); 6.15 from '[GIT PULL] MM updates for "
    "6.15-rc1' (mm-stable-2025-03-30-16-52), which lists David Hildenbrand's 20-patch series "
    "'mm: MM owner tracking for large folios (!hugetlb) + CONFIG_NO_PAGE_MAPCOUNT'",
)
class LargeFolioReuse(Policy):
    """The same series (6.15-rc1) adds CONFIG_NO_PAGE_MAPCOUNT to mm/Kconfig (749492229e3b
    stops the per-page mapcounts under it): a build option the scenario config chooses
    (`no_page_mapcount`); its rmap rule is in mm/rmap.py."""

    mm_ids = True
    large_reuse_reads_folio = True
    no_page_mapcount_option = True

    @large_folios_only
    def wp_reuse(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        f = k.frames
        if not PageTransCompound(f, pfn):
            return super().wp_reuse(k, vma, pfn)
        return self.wp_reuse_large(k, vma, pfn, compound_head(f, pfn))

    def wp_reuse_large(self, k: Kernel, vma: VmArea, pfn: int, head: int) -> WpDecision:
        """do_wp_page() -> wp_can_reuse_anon_folio() -> __wp_can_reuse_large_anon_folio() (6.15,
        1da190f4d0a6): PageAnonExclusive first, as do_wp_page tests it."""
        f = k.frames
        if PageAnonExclusive(f, pfn):
            return super().wp_reuse(k, vma, pfn)
        large = folio_large_mapcount(f, head)
        if large <= 1:  # the last mapping: copy, and the folio is freed
            return WpDecision(False, False, False, (("_large_mapcount", large),), LARGE_RULE)
        if folio_maybe_mapped_shared(f, head):  # the reads built once: a THP's run asks 511 times
            read: Reads = (("_large_mapcount", large), ("folio_maybe_mapped_shared", 1))
            return WpDecision(False, False, False, read, LARGE_RULE)
        read = (("_large_mapcount", large), ("folio_maybe_mapped_shared", 0))
        if PageSwapCache(f, head):  # folio_free_swap() first: its references must not count
            read += (("folio_free_swap", int(try_to_free_swap(k, head))),)
        refs = folio_ref_count(f, head)  # read last, as the kernel does after the lock
        reuse = large == refs
        return WpDecision(reuse, False, reuse, (*read, ("refcount", refs)), LARGE_RULE)

    def collapse_page_shared(self, k: Kernel, pfn: int) -> bool:
        """A large folio is shared when it may be mapped by another MM (MM-id bit)."""
        f = k.frames
        if not PageTransCompound(f, pfn):
            return super().collapse_page_shared(k, pfn)
        return folio_maybe_mapped_shared(f, compound_head(f, pfn))

    def pageout_skips(self, k: Kernel, pfn: int) -> tuple[bool, Reads, str]:
        """MADV_PAGEOUT leaves a folio that may be mapped by another MM alone."""
        f = k.frames
        if not PageTransCompound(f, pfn):
            return super().pageout_skips(k, pfn)
        shared = folio_maybe_mapped_shared(f, compound_head(f, pfn))
        return shared, (("folio_maybe_mapped_shared", int(shared)),), "MADV_PAGEOUT: not shared"
