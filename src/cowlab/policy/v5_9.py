"""Linux 5.9: a PTE is reused only when page_count is 1, without anon_vma move; the forced read
COW of 5.8 and KSM page reuse are gone; fork copies pages that may be DMA-pinned."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from cowlab.mm.mm import (
    PageKsm,
    page_count,
    page_mapcount,
    page_maybe_dma_pinned,
    pages_maybe_dma_pinned,
)
from cowlab.mm.mm_types import is_cow_mapping
from cowlab.policy.base import DECISIONS_KEPT, Policy, WpDecision
from cowlab.policy.history import landed

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.mm.mm_types import MmStruct, VmArea


@lru_cache(maxsize=DECISIONS_KEPT)
def _simplified_decision(ksm: bool, count: int, mapcount: int) -> WpDecision:
    """do_wp_page()'s verdict of 09854ba94c6a (5.9) on the values it read, made once per value
    (the COW log keeps it for every copy made on them)."""
    reuse = not ksm and count == 1 and mapcount == 1
    read = (("PageKsm", int(ksm)), ("page_count", count), ("page_mapcount", mapcount))
    return WpDecision(
        reuse, False, False, read, "!PageKsm && page_count == 1 && page_mapcount == 1"
    )


@landed(
    "5.9",
    ("09854ba94c6a", "1a0cf26323c8"),
    "mm: do_wp_page() simplification; mm/ksm: Remove reuse_ksm_page()",
    "PTE: reuse iff !PageKsm, page_count == 1 and page_mapcount == 1, no anon_vma move; a KSM "
    "page is always copied",
    "5.8.1 -> 5.9.1 mm/memory.c do_wp_page, mm/ksm.c",
)
class DoWpPageSimplification(Policy):
    reuses_ksm_page = False

    def wp_reuse(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        """09854ba94c6a: any reference besides this mapping (a pin, another PTE) means copy."""
        f = k.frames
        return _simplified_decision(PageKsm(f, pfn), page_count(f, pfn), page_mapcount(f, pfn))


@landed(
    "5.9",
    ("a308c71bf1e6",),
    "mm/gup: Remove enfornced COW mechanism",
    "GUP no longer breaks COW on a read",
    "5.8.1 -> 5.9.1 mm/gup.c",
)
class GupNoForcedCow(Policy):
    gup_breaks_cow_on_read = False


@landed(
    "5.9",
    ("70e806e4e645", "d042035eaf5f", "008cfe4418b3"),
    "mm: Do early cow for pinned pages during fork() for ptes / huge pmd",
    "fork gives the child its own copy of a page that may be DMA-pinned (mm has pinned), and "
    "splits such a PMD",
    "5.8.1 -> 5.9.1 mm/memory.c copy_present_page, mm/huge_memory.c copy_huge_pmd",
)
class ForkCopiesPinned(Policy):
    def fork_must_copy(
        self, k: Kernel, src: MmStruct, vma: VmArea, pfns: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        """copy_present_page(): a COW mapping of an mm that pinned, and the page may be pinned."""
        if not (is_cow_mapping(vma.vm_flags) and src.has_pinned):
            return np.zeros(pfns.size, dtype=bool)
        return pages_maybe_dma_pinned(k.frames, pfns)

    def fork_pmd_must_split(self, k: Kernel, src: MmStruct, vma: VmArea, head: int) -> bool:
        return (
            is_cow_mapping(vma.vm_flags)
            and src.has_pinned
            and page_maybe_dma_pinned(k.frames, head)
        )


@landed(
    "5.9",
    ("41663430588c",),
    "mm, THP, swap: fix allocating cluster for swapfile by mistake",
    "a THP is given a cluster only on a swap block device, never on a swap file",
    "5.8.1 -> 5.9.1 mm/swapfile.c get_swap_pages (verified; docs/sources-swap.md §1a)",
    invisible="only a swap file on a non-rotational disk had clusters and got whole THPs "
    "before it; cowlab's swap file is on a rotational disk (no cluster_info), which split "
    "before and after. The fix is also in 4.14.200 and 5.8.13; no stable policy is made for "
    "an invisible change",
)
class SwapFileClusterFix(Policy):
    pass
