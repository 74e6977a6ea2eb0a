"""Linux 6.18, the kernel this machine runs: 6.15's decisions (no COW change found after 6.15,
docs/verification-later.md), built as here — CONFIG_MM_ID=y, CONFIG_PAGE_MAPCOUNT=y and
CONFIG_MEM_SOFT_DIRTY not set, so clear_refs 4 arms no write fault. khugepaged and
MADV_COLLAPSE no longer need a writable PTE in the block (bracketed 6.14 -> 6.18)."""

from __future__ import annotations

from typing import ClassVar

from cowlab.policy.v6_15 import V6_15


class V6_18(V6_15):
    id = "v6.18"
    release = "6.18 (2025-11-30); this machine: 6.18.44"
    commits: ClassVar[tuple[str, ...]] = ("1da190f4d0a6", "d23cb648e365")
    summary = (
        "as v6.15, and a same-size MREMAP_FIXED moves several VMAs (6.17); built without "
        "CONFIG_MEM_SOFT_DIRTY like this machine's kernel"
    )
    soft_dirty_default = False
    collapse_needs_writable = False  # gone from the scan and isolate steps (6.14 -> 6.18)
    zeropage_remap_keeps_soft_dirty = True

    def mremap_moves_vmas(self, old_len: int, new_len: int) -> bool:
        """6.17, d23cb648e365 ("mm/mremap: permit mremap() move of multiple VMAs"): only a
        move that keeps the size (vrm_move_only(): MREMAP_FIXED, old_len == new_len)."""
        return old_len == new_len
