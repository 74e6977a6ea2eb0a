"""Linux 6.1: MADV_COLLAPSE; a split THP's PTEs keep their young bit."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "6.1",
    ("7d8faaf15545",),
    "mm/madvise: introduce MADV_COLLAPSE sync hugepage collapse",
    "madvise(MADV_COLLAPSE) collapses a range synchronously, ignoring max_ptes_* and the young "
    "test; a block without a page table reports SCAN_PMD_NONE",
    "5.19.0 (absent) -> 6.1.20 mm/khugepaged.c madvise_collapse (bracketed, "
    "docs/sources-khugepaged.md)",
)
class MadvCollapse(Policy):
    madv_collapse = True
    collapse_no_table_code = "SCAN_PMD_NONE"


@landed(
    "6.1",
    ("2e3468778dbe",),
    "mm: remember young/dirty bit for page migrations",
    "splitting a THP keeps each PTE's young bit across its migration entry (x86 has the swap "
    "offset bits for it): khugepaged counts the split pages as referenced, where before every "
    "remapped PTE was old",
    "David Hildenbrand on linux-mm (Feb 2023, Peter Xu's fix with Fixes: 2e3468778dbe): 'a "
    "commit from 6.1'; the 6.18 remove_migration_pte tests is_migration_entry_young; live 6.18: "
    "a khugepaged pass collapses a block split by ksmd (docs/fidelity.md K4); 6.0 and 6.1 trees "
    "not read",
)
class MigrationKeepsYoung(Policy):
    migration_keeps_young = True
