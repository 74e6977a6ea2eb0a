"""rmap_walk_anon() and freeze_page() of a THP mapped by PTEs. The walk finds every PTE that
maps a page of it at the address its index gives, per VMA of its anon_vma (the lower pid first,
then by address), none where the page was zapped or where the PTE is a migration entry
(freeze_page's: the walk must not find a frozen mapping again). The freeze moves a PTE's dirty
bit to the page, drops each mapping's reference, and leaves nothing to block the split."""

from __future__ import annotations

from cowlab import Kernel
from cowlab.kernel import Process
from cowlab.mm.constants import PG_dirty
from cowlab.mm.mm_types import pmd_index
from cowlab.mm.page_alloc import flags_without
from cowlab.mm.pgtable import PTE_DIRTY, PTE_MIGRATION, PteTable, pte_without
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


def _clean_pte_mapped_thp(dirty_pte: int | None) -> tuple[Kernel, int]:
    """A PTE-mapped THP shared after fork, written back (PG_dirty clear), no PTE of it dirty
    but the parent's at `dirty_pte`."""
    k = Kernel("v6.18")
    parent = k.spawn()
    buf = parent.mmap(THP, align=THP)
    parent.madvise(buf, THP, "hugepage")
    parent.write(buf, b"x" * THP)  # no subpage zero-filled: 6.12+ maps none to the zero page
    parent.mprotect(buf + PAGE, PAGE, "r")
    child = parent.fork()
    head = int(parent.mm.pmds[pmd_index(buf)].pfn[0])
    k.frames.flags[head : head + 512] &= flags_without(PG_dirty)
    for proc in (parent, child):
        proc.mm.pmds[pmd_index(buf)].bits &= pte_without(PTE_DIRTY)
    if dirty_pte is not None:
        parent.mm.pmds[pmd_index(buf)].bits[dirty_pte] |= PTE_DIRTY
    return k, head


def test_a_split_moves_a_dirty_pte_to_its_page() -> None:
    """freeze_page: a PTE's dirty bit is the page's to keep (set_page_dirty where the frozen PTE
    is dirty), whichever PTE of the run it is; the split THP's pages keep PG_dirty, and every
    page stays mapped by both processes with a reference each (_mapcount 1, _count 2)."""
    for dirty_pte in (0, 9, 511):
        k, head = _clean_pte_mapped_thp(dirty_pte)
        assert k.split_huge_pages() == 1
        pages = slice(head, head + 512)
        assert ((k.frames.flags[pages] & PG_dirty) != 0).all()
        assert set(k.frames._mapcount[pages].tolist()) == {1}
        assert set(k.frames._count[pages].tolist()) == {2}


def test_a_split_leaves_a_clean_thp_clean() -> None:
    k, head = _clean_pte_mapped_thp(None)
    assert k.split_huge_pages() == 1
    assert not (k.frames.flags[head : head + 512] & PG_dirty).any()


def _straddling_thps() -> tuple[Kernel, int, list[Process], int]:
    """Two THPs moved by mremap to half a page table past a PMD boundary: each folio's first
    256 pages in one page table, its last 256 in the next (shared with the other folio's first
    256); after fork the child zaps page 300 of the first folio."""
    k = Kernel("v6.18")
    parent = k.spawn()
    buf = parent.mmap(2 * THP, align=THP)
    parent.madvise(buf, 2 * THP, "hugepage")
    parent.write(buf, b"x" * 2 * THP)  # no subpage zero-filled: 6.12+ maps none to the zero page
    head = int(parent.mm.pmds[pmd_index(buf)].pfn)
    hole = parent.mmap(4 * THP, align=THP)
    parent.munmap(hole, 4 * THP)
    dst = hole + THP + 256 * PAGE
    parent.mremap(buf, 2 * THP, 2 * THP, fixed_addr=dst)
    child = parent.fork()
    child.madvise(dst + 300 * PAGE, PAGE, "dontneed")
    return k, head, [parent, child], dst


def test_the_walk_of_a_thp_across_two_page_tables_stops_at_its_last_page() -> None:
    """Each page at the address its index gives, in both page tables; none of the next folio,
    whose pages follow in the second table (a walk past the folio's last page caught)."""
    k, head, (parent, child), dst = _straddling_thps()

    found = [(m.mm.pid, m.addr, m.pfn, m.pmd) for m in rmap_walk_anon(k, head)]

    want = [(parent.pid, dst + i * PAGE, head + i, False) for i in range(512)]
    want += [(child.pid, dst + i * PAGE, head + i, False) for i in range(512) if i != 300]
    assert found == want


def test_a_split_of_thps_across_two_page_tables_maps_each_page_where_it_was() -> None:
    """freeze_page and unfreeze_page per page table: after the split every page is mapped at
    its old address in each process that mapped it (a run frozen in the wrong table caught)."""
    k, head, procs, dst = _straddling_thps()

    assert k.split_huge_pages() == 2

    for proc in procs:
        mapped = [proc.translate(dst + i * PAGE) for i in range(1024)]
        assert mapped == [None if proc is procs[1] and i == 300 else head + i for i in range(1024)]
    assert k.frames._mapcount[head + 300] == 0
    assert set(k.frames._mapcount[head : head + 1024].tolist()) == {0, 1}
