"""Linux 5.9 (to 5.17): a PTE is reused only when page_count is 1 (09854ba94c6a, "mm: do_wp_page()
simplification"), with no anon_vma move; the forced read COW of 5.8 is gone (a308c71bf1e6); fork
copies pages that may be DMA-pinned for the child and splits pinned PMDs (70e806e4e645,
d042035eaf5f, 008cfe4418b3). The PMD rule stays mapcount-based until 5.18."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import numpy.typing as npt

from cowlab.mm.mm import PageKsm, page_count, page_mapcount, page_maybe_dma_pinned
from cowlab.mm.mm_types import is_cow_mapping
from cowlab.policy.base import WpDecision
from cowlab.policy.v5_8 import V5_8

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.mm.mm_types import MmStruct, VmArea


class V5_9(V5_8):
    id = "v5.9"
    release = "5.9 (2020-10-11) .. 5.17"
    commits: ClassVar[tuple[str, ...]] = (
        "09854ba94c6a",
        "a308c71bf1e6",
        "1a0cf26323c8",
        "70e806e4e645",
        "d042035eaf5f",
        "008cfe4418b3",
    )
    summary = (
        "PTE: reuse iff page_count == 1 and page_mapcount == 1 (no anon_vma move); PMD: "
        "page_trans_huge_mapcount == 1, else split; fork copies maybe-pinned pages for the child"
    )
    gup_breaks_cow_on_read = False
    reuses_ksm_page = False  # 1a0cf26323c8 removed reuse_ksm_page()

    def wp_reuse(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        """09854ba94c6a: any reference besides this mapping (a pin, another PTE) means copy."""
        f = k.frames
        ksm, count, mapcount = PageKsm(f, pfn), page_count(f, pfn), page_mapcount(f, pfn)
        reuse = not ksm and count == 1 and mapcount == 1
        read = (("PageKsm", int(ksm)), ("page_count", count), ("page_mapcount", mapcount))
        rule = "!PageKsm && page_count == 1 && page_mapcount == 1"
        return WpDecision(reuse, False, False, read, rule)

    def fork_must_copy(
        self, k: Kernel, src: MmStruct, vma: VmArea, pfns: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        """copy_present_page(): a COW mapping of an mm that pinned, and the page may be pinned."""
        if not (is_cow_mapping(vma.vm_flags) and src.has_pinned):
            return np.zeros(pfns.size, dtype=bool)
        return np.array([page_maybe_dma_pinned(k.frames, int(p)) for p in pfns], dtype=bool)

    def fork_pmd_must_split(self, k: Kernel, src: MmStruct, vma: VmArea, head: int) -> bool:
        return (
            is_cow_mapping(vma.vm_flags)
            and src.has_pinned
            and page_maybe_dma_pinned(k.frames, head)
        )
