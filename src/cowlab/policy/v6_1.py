"""Linux 6.1: MADV_COLLAPSE; a split THP's PTEs keep their young and dirty bits."""

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
    "remapped PTE was old; and its dirty bit: a remapped PTE is dirty where the PTE (or PMD) "
    "was and the page is PG_dirty, where before it was clean",
    "David Hildenbrand on linux-mm (Feb 2023, Peter Xu's fix with Fixes: 2e3468778dbe): 'a "
    "commit from 6.1'; the 6.18 remove_migration_pte tests is_migration_entry_young; live 6.18: "
    "a khugepaged pass collapses a block split by ksmd (docs/fidelity.md K4); 5.19.0 -> 6.1.20 "
    "mm/migrate.c remove_migration_pte (pte_mkold always -> unless the entry is young; "
    "pte_mkdirty if the folio is dirty and the entry is), mm/rmap.c try_to_migrate_one and "
    "mm/huge_memory.c __split_huge_pmd_locked (freeze: the entry records young and dirty); no "
    "6.0 tree; commit dated 11 Aug 2022, in 6.1",
)
class MigrationKeepsYoung(Policy):
    migration_keeps_young = True

    def remap_pte_dirty(self, page_dirty: bool, entry_dirty: bool) -> bool:
        """remove_migration_pte() (6.1): folio_test_dirty && is_migration_entry_dirty."""
        return page_dirty and entry_dirty
