"""Linux 5.18: "COW fixes part 1" — the PMD is reused only when page_count is 1 too
(3bff7e3f1f16), reuse_swap_page() and page_trans_huge_mapcount() are removed (03104c2c5db8,
55c62fa7c533); soft-dirty clearing skips pinned PTEs (5.11, 9348b73c2e1b)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from cowlab.mm.mm import page_count
from cowlab.policy.base import WpDecision
from cowlab.policy.v5_9 import V5_9

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


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

    def huge_pmd_wp_reuse(self, k: Kernel, head: int) -> WpDecision:
        count = page_count(k.frames, head)
        read = (("page_count(head)", count),)
        return WpDecision(count == 1, False, False, read, "page_count(head) == 1")
