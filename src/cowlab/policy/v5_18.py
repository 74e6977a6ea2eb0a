"""Linux 5.18: "COW fixes part 1" — the PMD is reused only when page_count is 1 too
(3bff7e3f1f16), reuse_swap_page() and page_trans_huge_mapcount() are removed (03104c2c5db8,
55c62fa7c533); soft-dirty clearing skips pinned PTEs (5.11, 9348b73c2e1b). A write fault first
drops a swap-cache copy nobody else needs (53a05ad9f21d); do_swap_page decides by page_count after
dropping the swap entry (c145e0b47c77); reclaim never swaps a pinned page (5.11, feb889fb40fa)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from cowlab.mm.mm import PageKsm, PageSwapCache, page_count
from cowlab.mm.swapfile import try_to_free_swap
from cowlab.policy.base import Reads, SwapinDecision, WpDecision
from cowlab.policy.v5_9 import V5_9

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.mm.mm_types import VmArea


class V5_18(V5_9):
    id = "v5.18"
    release = "5.18 (2022-05-22)"
    commits: ClassVar[tuple[str, ...]] = (
        "3bff7e3f1f16",
        "53a05ad9f21d",
        "d4c470970d45",
        "c145e0b47c77",
        "03104c2c5db8",
        "55c62fa7c533",
        "550a7d60bd5e",
    )
    summary = "PTE and PMD: reuse iff page_count == 1 (PMD otherwise split); no anon_vma move"
    clear_refs_skips_pinned = True
    # 5.16, 550a7d60bd5e ("mm, hugepages: add mremap() support for hugepage backed vma"):
    # sys_mremap looks the VMA up at the old address before everything, the shrink included
    mremap_looks_up_vma = True
    reclaim_skips_pinned = True
    collapse_checks_swapcache = False  # 363106c4cefe
    swapin_frees_swap_first = True

    def wp_reuse(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        """do_wp_page(): no anon_vma move; see only_reference()."""
        reuse, read, rule = only_reference(k, pfn)
        return WpDecision(reuse, False, False, read, rule)

    def swapin_decision(
        self, k: Kernel, vma: VmArea, pfn: int, write: bool, marker: bool, soft_dirty: bool
    ) -> SwapinDecision:
        """A write fault maps writable and exclusive a page only it references."""
        f = k.frames
        ksm, count = PageKsm(f, pfn), page_count(f, pfn)
        reuse = write and not ksm and count == 1
        read = (("PageKsm", int(ksm)), ("page_count", count))
        return SwapinDecision(reuse, reuse, read, "write fault && !PageKsm && page_count == 1")

    def huge_pmd_wp_reuse(self, k: Kernel, head: int) -> WpDecision:
        count = page_count(k.frames, head)
        read = (("page_count(head)", count),)
        return WpDecision(count == 1, False, False, read, "page_count(head) == 1")


def only_reference(k: Kernel, pfn: int) -> tuple[bool, Reads, str]:
    """do_wp_page() of 5.18+ (53a05ad9f21d): a swap-cache page with no other reference drops
    its swap-cache copy (try_to_free_swap); then reuse iff !PageKsm and page_count == 1."""
    f = k.frames
    ksm, swapcache = PageKsm(f, pfn), PageSwapCache(f, pfn)
    if swapcache and not ksm and page_count(f, pfn) <= 2:
        try_to_free_swap(k, pfn)
    count = page_count(f, pfn)
    read: Reads = (("PageKsm", int(ksm)), ("PageSwapCache", int(swapcache)), ("page_count", count))
    rule = "!PageKsm && page_count == 1 (after try_to_free_swap)"
    return not ksm and count == 1, read, rule
