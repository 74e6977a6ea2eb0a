"""Linux 6.9: a page of a large folio is reused only when it is exclusive."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.mm.mm import PageAnonExclusive, PageTransCompound
from cowlab.policy.base import Policy, WpDecision
from cowlab.policy.history import landed

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.mm.mm_types import VmArea


@landed(
    "6.9",
    ("cd197c3a2040",),
    "mm: prohibit the last subpage from reusing the entire large folio",
    "do_wp_page copies a page of a large folio that is not PageAnonExclusive, even at "
    "page_count == 1",
    "6.8.0 -> 6.9.0 mm/memory.c wp_can_reuse_anon_folio; id: kernel.org push logs of trees on "
    "mainline after the 6.9-rc1 MM merge (Mar 2024), whose pull lists the title",
)
class NoLargeFolioReuse(Policy):
    def wp_reuse(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        f = k.frames
        if PageAnonExclusive(f, pfn) or not PageTransCompound(f, pfn):
            return super().wp_reuse(k, vma, pfn)
        read = (("PageAnonExclusive", 0), ("folio_test_large", 1))
        return WpDecision(False, False, False, read, "a large folio's page is never reused")
