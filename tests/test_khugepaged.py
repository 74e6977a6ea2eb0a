"""khugepaged and MADV_COLLAPSE, state by state: each test builds a state through the API, runs a
khugepaged pass or MADV_COLLAPSE, and compares with the state derived by hand from the rules read
in the release trees (docs/sources-khugepaged.md: §1 the scan, §2 the isolate step with the
seed's reuse_swap_page, §3 the collapse, §4 MADV_COLLAPSE).
"""

from __future__ import annotations

import pytest

from cowlab import Kernel, Process
from cowlab.errors import SyscallError
from cowlab.mm.constants import PMD_SHIFT, PG_anon_exclusive, PG_swapcache
from cowlab.mm.mm import page_count
from cowlab.mm.pgtable import HugePmd, PteTable
from cowlab.policy import POLICIES
from tests.releases import since

PAGE = 4096
HPAGE = 2 << 20
ALL = list(POLICIES)
SEED = ["v4.5", "v4.5+6d0a07e"]
# the release sets of docs/sources-khugepaged.md, written out (not read from the policies)
COMPOUND = [k for k in ALL if since(k, "5.8")]  # 5503fbf2b0b8
MADV_COLLAPSE = [k for k in ALL if since(k, "6.1")]  # 7d8faaf15545
SWAPCACHE_TEST = [k for k in ALL if not since(k, "5.18")]  # until 363106c4cefe


def small_pages(kernel_id: str, pages: int = 512) -> tuple[Kernel, Process, int]:
    """A 2 MiB-aligned region written while THP is off for it (4 KiB pages), then advised
    MADV_HUGEPAGE so khugepaged may collapse it."""
    k = Kernel(kernel_id, selfcheck=True)
    k.thp_enabled = "madvise"
    p = k.spawn()
    addr = p.mmap(HPAGE, align=HPAGE)
    for i in range(pages):
        p.write(addr + i * PAGE, i.to_bytes(2, "little"))
    p.madvise(addr, HPAGE, "hugepage")
    assert isinstance(p.mm.pmds[addr >> PMD_SHIFT], PteTable)
    return k, p, addr


def pmd(p: Process, addr: int) -> HugePmd | None:
    entry = p.mm.pmds.get(addr >> PMD_SHIFT)
    return entry if isinstance(entry, HugePmd) else None


@pytest.mark.parametrize("kernel_id", ALL)
def test_collapse_of_512_small_pages(kernel_id: str) -> None:
    """§3: a new THP, mapped by a dirty PMD, writable (VM_WRITE); the 512 old pages copied and
    freed; MM_ANONPAGES 512; the THP on the VMA's own anon_vma; exclusive from 5.19."""
    k, p, addr = small_pages(kernel_id)
    assert k.khugepaged() == 1
    entry = pmd(p, addr)
    assert entry is not None and entry.write and entry.dirty
    f = k.frames
    assert f.nr_allocated == 512 and page_count(f, entry.pfn) == 1
    assert p.mm.anon_rss == 512
    vma = p.mm.find_vma(addr)
    assert vma is not None and vma.anon_vma is not None
    assert int(f.mapping[entry.pfn]) == vma.anon_vma.id
    assert bool(f.flags[entry.pfn] & PG_anon_exclusive) == (since(kernel_id, "5.19"))
    assert p.read(addr + 300 * PAGE, 2) == (300).to_bytes(2, "little")


@pytest.mark.parametrize("kernel_id", ALL)
def test_a_pinned_page_refuses_the_collapse(kernel_id: str) -> None:
    """§1 step 10 / is_refcount_suitable: a pin is a reference the mappings do not explain."""
    k, p, addr = small_pages(kernel_id)
    p.get_user_pages(addr + 7 * PAGE, PAGE)
    assert k.khugepaged() == 0 and pmd(p, addr) is None


@pytest.mark.parametrize(
    ("max_ptes_none", "written", "collapsed"), [(511, 1, True), (0, 511, False), (0, 512, True)]
)
@pytest.mark.parametrize("kernel_id", ["v4.5", "v5.8", "v6.18"])
def test_max_ptes_none(kernel_id: str, max_ptes_none: int, written: int, collapsed: bool) -> None:
    """§1b step 1: more none PTEs than max_ptes_none refuse the block. (v5.8, v6.18: one young
    page is enough; 4.8-5.7 would want 256, so v4.14 is not in this test.)"""
    k, _p, _addr = small_pages(kernel_id, written)
    k.max_ptes_none = max_ptes_none
    assert (k.khugepaged() == 1) == collapsed


