"""Linux 6.18, the kernel this machine runs: khugepaged no longer needs a writable PTE, the
zero-page remap of a split keeps soft-dirty."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "6.18",
    ("62b98015d988", "473b73222f3d"),
    "mm: enable khugepaged anonymous collapse on non-writable regions; mm: drop all references "
    "of writable and SCAN_PAGE_RO (Dev Jain)",
    "khugepaged and MADV_COLLAPSE collapse a block with no writable PTE",
    "6.14.0 -> 6.18.2 mm/khugepaged.c hpage_collapse_scan_pmd, __collapse_huge_page_isolate "
    "(bracketed); posted as 'mm: Enable khugepaged to operate on non-writable VMAs' (RFC 1 Sep "
    "2025, [PATCH 1/2] 3 Sep 2025), merged under the titles above: '[GIT PULL] MM updates for "
    "6.18-rc1' lists both under Dev Jain (series 'Expand scope of khugepaged anonymous "
    "collapse'; MM merge 8804d970fab4); ids: sj/linux's copy of mm-stable was pushed up to "
    "473b73222f3d on 22 Sep 2025 (62b98015d988 just before it) and fast-forwarded from it on "
    "25 Sep 2025; andi.shyti/linux's i2c/i2c-host-fixes, pushed 9 Oct 2025 on the 6.18 merge "
    "window's mainline, lists both; the titles' other ids (d66ad3a0fdd3, f5a764fad341, "
    "7722093e473c, ae109badcef9, db88bae88940, cd213e6c46bd, b9f85966d1be, 1ca1d203822d) each "
    "sit in one to three mm-unstable pushes",
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
