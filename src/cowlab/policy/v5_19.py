"""Linux 5.19: PG_anon_exclusive (6c287605fd56, "COW fixes part 2: reliable GUP pins of anonymous
pages"). An exclusive page is reused whatever its references; otherwise page_count == 1 makes it
exclusive (and moves the anon_vma). fork refuses to share an exclusive page that may be pinned
and copies it for the child; a read-only FOLL_PIN of a shared anonymous page unshares it first
(FAULT_FLAG_UNSHARE)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import numpy.typing as npt

from cowlab.mm.constants import PG_anon_exclusive
from cowlab.mm.mm import PageAnonExclusive, PageKsm, page_count
from cowlab.policy.base import Reads, WpDecision
from cowlab.policy.v5_18 import V5_18

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.mm.mm_types import MmStruct, VmArea


class V5_19(V5_18):
    id = "v5.19"
    release = "5.19 (2022-07-31) .. 6.14"
    commits: ClassVar[tuple[str, ...]] = (
        "6c287605fd56",
        "fb3d824d1a46",
        "6c54dc6c7437",
        "a7f226604170",
        "b51ad4f8679e",
    )
    summary = (
        "PTE/PMD: reuse iff PageAnonExclusive, else page_count == 1 (then exclusive, anon_vma "
        "moved); fork copies exclusive maybe-pinned pages; R/O pins unshare"
    )
    anon_exclusive = True
    gup_unshares_ro_pins = True

    def wp_reuse(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        f = k.frames
        if PageAnonExclusive(f, pfn):
            return WpDecision(True, False, False, (("PageAnonExclusive", 1),), "PageAnonExclusive")
        count = page_count(f, pfn)
        reuse = not PageKsm(f, pfn) and count == 1
        read = (("PageAnonExclusive", 0), ("PageKsm", int(PageKsm(f, pfn))), ("page_count", count))
        rule = "PageAnonExclusive || (!PageKsm && page_count == 1)"
        return WpDecision(reuse, reuse, reuse, read, rule)

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

    def fork_must_copy(
        self, k: Kernel, src: MmStruct, vma: VmArea, pfns: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        """page_try_dup_anon_rmap() fails for an exclusive page that may be pinned."""
        pinned = super().fork_must_copy(k, src, vma, pfns)
        return pinned & ((k.frames.flags[pfns] & PG_anon_exclusive) != 0)

    def fork_pmd_must_split(self, k: Kernel, src: MmStruct, vma: VmArea, head: int) -> bool:
        pinned = super().fork_pmd_must_split(k, src, vma, head)
        return pinned and PageAnonExclusive(k.frames, head)
