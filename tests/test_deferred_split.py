"""Which unmaps queue a THP for the deferred split, on every policy.

Derived by hand from page_remove_rmap/page_remove_anon_compound_rmap (4.5.0, 6.1.20 mm/rmap.c:
a subpage's _mapcount reaching -1 queues it, and while a PMD maps the THP the DoubleMap offset
keeps a PTE-mapped subpage at 0 or more) and from page_remove_rmap (6.2.1, 6.6.9) and
__folio_remove_rmap (6.8.0 .. 6.18.2): subpages_mapcount / _nr_pages_mapped decide — a PTE unmap
queues only while no PMD maps the THP (COMPOUND_MAPPED / ENTIRELY_MAPPED), the last PMD unmap
only when some pages are PTE-mapped and some not. The two forms agree except on a THP the last
PMD unmap leaves mapped by nothing (4.5 .. 6.1 queue it, 6.2+ do not), which is freed or, while
pinned, cannot be split by either.
"""

from __future__ import annotations

import pytest

from cowlab.mm.mm import PageTransCompound
from cowlab.mm.pgtable import HugePmd, PteTable
from cowlab.policy import POLICIES
from tests.releases import since
from tests.test_checker_breaks import PAGE, pmd_thp, shared_thp

MiB = 1 << 20
ALL = list(POLICIES)


@pytest.mark.parametrize("kernel", ALL)
def test_a_pte_unmap_beside_a_pmd_queues_nothing(kernel: str) -> None:
    """P maps the THP by its PMD, the child C by 512 PTEs; C unmaps one page: that page has no
    mapping left but P's PMD still maps the THP, so it is not queued, and the shrinker leaves
    P's PMD alone (the model queued it on 6.2+ until subpages_mapcount was kept there)."""
    s = shared_thp(kernel)
    assert s.child is not None
    s.child.munmap(s.addr + PAGE, PAGE)
    assert s.head not in s.k.deferred_split
    assert s.k.shrink_deferred_split() == 0
    assert isinstance(s.p.mm.pmds[s.addr >> 21], HugePmd)
    s.child.exit()  # C's 511 PTEs go, P's PMD stays: still nothing queued
    assert s.head not in s.k.deferred_split and s.k.check() == []


@pytest.mark.parametrize("kernel", ALL)
def test_the_last_pmd_unmap_of_a_partly_pte_mapped_thp_queues_it(kernel: str) -> None:
    """As above, then P unmaps its 2 MiB: C maps 511 of the 512 pages, so the THP is queued
    (6.1: page 1's _mapcount reaches -1 when the offset is taken off; 6.2: 0 < 511 < 512), and
    the shrinker splits it under C's PTEs."""
    s = shared_thp(kernel)
    assert s.child is not None
    s.child.munmap(s.addr + PAGE, PAGE)
    s.p.munmap(s.addr, 2 * MiB)
    assert s.head in s.k.deferred_split
    assert s.k.shrink_deferred_split() == 1
    table = s.child.mm.pmds[s.addr >> 21]
    assert isinstance(table, PteTable)
    assert not PageTransCompound(s.k.frames, int(table.pfn[0]))
    assert s.k.check() == []


@pytest.mark.parametrize("kernel", ALL)
def test_the_last_pmd_unmap_of_a_fully_pte_mapped_thp_queues_nothing(kernel: str) -> None:
    """C maps all 512 pages by PTEs when P unmaps its PMD: no page is left unmapped."""
    s = shared_thp(kernel)
    s.p.munmap(s.addr, 2 * MiB)
    assert s.head not in s.k.deferred_split


@pytest.mark.parametrize("kernel", ALL)
def test_a_thp_left_mapped_by_nothing(kernel: str) -> None:
    """A pinned THP unmapped whole: 4.5 .. 6.1 queue it (nr 512), 6.2+ do not (nr equals
    nr_pmdmapped); the shrinker cannot split a pinned THP, and the unpin frees it either way."""
    s = pmd_thp(kernel)
    pin = s.p.get_user_pages(s.addr, PAGE)
    s.p.munmap(s.addr, 2 * MiB)
    assert (s.head in s.k.deferred_split) is not since(kernel, "6.2")
    assert s.k.shrink_deferred_split() == 0
    s.k.unpin(pin)
    assert s.head not in s.k.deferred_split and s.k.frames.nr_allocated == 0
