"""A harmless patch: do_wp_page answers an exclusive page before anything else.

The idea under review: most write faults on private memory hit a page this process owns
(PageAnonExclusive), so test that first and skip the rest of the rule. The decisions are the
base's for every page - an exclusive page was reused anyway - so `cowlab check --policy
examples/policies/exclusive_first.py:ExclusiveFirst --base 6.18` finds nothing it breaks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.mm.decision import WpDecision
from cowlab.mm.mm import PageAnonExclusive
from cowlab.policy.base import Policy

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.mm.mm_types import VmArea


class ExclusiveFirst(Policy):
    def wp_reuse(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        if PageAnonExclusive(k.frames, pfn):
            return WpDecision(True, False, False, (("PageAnonExclusive", 1),), "PageAnonExclusive")
        return super().wp_reuse(k, vma, pfn)
