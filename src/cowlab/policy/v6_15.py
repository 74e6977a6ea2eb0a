"""Linux 6.15: COW reuse of PTE-mapped large folios (1da190f4d0a6, "mm: Copy-on-Write (COW) reuse
support for PTE-mapped THP"), built on per-folio MM tracking (CONFIG_MM_ID). The folio counters
are 6.x's: _large_mapcount, _entire_mapcount, _nr_pages_mapped, _pincount, MM ids; no
PG_double_map (removed in 6.2). mprotect maps exclusive pages writable directly (6.0/6.2)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from cowlab.mm.mm import (
    PageAnonExclusive,
    PageTransCompound,
    compound_head,
    folio_large_mapcount,
    folio_maybe_mapped_shared,
    page_count,
)
from cowlab.policy.base import Reads, WpDecision
from cowlab.policy.v5_19 import V5_19

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.mm.mm_types import VmArea


class V6_15(V5_19):
    id = "v6.15"
    release = "6.15 (2025-05-25)"
    commits: ClassVar[tuple[str, ...]] = (
        "1da190f4d0a6",
        "64fe24a3e05e",
        "c1b5cd8d9ef4",
        "7b8b5b6e3d86",
    )
    summary = (
        "PTE: PageAnonExclusive, else small folio page_count == 1, else large folio reused iff "
        "only this MM maps it and _large_mapcount == refcount; PMD as 5.19"
    )
    double_map = False
    folio_counters = True
    mprotect_maps_exclusive_writable = True
    mthp = True
    huge_zero_wp_allocates = True  # 6.13
    swapin_maps_writable_on_read = True
    split_maps_unused_to_zeropage = True
    madv_collapse = True  # 6.1
    ksm_unmerge_unshares = True  # 6.2
    ksm_checksum_before_stable = True  # 6.12
    collapse_no_table_code = "SCAN_PMD_NONE"

    def collapse_page_shared(self, k: Kernel, pfn: int) -> bool:
        """A large folio is shared when it may be mapped by another MM (6.12/6.15)."""
        f = k.frames
        if not PageTransCompound(f, pfn):
            return super().collapse_page_shared(k, pfn)
        return folio_maybe_mapped_shared(f, compound_head(f, pfn))

    def collapse_errno(self, code: str) -> str:
        """6.6: a uffd-armed hole (SCAN_EXCEED_NONE_PTE) is EBUSY."""
        return "EBUSY" if code == "SCAN_EXCEED_NONE_PTE" else super().collapse_errno(code)

    def pageout_skips(self, k: Kernel, pfn: int) -> tuple[bool, Reads, str]:
        """MADV_PAGEOUT leaves a folio that may be mapped by another MM alone."""
        f = k.frames
        if not PageTransCompound(f, pfn):
            return super().pageout_skips(k, pfn)
        shared = folio_maybe_mapped_shared(f, compound_head(f, pfn))
        return shared, (("folio_maybe_mapped_shared", int(shared)),), "MADV_PAGEOUT: not shared"

    def wp_reuse(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        f = k.frames
        if PageAnonExclusive(f, pfn) or not PageTransCompound(f, pfn):
            return super().wp_reuse(k, vma, pfn)
        head = compound_head(f, pfn)
        large, refs = folio_large_mapcount(f, head), page_count(f, head)
        rule = "!folio_maybe_mapped_shared && _large_mapcount == refcount > 1"
        read: Reads = (("_large_mapcount", large),)
        if large <= 1:  # the last mapping: copy, and the folio is freed
            return WpDecision(False, False, False, read, rule)
        shared = folio_maybe_mapped_shared(f, head)
        read += (("folio_maybe_mapped_shared", int(shared)),)
        if shared:
            return WpDecision(False, False, False, read, rule)
        reuse = large == refs
        return WpDecision(reuse, False, reuse, (*read, ("refcount", refs)), rule)

    def mprotect_writable(self, k: Kernel, vma: VmArea, pfn: int, soft_dirty_pte: bool) -> bool:
        """can_change_pte_writable(): exclusive, and no soft-dirty tracking waiting for a fault."""
        tracking = self.soft_dirty_tracking(k, vma)
        return PageAnonExclusive(k.frames, pfn) and not (tracking and not soft_dirty_pte)
