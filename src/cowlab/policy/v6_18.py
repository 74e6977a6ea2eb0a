"""Linux 6.18, the kernel this machine runs: khugepaged no longer needs a writable PTE, the
zero-page remap of a split keeps soft-dirty."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "6.18",
    (),
    "mm: enable khugepaged to operate on non-writable VMAs (Dev Jain, Sep 2025; id not found)",
    "khugepaged and MADV_COLLAPSE collapse a block with no writable PTE",
    "6.14.0 -> 6.18.2 mm/khugepaged.c hpage_collapse_scan_pmd, __collapse_huge_page_isolate "
    "(bracketed); posted as an RFC on 1 Sep 2025 and as [PATCH 1/2] on 3 Sep 2025, during the "
    "6.17 release candidates: the 6.18 merge window (MM merge 8804d970fab4). The mainline id "
    "was not found: the exact title only meets mails in the string index, and the 6.18-rc1 "
    "push logs read list merges, not the MM commits",
)
class CollapseReadOnly(Policy):
    collapse_needs_writable = False


@landed(
    "6.18",
    ("9658d698a8a8",),
    "mm/rmap: fix soft-dirty and uffd-wp bit loss when remapping zero-filled mTHP subpage to "
    "shared zeropage",
    "a subpage remapped to the zero page by a split keeps its PTE's soft-dirty bit",
    "6.14.0 -> 6.18.2 mm/huge_memory.c try_to_map_unused_to_zeropage (bracketed); id: "
    "ChangeLog-6.17.4 'commit 9658d698a8a8 upstream'; posted 30 Sep 2025, after 6.17",
    invisible="no modelled decision reads the soft-dirty bit of a zero-page PTE (a write copies "
    "the zero page either way, mprotect never maps it writable) and no expectation reads a "
    "PTE's soft-dirty bit; only /proc/PID/pagemap would show it",
)
class ZeropageRemapSoftDirty(Policy):
    zeropage_remap_keeps_soft_dirty = True
