"""Linux 6.13: a write to the huge zero page allocates a THP again."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "6.13",
    ("1ced09e0331f",),
    "mm: allocate THP on hugezeropage wp-fault",
    "a write fault on the huge zero PMD maps a fresh zeroed THP (5.8-6.12 split it), and so "
    "does the unshare fault of a read-only long-term pin (6.2-6.12 split it); unlike 4.x it "
    "does not ask whether the VMA wants THPs (MADV_NOHUGEPAGE or enabled=never since the read)",
    "6.12.0 -> 6.13.2 mm/huge_memory.c do_huge_pmd_wp_page, do_huge_zero_wp_pmd, "
    "vma_alloc_anon_folio_pmd",
)
class HugeZeroWpAllocates(Policy):
    huge_zero_wp_allocates = True
    huge_zero_wp_checks_vma = False
