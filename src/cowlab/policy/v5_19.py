"""Linux 5.19, "COW fixes part 2: reliable GUP pins of anonymous pages": PG_anon_exclusive."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from cowlab.mm.constants import VM_WRITE, PG_anon_exclusive
from cowlab.mm.mm import PageAnonExclusive, PageKsm, page_count, page_maybe_dma_pinned
from cowlab.policy.base import DECISIONS_KEPT, Policy, Reads, SwapinDecision, WpDecision
from cowlab.policy.history import landed
from cowlab.policy.v5_18 import ONLY_REFERENCE_RULE, only_reference, only_reference_reads

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.mm.mm_types import MmStruct, VmArea


EXCLUSIVE_REUSE = WpDecision(True, False, False, (("PageAnonExclusive", 1),), "PageAnonExclusive")


@lru_cache(maxsize=DECISIONS_KEPT)
def _not_exclusive_decision(ksm: bool, swapcache: bool, count: int) -> WpDecision:
    """A page not PageAnonExclusive: only_reference() decides; a reused page becomes exclusive."""
    reuse, read = only_reference_reads(ksm, swapcache, count)
    rule = f"PageAnonExclusive || ({ONLY_REFERENCE_RULE})"
    return WpDecision(reuse, reuse, reuse, (("PageAnonExclusive", 0), *read), rule)


@landed(
    "5.19",
    ("6c287605fd56", "fb3d824d1a46", "6c54dc6c7437", "a7f226604170", "b51ad4f8679e"),
    "mm: remember exclusively mapped anonymous pages with PG_anon_exclusive (COW fixes part 2)",
    "an exclusive page is reused whatever its references, else page_count == 1 makes it "
    "exclusive; fork, swap-out and KSM refuse an exclusive page that may be pinned; a R/O "
    "FOLL_PIN of a shared page unshares it",
    "5.18.12 -> 5.19.0 mm/memory.c do_wp_page, do_swap_page, include/linux/rmap.h "
    "page_try_dup_anon_rmap, include/linux/mm.h gup_must_unshare",
)
class AnonExclusive(Policy):
    anon_exclusive = True
    gup_unshares_ro_pins = True

    def wp_reuse(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        if PageAnonExclusive(k.frames, pfn):
            return EXCLUSIVE_REUSE
        return _not_exclusive_decision(*only_reference(k, pfn))

    def swapin_decision(
        self, k: Kernel, vma: VmArea, pfn: int, write: bool, marker: bool, soft_dirty: bool
    ) -> SwapinDecision:
        """1493a1913e34: the swap PTE's exclusive bit, else page_count == 1, makes the page
        exclusive; it is mapped writable on a write fault (from 6.11 on any fault, unless
        soft-dirty tracking wants the write)."""
        f = k.frames
        ksm, count = PageKsm(f, pfn), page_count(f, pfn)
        exclusive = not ksm and (marker or count == 1)
        read = (("PageKsm", int(ksm)), ("pte_swp_exclusive", int(marker)), ("page_count", count))
        rule = "!PageKsm && (pte_swp_exclusive || page_count == 1)"
        on_read = self.swapin_maps_writable_on_read and bool(vma.vm_flags & VM_WRITE)
        if on_read and self.soft_dirty_tracking(k, vma) and not soft_dirty:
            on_read = False
        return SwapinDecision(exclusive and (write or on_read), exclusive, read, rule)

    def huge_pmd_wp_reuse(self, k: Kernel, head: int) -> WpDecision:
        f = k.frames
        if PageAnonExclusive(f, head):
            read: Reads = (("PageAnonExclusive(head)", 1),)
            return WpDecision(True, False, False, read, "PageAnonExclusive(head)")
        count = page_count(f, head)
        reuse = count == 1
        read = (("PageAnonExclusive(head)", 0), ("page_count(head)", count))
        rule = "PageAnonExclusive(head) || page_count(head) == 1"
        return WpDecision(reuse, reuse, reuse, read, rule)

    def try_to_unmap_refuses(self, k: Kernel, pfn: int) -> tuple[bool, Reads, str]:
        """page_try_share_anon_rmap() fails for an exclusive page that may be pinned."""
        f = k.frames
        if not PageAnonExclusive(f, pfn):
            return False, (), ""
        pinned = page_maybe_dma_pinned(f, pfn)
        read = (("PageAnonExclusive", 1), ("page_maybe_dma_pinned", int(pinned)))
        return pinned, read, "an exclusive page that may be pinned stays mapped"

    def ksm_refuses(self, k: Kernel, pfn: int) -> tuple[bool, Reads, str]:
        """write_protect_page() -> page_try_share_anon_rmap(): an exclusive page that may be
        pinned is not merged."""
        return self.try_to_unmap_refuses(k, pfn)

    def fork_must_copy(
        self, k: Kernel, src: MmStruct, vma: VmArea, pfns: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        """page_try_dup_anon_rmap() fails for an exclusive page that may be pinned."""
        pinned = super().fork_must_copy(k, src, vma, pfns)
        return pinned & ((k.frames.flags[pfns] & PG_anon_exclusive) != 0)

    def fork_pmd_must_split(self, k: Kernel, src: MmStruct, vma: VmArea, head: int) -> bool:
        pinned = super().fork_pmd_must_split(k, src, vma, head)
        return pinned and PageAnonExclusive(k.frames, head)