@pytest.mark.parametrize("kernel_id", ALL)
def test_pte_mapped_thp(kernel_id: str) -> None:
    """§1c 5.8 (5503fbf2b0b8): a PTE-mapped THP is refused before 5.8 (SCAN_PAGE_COMPOUND) and
    copied into a new THP after; the old THP is freed."""
    k = Kernel(kernel_id, selfcheck=True)
    k.thp_enabled = "madvise"
    p = k.spawn()
    addr = p.mmap(HPAGE, align=HPAGE)
    p.madvise(addr, HPAGE, "hugepage")
    p.write(addr, b"thp")
    old = pmd(p, addr)
    assert old is not None
    p.mprotect(addr + PAGE, PAGE, "r")
    p.mprotect(addr + PAGE, PAGE, "rw")  # the PMD is split, the VMA merges back
    collapsed = k.khugepaged() == 1
    assert collapsed == (kernel_id in COMPOUND)
    new = pmd(p, addr)
    assert (new is not None and new.pfn != old.pfn) == collapsed
    assert k.frames.nr_allocated == 512 and p.read(addr, 3) == b"thp"


def seed_swapcache_state(kernel_id: str) -> tuple[Kernel, Process, Process, int]:
    """Page 0 of P's block is in the swap cache, mapped read-only by P, and a child's swap PTE
    still holds its slot (swap count 1): page_count 2 = 1 + PageSwapCache, so the refcount test
    passes, but reuse_swap_page counts page_mapcount 1 + page_swapcount 1 = 2. The child gets
    only page 0 (MADV_DONTFORK on the rest around fork, then MADV_DOFORK merges the VMA back)."""
    k, p, addr = small_pages(kernel_id)
    p.swapout(addr, PAGE, until="written")
    p.madvise(addr + PAGE, HPAGE - PAGE, "dontfork")
    child = p.fork()
    p.madvise(addr + PAGE, HPAGE - PAGE, "dofork")
    assert p.read(addr, 2) == b"\0\0"  # swapped in read-only, still in the swap cache
    f = k.frames
    pfn = p.translate(addr)
    assert pfn is not None and f.flags[pfn] & PG_swapcache and page_count(f, pfn) == 2
    assert int(k.swap.swap_map[0]) == 1
    return k, p, child, addr


@pytest.mark.parametrize("kernel_id", ALL)
def test_isolate_refuses_a_swap_cache_page_another_swap_pte_holds(kernel_id: str) -> None:
    """§2: up to 5.17 __collapse_huge_page_isolate asks reuse_swap_page() of a read-only
    swap-cache page (the seed's signature change, no behaviour change): 2 > 1 ->
    SCAN_SWAP_CACHE_PAGE. 5.18 (363106c4cefe) dropped the test: the block collapses, the page
    stays in the swap cache for the child's swap PTE, whose swap-in still finds the bytes."""
    k, p, child, addr = seed_swapcache_state(kernel_id)
    collapsed = k.khugepaged() == 1
    assert collapsed == (kernel_id not in SWAPCACHE_TEST)
    assert child.read(addr, 2) == b"\0\0" and p.read(addr + PAGE, 2) == b"\x01\0"


@pytest.mark.parametrize("kernel_id", SEED)
def test_seed_isolate_drops_a_swap_cache_page_all_ours(kernel_id: str) -> None:
    """§2 with the seed's reuse_swap_page: a read-only swap-cache page nobody else holds
    (page_mapcount 1 + page_swapcount 0) passes and leaves the swap cache; the block collapses."""
    k, p, addr = small_pages(kernel_id)
    p.swapout(addr, PAGE, until="written")
    p.read(addr, 2)
    pfn = p.translate(addr)
    assert pfn is not None and k.frames.flags[pfn] & PG_swapcache
    assert k.khugepaged() == 1
    assert int(k.swap.cache[0]) == -1 and not k.swap.in_use().size


