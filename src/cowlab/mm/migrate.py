"""mm/migrate.c and the NUMA hinting faults of mm/memory.c / mm/huge_memory.c (4.5).

The model has no nodes: ``Kernel.numa_misplaced`` says whether the hinting fault finds the page
on the wrong node (then migration is attempted) or not (then the entry is simply restored).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.mm.constants import (
    HPAGE_PMD_MASK,
    HPAGE_PMD_NR,
    HPAGE_PMD_SIZE,
    PMD_SHIFT,
    VM_WRITE,
    PG_anon_exclusive,
)
from cowlab.mm.huge_memory import change_huge_pmd, split_huge_pmd
from cowlab.mm.mm import PageTransCompound, page_count, put_page
from cowlab.mm.mm_types import VmArea, pmd_index, pte_index
from cowlab.mm.pgtable import PTE_PROTNONE, PTE_SPECIAL, PTE_YOUNG, HugePmd, PteTable, pte_without
from cowlab.mm.rmap import page_remove_rmap, rmap_add_pmd, rmap_walk_anon

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


def do_huge_pmd_numa_page(k: Kernel, vma: VmArea, addr: int, entry: HugePmd) -> int:
    """do_huge_pmd_numa_page(): restore the PMD (write bit kept) or migrate the THP."""
    head = entry.pfn
    if not k.numa_misplaced:
        entry.protnone = False
        entry.young = True
        k.event("do_huge_pmd_numa_page", "keep", pfn=head, rule="well placed: clear_pmdnuma")
        return 0
    return migrate_misplaced_transhuge_page(k, vma, addr, entry)


def migrate_misplaced_transhuge_page(k: Kernel, vma: VmArea, addr: int, entry: HugePmd) -> int:
    """migrate_misplaced_transhuge_page(): move an unshared, unpinned THP to a new THP.

    On failure the PMD is rebuilt with pmd_modify(entry, vma->vm_page_prot): for a private
    writable VMA that protection has no write bit, so a pinned THP comes back read-only.
    """
    f = k.frames
    head = entry.pfn
    if page_count(f, head) != 1 or k.thp_alloc_fail:
        entry.protnone = False
        entry.write = False
        entry.young = True
        k.event(
            "migrate_misplaced_transhuge_page",
            "fail",
            pfn=head,
            read=(("page_count", page_count(f, head)),),
            rule="page_count == 1",
            detail="out_fail restores the PMD with vm_page_prot: read-only",
        )
        return 0
    new = f.alloc_hugepage()
    for i in range(HPAGE_PMD_NR):
        f.copy_page(new + i, head + i)
    f.mapping[new] = f.mapping[head]
    f.index[new] = f.index[head]
    f.flags[new] |= f.flags[head] & PG_anon_exclusive
    rmap_add_pmd(k, vma.mm, new)
    vma.mm.pmds[pmd_index(addr)] = HugePmd(new, bool(vma.vm_flags & VM_WRITE), True)
    page_remove_rmap(k, vma.mm, head, compound=True)
    put_page(k, head)
    k.event("migrate_misplaced_transhuge_page", pfn=head, detail=f"migrated to pfn {new:#x}")
    return 0


def do_numa_page(k: Kernel, vma: VmArea, addr: int, table: PteTable) -> int:
    """do_numa_page(): restore the PTE with its write bit; migrate a misplaced small page."""
    i = pte_index(addr)
    table.bits[i] = (table.bits[i] & pte_without(PTE_PROTNONE)) | PTE_YOUNG
    pfn = int(table.pfn[i])
    if table.bits[i] & PTE_SPECIAL or PageTransCompound(k.frames, pfn) or not k.numa_misplaced:
        return 0
    migrate_misplaced_page(k, pfn)
    return 0


def migrate_misplaced_page(k: Kernel, pfn: int) -> bool:
    """migrate_misplaced_page(): move a small page when only its mappings reference it."""
    f = k.frames
    mappings = rmap_walk_anon(k, pfn)
    if page_count(f, pfn) != len(mappings):
        read = (("page_count", page_count(f, pfn)), ("mappings", len(mappings)))
        k.event("migrate_misplaced_page", "fail", pfn=pfn, read=read, rule="no extra references")
        return False
    new = f.alloc_page()
    f.copy_page(new, pfn)
    f.mapping[new] = f.mapping[pfn]
    f.index[new] = f.index[pfn]
    f.flags[new] |= f.flags[pfn] & PG_anon_exclusive
    f._mapcount[new] = len(mappings) - 1
    f._count[new] = len(mappings)
    for m in mappings:
        table = m.mm.pmds[pmd_index(m.addr)]
        assert isinstance(table, PteTable)
        table.pfn[pte_index(m.addr)] = new
    f._mapcount[pfn] = -1
    put_page(k, pfn, len(mappings))
    k.event("migrate_misplaced_page", pfn=pfn, detail=f"migrated to pfn {new:#x}")
    return True


def change_prot_numa(k: Kernel, vma: VmArea, start: int, end: int) -> None:
    """change_prot_numa(): turn present entries into NUMA hinting entries, write bit kept."""
    mm = vma.mm
    for idx in range(pmd_index(start), pmd_index(end - 1) + 1):
        entry = mm.pmds.get(idx)
        base = idx << PMD_SHIFT
        lo, hi = max(start, base), min(end, base + HPAGE_PMD_SIZE)
        if isinstance(entry, HugePmd):
            if hi - lo == HPAGE_PMD_SIZE:
                change_huge_pmd(entry, entry.write, prot_numa=True)
                continue
            split_huge_pmd(k, vma, lo & HPAGE_PMD_MASK)
            entry = mm.pmds[idx]
        if isinstance(entry, PteTable):
            sl = slice(pte_index(lo), pte_index(hi - 1) + 1)
            normal = (entry.pfn[sl] >= 0) & ((entry.bits[sl] & PTE_SPECIAL) == 0)
            entry.bits[sl][normal] |= PTE_PROTNONE
