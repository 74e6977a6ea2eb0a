"""rmap_walk_anon() of a THP mapped by PTEs: the walk finds every PTE that maps a page of it at
the address its index gives, per VMA of its anon_vma (the lower pid first, then by address),
none where the page was zapped or where the PTE is a migration entry (freeze_page's: the walk
must not find a frozen mapping again)."""

from __future__ import annotations

from cowlab import Kernel
from cowlab.mm.mm_types import pmd_index
from cowlab.mm.pgtable import PTE_MIGRATION, PteTable
from cowlab.mm.rmap import rmap_walk_anon

THP = 2 << 20
PAGE = 4096


def test_the_walk_finds_each_pte_of_a_pte_mapped_thp_in_each_process() -> None:
    k = Kernel("v6.18")
    parent = k.spawn()
    buf = parent.mmap(THP, align=THP)
    parent.madvise(buf, THP, "hugepage")
    parent.write(buf, b"x")
    parent.mprotect(buf + PAGE, PAGE, "r")  # three VMAs over one page table; the PMD is split
    parent.madvise(buf + 3 * PAGE, 2 * PAGE, "dontneed")  # pages 3 and 4 no longer mapped
    child = parent.fork()
    table = parent.mm.pmds[pmd_index(buf)]
    assert isinstance(table, PteTable)
    head = int(table.pfn[0])
    table.bits[7] |= PTE_MIGRATION  # the parent's page 7 frozen

    found = [(m.mm.pid, m.addr, m.pfn, m.pmd) for m in rmap_walk_anon(k, head)]

    mapped = [i for i in range(512) if i not in (3, 4)]
    want = [(parent.pid, buf + i * PAGE, head + i, False) for i in mapped if i != 7]
    want += [(child.pid, buf + i * PAGE, head + i, False) for i in mapped]
    assert found == want