@pytest.mark.parametrize("kernel_id", COMPOUND)
def test_cow_shared_block_collapses_in_the_collapsing_mm_only(kernel_id: str) -> None:
    """§3 (5.8+): up to max_ptes_shared shared pages allowed; the collapsing process gets a new
    THP, the child keeps the old pages, each with one mapping less; bytes stay apart."""
    k, p, addr = small_pages(kernel_id)
    p.madvise(addr + HPAGE // 2, HPAGE // 2, "dontfork")
    child = p.fork()  # shares the lower 256 pages only
    p.madvise(addr + HPAGE // 2, HPAGE // 2, "dofork")
    assert k.khugepaged() == 1
    old = child.translate(addr)
    assert old is not None and int(k.frames._mapcount[old]) == 0
    p.write(addr, b"P")
    assert child.read(addr, 2) == b"\0\0" and p.read(addr, 1) == b"P"


@pytest.mark.parametrize("kernel_id", ALL)
def test_madv_collapse(kernel_id: str) -> None:
    """§4: MADV_COLLAPSE exists from 6.1 (EINVAL before) and ignores the sysfs limits."""
    k, p, addr = small_pages(kernel_id, 1)
    k.max_ptes_none = 0
    if kernel_id not in MADV_COLLAPSE:
        with pytest.raises(SyscallError, match="EINVAL"):
            p.madvise(addr, HPAGE, "collapse")
        return
    p.madvise(addr, HPAGE, "collapse")
    assert pmd(p, addr) is not None
    p.madvise(addr, HPAGE, "collapse")  # already PMD-mapped: success, nothing done


@pytest.mark.parametrize(("kernel_id", "errno"), [("v6.15", "EINVAL"), ("v6.18", None)])
def test_madv_collapse_after_fork_fully_shared(kernel_id: str, errno: str | None) -> None:
    """§4 / cow.c "after fork(), fully shared": fork write-protected every PTE; 6.1-6.17 need a
    writable PTE (SCAN_PAGE_RO -> EINVAL), 6.18 does not and collapses a private THP."""
    _k, p, addr = small_pages(kernel_id)
    child = p.fork()
    if errno:
        with pytest.raises(SyscallError, match=errno):
            p.madvise(addr, HPAGE, "collapse")
        assert pmd(p, addr) is None
    else:
        p.madvise(addr, HPAGE, "collapse")
        assert pmd(p, addr) is not None and child.translate(addr) is not None


@pytest.mark.parametrize("kernel_id", MADV_COLLAPSE)
def test_madv_collapse_errors(kernel_id: str) -> None:
    """§4: EAGAIN for a pinned page (SCAN_PAGE_COUNT), EINVAL on VM_NOHUGEPAGE and where no page
    table exists (SCAN_PMD_NONE)."""
    k, p, addr = small_pages(kernel_id)
    pin = p.get_user_pages(addr, PAGE)
    with pytest.raises(SyscallError, match="EAGAIN"):
        p.madvise(addr, HPAGE, "collapse")
    k.unpin(pin)
    p.madvise(addr, HPAGE, "nohugepage")
    with pytest.raises(SyscallError, match=r"EINVAL.*VM_NOHUGEPAGE"):
        p.madvise(addr, HPAGE, "collapse")
    two = p.mmap(2 * HPAGE, align=HPAGE)
    p.write(two + HPAGE, b"x")  # an anon_vma, and a page table for the upper block only
    with pytest.raises(SyscallError, match=r"EINVAL.*SCAN_PMD_NONE"):
        p.madvise(two, HPAGE, "collapse")


@pytest.mark.parametrize("kernel_id", MADV_COLLAPSE)
def test_madv_collapse_ranges_without_a_whole_block(kernel_id: str) -> None:
    """madvise_collapse() (6.18 mm/khugepaged.c, found by the live comparison): a range inside
    one 2 MiB block that does not start on its boundary makes hend - hstart negative; the
    unsigned block count never matches and the call fails with SCAN_FAIL's EINVAL. A range that
    starts on the boundary has zero blocks and succeeds. A VMA with no aligned 2 MiB block fails
    thp_vma_allowable_order: EINVAL."""
    _k, p, addr = small_pages(kernel_id, 8)
    with pytest.raises(SyscallError, match="EINVAL"):
        p.madvise(addr + 3 * PAGE, 3 * PAGE, "collapse")
    p.madvise(addr, 3 * PAGE, "collapse")
    assert pmd(p, addr) is None
    p.munmap(addr + HPAGE // 2, PAGE)  # two VMAs, neither holds an aligned 2 MiB block
    with pytest.raises(SyscallError, match="EINVAL"):
        p.madvise(addr, HPAGE // 2, "collapse")
