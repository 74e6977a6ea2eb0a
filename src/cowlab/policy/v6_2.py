"""Linux 6.2: no PG_double_map; mprotect maps clean exclusive PTEs and PMDs writable too; KSM
unmerges by an unshare fault; a R/O long-term pin unshares the zero page; a split PMD's PTEs keep
its dirty bit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.mm.constants import FOLL_LONGTERM
from cowlab.mm.mm_types import is_cow_mapping
from cowlab.policy.base import Policy, Reads
from cowlab.policy.history import landed

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.mm.mm_types import VmArea


@landed(
    "6.2",
    ("cb67f4282bf9",),
    "mm,thp,rmap: simplify compound page mapcount handling",
    "PG_double_map and its +1 offsets are gone: splitting a PMD adds 512 PTE mappings and drops "
    "the PMD one; subpages_mapcount (6.3: _nr_pages_mapped) counts the PTE-mapped pages, plus "
    "COMPOUND_MAPPED while a PMD maps the THP, and page_remove_rmap queues the THP for the "
    "deferred split by it",
    "6.1.20 include/linux/page-flags.h PG_double_map -> 6.2.1 (none), mm/huge_memory.c "
    "__split_huge_pmd_locked, include/linux/mm_types.h subpages_mapcount, include/linux/mm.h "
    "COMPOUND_MAPPED, mm/rmap.c page_add_anon_rmap, page_remove_rmap; id: Greg KH's 6.1-stable "
    "dependency list (Aug 2023) and the mainline merge of mm-stable-2022-12-13 (e2ca6ba6ba01)",
    invisible="counters only: no decision reads PG_double_map (reuse is by PageAnonExclusive and "
    "refcount since 5.19), and page_mapcount, total_mapcount and page_count come out the same "
    "with and without the +1 offsets. The deferred-split queue, which 6.1 decided by the offsets "
    "and 6.2 by subpages_mapcount, comes out the same: a PTE unmap while a PMD still maps the THP "
    "queues nothing, the last PMD unmap queues it when some of its pages are PTE-mapped and some "
    "not; 6.2 no longer queues a THP left mapped by nothing, which is then freed or, held by a "
    "pin or reference, cannot be split either way. The checker recomputes the counters of both "
    "forms from the page tables",
)
class NoDoubleMap(Policy):
    double_map = False
    nr_pages_mapped = True


@landed(
    "6.2",
    ("d84887739d5c", "c27f479ef542"),
    "mm/mprotect: allow clean exclusive anon pages to be writable; mm/huge_memory: try avoiding "
    "write faults when changing PMD protection",
    "mprotect(RW) maps any exclusive anonymous PTE or PMD writable, dirty or clean",
    "6.1.20 -> 6.2.1 mm/mprotect.c can_change_pte_writable, mm/huge_memory.c "
    "can_change_pmd_writable; ids: the mainline merge of mm-stable-2022-12-13 (e2ca6ba6ba01)",
)
class MprotectExclusiveWritable(Policy):
    def mprotect_writable(
        self, k: Kernel, vma: VmArea, pfn: int, soft_dirty_pte: bool, dirty: bool, pmd: bool
    ) -> bool:
        """can_change_pte_writable()/can_change_pmd_writable(): 6.0's test without its dirty
        PTE and no-PMD requirements."""
        return super().mprotect_writable(k, vma, pfn, soft_dirty_pte, True, False)


@landed(
    "6.2",
    ("6cce3314b928", "d7c0e68dab98"),
    "mm/ksm: fix KSM COW breaking with userfaultfd-wp via FAULT_FLAG_UNSHARE; mm/ksm: convert "
    "break_ksm() to use walk_page_range_vma()",
    "MADV_UNMERGEABLE replaces a KSM page by an unshare fault: a read-only exclusive copy",
    "6.1.20 mm/ksm.c break_ksm (write fault) -> 6.2.1 break_ksm_pmd_entry + UNSHARE; ids: the "
    "mainline merge of mm-stable-2022-12-13 (e2ca6ba6ba01)",
)
class KsmUnmergeUnshares(Policy):
    ksm_unmerge_unshares = True


@landed(
    "6.2",
    ("84209e87c696", "8d6a0ac09a16"),
    "mm/gup: reliable R/O long-term pinning in COW mappings; mm: extend FAULT_FLAG_UNSHARE "
    "support to anything in a COW mapping",
    "a read-only long-term FOLL_PIN of the zero page or the huge zero page in a private mapping "
    "unshares it: the huge zero PMD is split and each pinned 4 KiB gets a new exclusive page "
    "mapped read-only (a short-term read-only pin still takes the zero page)",
    "6.1.20 -> 6.2.1 include/linux/mm.h gup_must_unshare (non-anonymous page: never -> "
    "FOLL_LONGTERM in a COW mapping), mm/memory.c do_wp_page (unshare of the zero page: nothing "
    "to do -> wp_page_copy), mm/huge_memory.c do_huge_pmd_wp_page (huge zero PMD: split, both)",
)
class LongtermRoPinUnsharesZeroPage(Policy):
    def gup_unshares_non_anon(
        self, k: Kernel, vma: VmArea, gup_flags: int
    ) -> tuple[bool, Reads, str]:
        """gup_must_unshare() (6.2, 84209e87c696): a long-term pin in a COW mapping must not hold
        a page a later write would replace; a short-term one may."""
        longterm, cow = bool(gup_flags & FOLL_LONGTERM), is_cow_mapping(vma.vm_flags)
        read = (("PageAnon", 0), ("FOLL_LONGTERM", int(longterm)), ("is_cow_mapping", int(cow)))
        return longterm and cow, read, "!PageAnon: FOLL_LONGTERM && is_cow_mapping"


@landed(
    "6.2",
    ("e833bc503405",),
    "mm/thp: re-apply mkdirty for small pages after split",
    "splitting a dirty PMD into PTEs (no freeze) marks every PTE dirty (pte_mkdirty, soft-dirty "
    "too on x86); before, the PMD's dirty bit only went to the page (PG_dirty)",
    "6.1.20 mm/huge_memory.c __split_huge_pmd_locked (no pte_mkdirty: 624a2c94f5b7 took "
    "2e3468778dbe's companion 0ccf7f168e17 back out for sparc64) -> 6.2.1 and 6.18.2 (pte_mkdirty "
    "when the PMD was dirty); in the MM pull for 6.2-rc1 (mm-stable-2022-12-13); the id: "
    "David Hildenbrand's later revert of the sparc64 workaround names it",
)
class PmdSplitKeepsDirty(Policy):
    pmd_split_keeps_dirty = True
