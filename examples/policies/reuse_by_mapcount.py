"""A patch that re-introduces a known bug: do_wp_page trusts the mapcount again.

The idea under review: "a page mapped once needs no copy" - skip the reference count, as
4.5-5.8 did, to save copies of pages some reference still holds. It brings CVE-2020-29374
back: a child's read-only GUP reference outlives its mapping, the parent's write reuses the
page, and the child reads the parent's later bytes. `cowlab check --policy
examples/policies/reuse_by_mapcount.py:ReuseByMapcount --base 6.18` catches it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.mm.decision import WpDecision
from cowlab.mm.mm import PageAnonExclusive, PageKsm, page_mapcount
from cowlab.policy.base import Policy

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.mm.mm_types import VmArea


class ReuseByMapcount(Policy):
    def wp_reuse(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        f = k.frames
        exclusive, ksm, mapcount = PageAnonExclusive(f, pfn), PageKsm(f, pfn), page_mapcount(f, pfn)
        reuse = exclusive or (not ksm and mapcount == 1)
        read = (
            ("PageAnonExclusive", int(exclusive)),
            ("PageKsm", int(ksm)),
            ("page_mapcount", mapcount),
        )
        return WpDecision(
            reuse, False, reuse, read, "PageAnonExclusive || (!PageKsm && page_mapcount == 1)"
        )
