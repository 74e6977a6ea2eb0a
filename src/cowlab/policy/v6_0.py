"""Linux 6.0: mprotect maps a dirty exclusive anonymous PTE writable at once."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.mm.mm import PageAnonExclusive
from cowlab.policy.base import Policy
from cowlab.policy.history import landed

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.mm.mm_types import VmArea


@landed(
    "6.0",
    ("64fe24a3e05e",),
    "mm/mprotect: try avoiding write faults for exclusive anonymous pages when changing protection",
    "mprotect(RW) of a private mapping sets the write bit of a dirty PTE mapping an exclusive "
    "anonymous page (no soft-dirty tracking pending); PMDs stay read-only",
    "5.19.0 (absent) -> 6.1.20 mm/mprotect.c can_change_pte_writable (bracketed)",
)
class MprotectDirtyExclusiveWritable(Policy):
    mprotect_maps_exclusive_writable = True

    def mprotect_writable(
        self, k: Kernel, vma: VmArea, pfn: int, soft_dirty_pte: bool, dirty: bool, pmd: bool
    ) -> bool:
        """can_change_pte_writable() of 6.0/6.1: a dirty PTE of an exclusive page only."""
        if pmd or not dirty:
            return False
        tracking = self.soft_dirty_tracking(k, vma)
        return PageAnonExclusive(k.frames, pfn) and not (tracking and not soft_dirty_pte)
