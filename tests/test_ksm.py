"""KSM, state by state: MADV_MERGEABLE memory, ksmd passes and what follows a merge, compared with
states derived by hand from the rules read in the release trees (docs/sources-ksm.md: §2 the
two-pass merge, §3 write_protect_page's reference test and the 5.19 pin refusal, §4 the write
fault and 5.1-5.8's reuse_ksm_page, §1 MADV_UNMERGEABLE).
"""

from __future__ import annotations

import pytest

from cowlab import Kernel, Process
from cowlab.mm.constants import PG_anon_exclusive, PG_dirty, PG_ksm, PG_swapcache
from cowlab.mm.ksm import NULL_STABLE_NODE
from cowlab.mm.mm import page_count, page_mapcount
from cowlab.mm.page_alloc import ZERO_PFN
from cowlab.mm.pgtable import PTE_DIRTY, PTE_WRITE, PTE_YOUNG, PteTable
from cowlab.policy import POLICIES, resolve
from cowlab.policy.v5_6 import PageoutSkipsCowPages
from tests.releases import between, since

PAGE = 4096
ALL = list(POLICIES)


def identical(kernel_id: str, n: int = 4, other: int = 1) -> tuple[Kernel, Process, int]:
    """n pages holding b"same" and `other` pages with bytes of their own, MADV_MERGEABLE."""
    k = Kernel(kernel_id, selfcheck=True)
    p = k.spawn()
    addr = p.mmap((n + other) * PAGE)
    for i in range(n + other):
        p.write(addr + i * PAGE, b"same" if i < n else bytes([i + 1]) * 4)
    p.madvise(addr, (n + other) * PAGE, "mergeable")
    return k, p, addr


def pte_bits(p: Process, addr: int) -> int:
    table = p.mm.pmds[addr >> 21]
    assert isinstance(table, PteTable)
    return int(table.bits[(addr >> 12) & 511])


@pytest.mark.parametrize("kernel_id", ALL)
def test_two_passes_merge_identical_pages(kernel_id: str) -> None:
    """§2: pass 1 only stores checksums; in pass 2 the first page goes into the unstable tree,
    the second merges with it (the scanned page becomes the KSM page), the third and fourth join
    it through the stable tree. One KSM page, mapped 4 times read-only, _count 4; three frames
    freed; the page with other bytes untouched."""
    k, p, addr = identical(kernel_id)
    assert k.ksmd() == 0 and k.frames.nr_allocated == 5
    assert k.ksmd() == 4
    pfns = {p.translate(addr + i * PAGE) for i in range(4)}
    assert len(pfns) == 1
    (kpage,) = pfns
    assert kpage is not None and k.frames.flags[kpage] & PG_ksm
    f = k.frames
    assert page_mapcount(f, kpage) == 4 and page_count(f, kpage) == 4
    assert not f.flags[kpage] & PG_anon_exclusive
    assert all(not pte_bits(p, addr + i * PAGE) & PTE_WRITE for i in range(4))
    assert f.nr_allocated == 2 and k.ksm.full_scans == 2


@pytest.mark.parametrize("kernel_id", ALL)
def test_replace_page_maps_the_ksm_page_young(kernel_id: str) -> None:
    """replace_page() maps the KSM page with mk_pte(kpage, vma->vm_page_prot) and nothing else
    (4.5.0, 5.10.7, 6.1.20, 6.6.9, 6.18.2 mm/ksm.c: no pte_mkold, no pte_mkyoung), and x86's
    PAGE_COPY and PAGE_READONLY carry _PAGE_ACCESSED (4.5.0 and 6.18.2
    arch/x86/include/asm/pgtable_types.h): the replaced PTE is young, read-only and clean even
    when the old one was old. write_protect_page() only write-protects and cleans the PTE of
    the page that becomes the KSM page (pte_mkclean(pte_wrprotect(entry))), so that PTE stays
    old. Pass 2: page 0 goes into the unstable tree, page 1 merges with it and becomes the KSM
    page, page 0's PTE is replaced."""
    k, p, addr = identical(kernel_id, n=2, other=0)
    k.ksmd()
    p.clear_refs(1)  # every PTE old
    assert not pte_bits(p, addr) & PTE_YOUNG and not pte_bits(p, addr + PAGE) & PTE_YOUNG
    assert k.ksmd() == 2
    kpage = p.translate(addr + PAGE)
    assert p.translate(addr) == kpage and k.frames.flags[kpage] & PG_ksm
    assert pte_bits(p, addr) & (PTE_YOUNG | PTE_WRITE | PTE_DIRTY) == PTE_YOUNG
    assert not pte_bits(p, addr + PAGE) & (PTE_YOUNG | PTE_WRITE | PTE_DIRTY)


@pytest.mark.parametrize("kernel_id", ALL)
def test_a_page_written_between_passes_waits_a_pass(kernel_id: str) -> None:
    """§2 step 3: a page whose checksum changed since the last pass is volatile: it takes one
    more unchanged pass before it can merge."""
    k, p, addr = identical(kernel_id, n=2, other=0)
    k.ksmd()
    p.write(addr + PAGE, b"diff")
    k.ksmd()
    p.write(addr + PAGE, b"same")
    assert k.ksmd() == 0  # pass 3: page 1 changed again
    assert p.translate(addr) != p.translate(addr + PAGE)
    assert k.ksmd() == 2  # pass 4: both unchanged
    assert p.translate(addr) == p.translate(addr + PAGE)


@pytest.mark.parametrize("kernel_id", ALL)
def test_a_pinned_page_is_never_merged(kernel_id: str) -> None:
    """§3: write_protect_page wants refcount == mapcount (+ swap cache); a pin is one more."""
    k, p, addr = identical(kernel_id, n=2, other=0)
    p.get_user_pages(addr, PAGE)
    k.ksmd(2)
    assert p.translate(addr) != p.translate(addr + PAGE)
    assert not k.frames.flags[p.translate(addr) or 0] & PG_ksm
    # page 1, scanned second, became the KSM page before page 0's merge failed; break_cow's
    # fault (break_ksm) then copied it: a write fault to 6.1 (4.5.0, 5.10.7, 6.1.20 mm/ksm.c),
    # an unshare fault from 6.2 (6.2.1, 6.18.2), which leaves the copy read-only
    copy = p.translate(addr + PAGE)
    assert copy is not None and not k.frames.flags[copy] & PG_ksm
    assert bool(pte_bits(p, addr + PAGE) & PTE_WRITE) == (not since(kernel_id, "6.2"))


@pytest.mark.parametrize("kernel_id", ALL)
def test_write_fault_on_a_ksm_page(kernel_id: str) -> None:
    """§4: a KSM page mapped twice is always copied. Mapped once (the other sharer unmapped),
    5.1-5.8 reuse it in place (reuse_ksm_page: no longer KSM); every other release copies."""
    k, p, addr = identical(kernel_id, n=2, other=0)
    k.ksmd(2)
    kpage = p.translate(addr)
    p.write(addr + PAGE, b"S")
    assert p.translate(addr + PAGE) != kpage and len(k.cow_log) == 1
    p.write(addr, b"T")
    reused = between(kernel_id, "5.1", "5.9")  # 52d1e606ee73 .. 1a0cf26323c8
    assert (p.translate(addr) == kpage) == reused
    assert (len(k.cow_log) == 1) == reused
    assert p.read(addr, 4) == b"Tame" and p.read(addr + PAGE, 4) == b"Same"


@pytest.mark.parametrize("kernel_id", ALL)
def test_fork_shares_ksm_pages_and_the_rmap_finds_the_child(kernel_id: str) -> None:
    """§6: fork maps the KSM page in the child too (mapcount 4); the checker's rmap_walk_ksm
    reaches the child's mappings through the stable node's anon_vma."""
    k, p, addr = identical(kernel_id, n=2, other=0)
    k.ksmd(2)
    kpage = p.translate(addr)
    child = p.fork()
    assert child.translate(addr) == kpage and kpage is not None
    assert page_mapcount(k.frames, kpage) == 4 and k.check() == []
    child.write(addr, b"C")
    assert p.read(addr, 4) == b"same" and child.read(addr, 4) == b"Came"


@pytest.mark.parametrize("kernel_id", ALL)
def test_unmergeable_breaks_ksm_pages(kernel_id: str) -> None:
    """§1: MADV_UNMERGEABLE copies each KSM page for its mapping: writable before 6.2 (a write
    fault), read-only from 6.2 (an unshare fault). The KSM page is freed with its last mapping."""
    k, p, addr = identical(kernel_id, n=2, other=0)
    k.ksmd(2)
    p.madvise(addr, 2 * PAGE, "unmergeable")
    a, b = p.translate(addr), p.translate(addr + PAGE)
    assert a != b and a is not None and b is not None
    assert not k.frames.flags[a] & PG_ksm and not k.ksm.nodes
    writable = bool(pte_bits(p, addr) & PTE_WRITE)
    assert writable == (not since(kernel_id, "6.2"))  # 6.2: an unshare fault
    assert p.read(addr, 4) == b"same" and k.frames.nr_allocated == 2


@pytest.mark.parametrize("kernel_id", ALL)
def test_max_page_sharing(kernel_id: str) -> None:
    """§2: a KSM page with max_page_sharing sharers is full; 5 identical pages with a limit of 2
    give KSM pages of 2 + 2 and one page left alone (N mod M = 1: N div M KSM pages). Before
    4.13 (2c653d0ee2ae) there is no limit: one KSM page for all five."""
    k, p, addr = identical(kernel_id, n=5, other=0)
    k.ksm_max_page_sharing = 2
    k.ksmd(2)
    pfns = [p.translate(addr + i * PAGE) for i in range(5)]
    limited = since(kernel_id, "4.13")
    assert (len(set(pfns)), len(k.ksm.nodes)) == ((3, 2) if limited else (1, 1))


@pytest.mark.parametrize("kernel_id", ALL)
def test_a_forked_page_is_not_merged_with_itself(kernel_id: str) -> None:
    """unstable_tree_search_insert(): parent and child map the same page at the same address;
    finding itself in the unstable tree, the page is left alone."""
    k, p, addr = identical(kernel_id, n=1, other=0)
    p.fork()
    assert k.ksmd(3) == 0 and not k.ksm.nodes
    assert not k.frames.flags[p.translate(addr) or 0] & PG_ksm


@pytest.mark.parametrize("kernel_id", ["v5.19", "v6.18"])
def test_merging_a_thp_with_zero_filled_subpages(kernel_id: str) -> None:
    """try_to_merge_one_page() splits the THP first; from 6.12 the split maps the zero-filled
    subpages to the zero page, so a merge partner that was one of them is gone: no merge, no
    crash. The two written subpages with the same bytes merge."""
    k = Kernel(kernel_id, selfcheck=True)
    k.thp_enabled = "always"
    p = k.spawn()
    addr = p.mmap(2 << 20, align=2 << 20)
    p.write(addr, b"same")
    p.write(addr + 3 * PAGE, b"same")
    p.madvise(addr, 2 << 20, "mergeable")
    k.ksmd(3)
    assert p.translate(addr) == p.translate(addr + 3 * PAGE)
    assert p.read(addr + PAGE, 4) == bytes(4)


@pytest.mark.parametrize("kernel_id", ["4.11", "6.10", "6.11", "6.18"])
def test_a_new_zero_filled_page_and_a_zero_filled_ksm_page(kernel_id: str) -> None:
    """Two zero-filled pages merge into a KSM page while use_zero_pages is 0; then it is set and
    a third zero-filled page appears. 4.11-6.10 (6.9.0 cmp_and_merge_page: the stable-tree
    search comes first) join it to the KSM page in the next pass. 6.11+ (6.11.11: the checksum
    test, then try_to_merge_with_zero_page, then the stable-tree search): the first pass only
    stores its checksum, the second maps it to the zero page."""
    k = Kernel(kernel_id, selfcheck=True)
    p = k.spawn()
    addr = p.mmap(3 * PAGE)
    for i in range(2):
        p.write(addr + i * PAGE, bytes(4))
    p.madvise(addr, 3 * PAGE, "mergeable")
    k.ksmd(2)
    kpage = p.translate(addr)
    assert kpage is not None and k.frames.flags[kpage] & PG_ksm
    k.ksm_use_zero_pages = True
    p.write(addr + 2 * PAGE, bytes(4))
    k.ksmd()
    joined = p.translate(addr + 2 * PAGE) == kpage
    assert joined == (not since(kernel_id, "6.11"))
    k.ksmd()
    third = p.translate(addr + 2 * PAGE)
    assert third == (ZERO_PFN if since(kernel_id, "6.11") else kpage)
    assert p.read(addr + 2 * PAGE, 4) == bytes(4)


@pytest.mark.parametrize("kernel_id", ALL)
def test_mremap_breaks_ksm_pages_first(kernel_id: str) -> None:
    """move_vma() calls ksm_madvise(MADV_UNMERGEABLE) on the old range before moving it."""
    k, p, addr = identical(kernel_id, n=2, other=0)
    k.ksmd(2)
    spare = p.mmap(2 * PAGE)
    p.mremap(addr, 2 * PAGE, 2 * PAGE, may_move=True, fixed_addr=spare)
    assert k.check() == []
    assert not k.frames.flags[p.translate(spare) or 0] & PG_ksm
    assert p.read(spare + PAGE, 4) == b"same"


@pytest.mark.parametrize("kernel_id", [k for k in ALL if since(k, "4.13")])
def test_a_cow_broken_sharer_leaves_the_stable_node(kernel_id: str) -> None:
    """remove_rmap_item_from_tree(): an address that no longer maps the KSM page leaves its node
    at the next pass. Pages A, B, C alike, max_page_sharing 2: pass 2 merges A and B (full), C
    waits in the unstable tree. A's write gives A a private copy with the same bytes; in pass 3
    A leaves the node, then rejoins it (room for one more) before C is seen. Had A's item stayed,
    the node would look full and A's copy would pair with C instead."""
    k, p, addr = identical(kernel_id, n=3, other=0)
    k.ksm_max_page_sharing = 2
    k.ksmd(2)
    kpage = p.translate(addr)
    assert kpage == p.translate(addr + PAGE) != p.translate(addr + 2 * PAGE)
    p.write(addr, b"same")  # the same bytes, now in a private copy
    k.ksmd(2)
    assert p.translate(addr) == p.translate(addr + PAGE) == kpage
    assert p.translate(addr + 2 * PAGE) != kpage
    (node,) = k.ksm.nodes.values()
    assert sorted(i.addr for i in node.items) == [addr, addr + PAGE]


@pytest.mark.parametrize("kernel_id", ALL)
def test_a_shared_ksm_page_is_reclaimed_until_12e967fd8e4e(kernel_id: str) -> None:
    """Two merged pages, then fork: one KSM page mapped four times (P's two, C's two: C's VMA is
    in the anon_vma tree of P's rmap_items). A swap-out of P's first page, until written.
    4.5 .. 5.3, the reclaim path, and 5.4.0 .. 5.5 MADV_PAGEOUT (5.4.6: no mapcount test for a
    small page): shrink_page_list has no KSM test, try_to_unmap goes through rmap_walk_ksm,
    every item's anon_vma, so all four mappings become swap PTEs of one slot (swap count 4) and
    the KSM page waits in the swap cache, still KSM. From 12e967fd8e4e (5.6; 5.4.28, 5.5.12):
    MADV_PAGEOUT leaves a page with page_mapcount 4 alone (madvise_cold_or_pageout_pte_range,
    no KSM test either: 5.4.38, 5.6.4 .. 6.18.2)."""
    k, p, addr = identical(kernel_id, n=2, other=0)
    assert k.ksmd(2) == 2
    kpage = p.translate(addr)
    assert kpage is not None
    c = p.fork()
    assert page_mapcount(k.frames, kpage) == 4
    p.swapout(addr, PAGE, until="written")
    reclaimed = PageoutSkipsCowPages not in resolve(kernel_id).policy.changes
    f = k.frames
    assert [p.translate(addr + i * PAGE) is None for i in range(2)] == [reclaimed] * 2
    assert [c.translate(addr + i * PAGE) is None for i in range(2)] == [reclaimed] * 2
    assert page_mapcount(f, kpage) == (0 if reclaimed else 4) and f.flags[kpage] & PG_ksm
    slot = int(f.private[kpage]) if reclaimed else None
    if slot is not None:
        assert int(k.swap.swap_map[slot]) == 4


@pytest.mark.parametrize("kernel_id", ALL)
def test_a_ksm_page_the_range_maps_twice_is_reclaimed_once(kernel_id: str) -> None:
    """Two merged pages: one KSM page at both addresses of the range. A swap-out of the range,
    until freed, takes the page once - isolate_lru_page() fails for a page already off the LRU
    (4.5.0, 5.4.6 mm/vmscan.c, 5.4.6 madvise_cold_or_pageout_pte_range) - and rmap_walk_ksm
    unmaps both PTEs into swap PTEs of one slot (swap count 2); written, the page is freed. From
    12e967fd8e4e (5.6) MADV_PAGEOUT leaves a page mapped twice alone."""
    k, p, addr = identical(kernel_id, n=2, other=0)
    assert k.ksmd(2) == 2
    kpage = p.translate(addr)
    reclaimed = PageoutSkipsCowPages not in resolve(kernel_id).policy.changes
    assert p.swapout(addr, 2 * PAGE) == int(reclaimed)
    if not reclaimed:
        assert p.translate(addr) == p.translate(addr + PAGE) == kpage
        return
    assert p.translate(addr) is None and p.translate(addr + PAGE) is None
    assert k.frames.nr_allocated == 0 and not k.ksm.nodes
    assert int(k.swap.swap_map[: k.swap.nr].sum()) == 2 and (k.swap.swap_map == 2).sum() == 1


RECLAIM_TAKES_SHARED = [i for i in ALL if PageoutSkipsCowPages not in resolve(i).policy.changes]


@pytest.mark.parametrize("kernel_id", RECLAIM_TAKES_SHARED)
def test_a_slot_two_addresses_share_gives_the_second_a_copy(kernel_id: str) -> None:
    """The swap-out above leaves one slot at both addresses (swap count 2, the KSM page freed).
    A read at the first reads the slot into a plain page in the swap cache, mapped there: its
    index that address's. At the second, do_swap_page finds that page in the swap cache, and
    ksm_might_need_to_copy sees another linear index: a copy (ksm_swpin_copy), dirty, outside
    the swap cache, this VMA's own and mapped once, read-only (a read fault before 5.19); the
    fault's reference on the swap-cache page goes, which keeps its PTE's and the cache's. A
    write there reuses the copy (page_mapcount 1, no swap slot)."""
    k, p, addr = identical(kernel_id, n=2, other=0)
    k.ksmd(2)
    p.swapout(addr, 2 * PAGE)
    f, vma = k.frames, p.mm.find_vma(addr)
    assert vma is not None and vma.anon_vma is not None
    assert p.read(addr, 4) == b"same"
    first = p.translate(addr)
    assert first is not None and k.vmstat["ksm_swpin_copy"] == 0
    assert p.read(addr + PAGE, 4) == b"same"
    copy = p.translate(addr + PAGE)
    assert copy is not None and copy != first and k.vmstat["ksm_swpin_copy"] == 1
    assert int(f.index[first]) == vma.linear_page_index(addr)
    assert int(f.index[copy]) == vma.linear_page_index(addr + PAGE)
    assert int(f.mapping[copy]) == vma.anon_vma.id
    assert f.flags[copy] & PG_dirty and not f.flags[copy] & (PG_swapcache | PG_ksm)
    assert (page_mapcount(f, copy), page_count(f, copy)) == (1, 1)
    assert (page_mapcount(f, first), page_count(f, first)) == (1, 2)
    assert f.flags[first] & PG_swapcache and int(k.swap.swap_map[int(f.private[first])]) == 0
    assert not pte_bits(p, addr + PAGE) & PTE_WRITE
    p.write(addr + PAGE, b"mine")
    assert p.translate(addr + PAGE) == copy and p.read(addr, 4) == b"same"


@pytest.mark.parametrize("fork", [False, True])
@pytest.mark.parametrize(
    ("flavour", "write"), [("longterm", True), ("longterm", False), ("pin", True), ("get", False)]
)
def test_a_pin_after_a_merged_thp_is_swapped_out_copies_page_1(
    fork: bool, flavour: str, write: bool
) -> None:
    """`cowlab check --kernel v4.5 --depth 4 --alphabet full`'s six consistency breaks, and the
    two write pins after the fork (the child keeps its THP: only P marks the range mergeable),
    replayed: ksmd merges page 0 and 1
    (bytes 1) into one KSM page and pages 2-511 (zeros) into another; the swap-out leaves one
    slot at addresses 0 and 1. The pin faults page 0 in (the slot read into a plain page, its
    index page 0's; a write pin copies it on: the slot's swap count is 2), then page 1:
    ksm_might_need_to_copy finds that page in the swap cache with page 0's index and copies it
    (once). Each pinned page is P's own, with bytes 1, and the counters and rmap hold."""
    k = Kernel("v4.5", selfcheck=True)
    k.thp_enabled = "madvise"
    p = k.spawn()
    addr = p.mmap(2 << 20, align=2 << 20)
    p.madvise(addr, 2 << 20, "hugepage")
    p.fill(addr, 2 * PAGE, 1)
    if fork:
        p.fork()
    p.madvise(addr, 2 << 20, "mergeable")
    k.ksmd(2)
    p.swapout(addr, 2 << 20)
    pin = p.get_user_pages(addr, 2 * PAGE, write=write, flavour=flavour)
    pages = [p.translate(addr), p.translate(addr + PAGE)]
    assert k.vmstat["ksm_swpin_copy"] == 1 and pages[0] != pages[1]
    assert [int(x) for x in pin.pages] == pages
    assert p.read(addr, 2 * PAGE) == b"\x01" * 2 * PAGE


@pytest.mark.parametrize("kernel_id", ["v4.14", "v5.4", "v6.18"])
def test_a_ksm_page_without_a_stable_node_is_copied_at_swap_in(kernel_id: str) -> None:
    """The KSM page of the test below, in the swap cache with its swap PTE, but with its stable
    node NULL (set_page_stable_node(page, NULL), as a failed second merge leaves it):
    ksm_might_need_to_copy copies it - only a KSM page with a stable node is mapped as it is."""
    k, p, addr = identical(kernel_id, n=2, other=0)
    k.ksmd(2)
    kpage = p.translate(addr)
    p.write(addr + PAGE, b"S")
    p.swapout(addr, PAGE, until="written")
    assert kpage is not None and k.frames.flags[kpage] & PG_swapcache
    k.frames.mapping[kpage] = NULL_STABLE_NODE
    assert p.read(addr, 4) == b"same" and k.vmstat["ksm_swpin_copy"] == 1
    copy = p.translate(addr)
    assert copy is not None and copy != kpage and not k.frames.flags[copy] & PG_ksm


@pytest.mark.parametrize("kernel_id", ["v4.14", "v5.4", "v6.18"])
def test_a_ksm_page_swapped_in_after_ksmd_dropped_its_item(kernel_id: str) -> None:
    """A KSM page mapped once is swapped out and kept in the swap cache; a ksmd pass finds a swap
    PTE at the address and drops its rmap_item (get_next_rmap_item /
    remove_trailing_rmap_items), the stable node stays with the page. A read swaps the KSM page
    in as it is (ksm_might_need_to_copy: KSM with a stable node), mapped again, read-only, with
    no rmap_item (the checker accepts it: 6.18.2 mm/ksm.c, and live 6.18 keeps the page KSM).
    The next pass meets the page at the address again: cmp_and_merge_page finds it in the stable
    tree as its own KSM page and stable_tree_append hangs a new rmap_item on its node."""
    k, p, addr = identical(kernel_id, n=2, other=0)
    k.ksmd(2)
    kpage = p.translate(addr)
    p.write(addr + PAGE, b"S")  # a copy: the KSM page is mapped once
    p.swapout(addr, PAGE, until="written")
    assert p.translate(addr) is None
    k.ksmd()
    assert (
        (p.pid, addr) not in k.ksm.items
        and kpage is not None
        and kpage in {n.kpfn for n in k.ksm.nodes.values()}
    )
    assert p.read(addr, 4) == b"same" and p.translate(addr) == kpage
    assert k.frames.flags[kpage] & PG_ksm and not pte_bits(p, addr) & PTE_WRITE
    k.ksmd()
    (node,) = [n for n in k.ksm.nodes.values() if n.kpfn == kpage]
    assert [(i.pid, i.addr) for i in node.items] == [(p.pid, addr)]


def merged_after_fork(
    kernel_id: str, by_child: bool = True
) -> tuple[Kernel, Process, Process, int]:
    """P writes two identical pages and forks; only C (or only P) marks them mergeable; two
    ksmd passes (selfcheck: the counters and the rmap after each, rmap_walk_ksm's reach
    included)."""
    k = Kernel(kernel_id, selfcheck=True)
    p = k.spawn()
    addr = p.mmap(2 * PAGE)
    p.write(addr, b"same")
    p.write(addr + PAGE, b"same")
    c = p.fork()
    (c if by_child else p).madvise(addr, 2 * PAGE, "mergeable")
    k.ksmd(2)
    return k, p, c, addr


@pytest.mark.parametrize("kernel_id", ["v4.5", "v5.10", "v6.18"])
def test_a_parent_mapping_a_page_merged_in_its_child_is_out_of_reach(kernel_id: str) -> None:
    """P writes two identical pages and forks; only C marks them mergeable. ksmd's second pass
    makes C's page 1 (scanned second, page 0 waiting in the unstable tree) the KSM page and
    points C's page 0 at it. Page 1 is P's too, shared by fork: P's PTE keeps it, and no
    rmap_item's anon_vma tree (C's own VMA's) holds P's VMA, so rmap_walk_ksm misses it, in
    the kernel too (mm/ksm.c); live 6.18 shows P's page 1 KSM and page 0 not (2026-12-02)."""
    k, p, c, addr = merged_after_fork(kernel_id)
    kpage = c.translate(addr + PAGE)
    assert kpage is not None and k.frames.flags[kpage] & PG_ksm
    assert c.translate(addr) == kpage == p.translate(addr + PAGE) != p.translate(addr)
    assert k.ksm.unreached == {(p.pid, addr + PAGE)}


@pytest.mark.parametrize("kernel_id", ["v4.5", "v5.10", "v6.18"])
def test_unmergeable_leaves_a_vma_that_is_not_mergeable(kernel_id: str) -> None:
    """As above, then P (whose VMA never had VM_MERGEABLE) advises MADV_UNMERGEABLE: ksm_madvise
    ignores the advice for such a VMA (4.5.0, 6.18.2 mm/ksm.c), so P's PTE keeps the KSM page,
    read-only; C's advice breaks C's two mappings."""
    k, p, c, addr = merged_after_fork(kernel_id)
    kpage = p.translate(addr + PAGE)
    assert kpage is not None and k.frames.flags[kpage] & PG_ksm
    p.madvise(addr, 2 * PAGE, "unmergeable")
    assert p.translate(addr + PAGE) == kpage and not pte_bits(p, addr + PAGE) & PTE_WRITE
    c.madvise(addr, 2 * PAGE, "unmergeable")
    assert kpage not in (c.translate(addr), c.translate(addr + PAGE))
    assert p.translate(addr + PAGE) == kpage and page_mapcount(k.frames, kpage) == 1


@pytest.mark.parametrize("kernel_id", ["v4.5", "v5.10", "v6.18"])
def test_mremap_moves_a_ksm_page_of_a_vma_that_is_not_mergeable(kernel_id: str) -> None:
    """As above, then P moves its two pages (mremap MAYMOVE|FIXED): move_vma's
    ksm_madvise(MADV_UNMERGEABLE) is ignored for P's VMA, which lacks VM_MERGEABLE (4.5.0,
    6.18.2 mm/mremap.c and mm/ksm.c), so the KSM page moves with P's PTEs; rmap_walk_ksm looks
    only at its rmap_items' addresses (C's), so the moved mapping is out of its reach as the
    old one was - the kernel's own blind spot, no finding."""
    k, p, c, addr = merged_after_fork(kernel_id)
    kpage = p.translate(addr + PAGE)
    new = p.mremap(addr, 2 * PAGE, 2 * PAGE, may_move=True, fixed_addr=addr + (1 << 30))
    assert p.translate(new + PAGE) == kpage == c.translate(addr + PAGE)
    assert kpage is not None and k.frames.flags[kpage] & PG_ksm
    assert k.ksm.unreached == {(p.pid, new + PAGE)}


@pytest.mark.parametrize("kernel_id", ["v4.5", "v5.10", "v6.18"])
@pytest.mark.parametrize("leave", ["exit", "write"])
def test_a_child_reached_through_its_parent_s_item_only_is_stranded(
    kernel_id: str, leave: str
) -> None:
    """P writes two identical pages and forks; only P marks them mergeable. ksmd's second pass
    makes page 1, which C shares by fork, the KSM page (P's page 0 points to it too); C's
    mapping is reached through P's item at page 1, whose anon_vma tree holds C's VMA. Then P
    exits, or writes page 1 (a private copy): ksmd's next pass frees P's items (ksm_exit) or
    takes the item off the node (cmp_and_merge_page: no longer that KSM page). rmap_walk_ksm
    goes through the node's items only, so C's mapping is out of its reach - in the kernel too
    (4.5.0 and 6.18.2 mm/ksm.c rmap_walk_ksm, remove_rmap_item_from_tree). Found by
    `cowlab check --alphabet full --depth 4 --kernel v6.18` as a consistency break."""
    k, p, c, addr = merged_after_fork(kernel_id, by_child=False)
    kpage = c.translate(addr + PAGE)
    assert kpage is not None and kpage == p.translate(addr) and k.frames.flags[kpage] & PG_ksm
    assert not k.ksm.unreached
    if leave == "exit":
        p.exit()
    else:
        p.write(addr + PAGE, b"S")
    k.ksmd()  # selfcheck: C's mapping is no finding
    assert c.translate(addr + PAGE) == kpage and k.ksm.unreached == {(c.pid, addr + PAGE)}


@pytest.mark.parametrize("kernel_id", ["v4.5", "v5.4", "v5.10", "v6.1", "v6.2", "v6.18"])
def test_a_failed_second_merge_leaves_a_forked_page_ksm_without_a_stable_node(
    kernel_id: str,
) -> None:
    """P writes page 1 and forks; C writes page 0 with the same bytes, pins it R/W and marks
    both mergeable. ksmd's second pass makes C's page 1 (scanned second) the KSM page with a
    NULL stable node (try_to_merge_one_page: set_page_stable_node(page, NULL)), then page 0's
    merge fails (write_protect_page: the pin is a reference beyond the mappings), so
    try_to_merge_two_pages calls break_cow for C's page 1 only and inserts no stable node
    (4.5.0, 5.10.7, 6.1.20, 6.18.2 mm/ksm.c). P's PTE keeps the page: PageKsm, no stable node,
    which rmap_walk_ksm, reclaim's walk, leaves at once (page_stable_node / folio_stable_node
    NULL) - the kernel's own state, not an inconsistency. C's copy (wp_page_copy; exclusive
    from 5.19) is writable to 6.1 (a write fault), read-only from 6.2 (FAULT_FLAG_UNSHARE).
    P's later write copies the page on every release: PageKsm is never reused, nor by
    5.1-5.8's reuse_ksm_page without a stable node (docs/sources-ksm.md §4); the page is freed
    with that last mapping."""
    k = Kernel(kernel_id, selfcheck=True)
    p = k.spawn()
    addr = p.mmap(2 * PAGE)
    p.write(addr + PAGE, b"same")
    c = p.fork()
    c.write(addr, b"same")
    c.get_user_pages(addr, PAGE)
    c.madvise(addr, 2 * PAGE, "mergeable")
    old = p.translate(addr + PAGE)
    k.ksmd(2)  # selfcheck: a PageKsm page with no stable node is no finding
    assert old is not None and k.frames.flags[old] & PG_ksm and not k.ksm.nodes
    assert p.translate(addr + PAGE) == old != c.translate(addr + PAGE)
    copy = c.translate(addr + PAGE)
    assert copy is not None and not k.frames.flags[copy] & PG_ksm
    unshared = since(kernel_id, "6.2")
    assert bool(pte_bits(c, addr + PAGE) & PTE_WRITE) == (not unshared)
    assert bool(k.frames.flags[copy] & PG_anon_exclusive) == since(kernel_id, "5.19")
    assert c.read(addr + PAGE, 4) == b"same" and k.frames.nr_allocated == 3
    cows = len(k.cow_log)
    p.write(addr + PAGE, b"S")
    assert p.translate(addr + PAGE) not in (None, old) and len(k.cow_log) == cows + 1
    assert k.frames.nr_allocated == 3 and p.read(addr + PAGE, 4) == b"Same"


@pytest.mark.parametrize("kernel_id", ["v4.14", "v5.4", "v6.18"])
def test_a_child_forked_after_such_a_swap_in_is_out_of_reach_too(kernel_id: str) -> None:
    """As above, and a child forked after the swap-in: copy_present_pte maps the KSM page in
    it, and no rmap_item reaches it either (fork copies no items; the child's VMA is linked only
    to its parent VMA's anon_vmas and its own: anon_vma_fork, 4.5.0 and 6.18.2). The parent's
    next write copies its mapping away (do_wp_page); the next pass hangs the child's new item
    on the node, and none for the parent, whose page is its own now."""
    k, p, addr = identical(kernel_id, n=2, other=0)
    k.ksmd(2)
    kpage = p.translate(addr)
    p.write(addr + PAGE, b"S")
    p.swapout(addr, PAGE, until="written")
    k.ksmd()
    assert p.read(addr, 4) == b"same" and p.translate(addr) == kpage
    c = p.fork()
    assert c.translate(addr) == kpage and k.ksm.unreached == {(p.pid, addr), (c.pid, addr)}
    p.write(addr, b"P")
    assert p.translate(addr) != kpage
    k.ksmd()
    (node,) = [n for n in k.ksm.nodes.values() if n.kpfn == kpage]
    assert [(i.pid, i.addr) for i in node.items] == [(c.pid, addr)] and not k.ksm.unreached


@pytest.mark.parametrize("kernel_id", ["v4.14", "v5.4", "v6.18"])
def test_a_ksm_page_swapped_in_where_a_parent_item_reaches_it(kernel_id: str) -> None:
    """A child forked after the merge maps the KSM page through its parent's rmap_items (their
    anon_vma's tree holds the child's VMA). The parent copies both pages away; the child keeps
    the KSM page at addr only; it is swapped out (rmap_walk_ksm finds it through the parent's
    item) and read back before any ksmd pass: the parent's item at addr still reaches it, so
    nothing is out of reach. The next pass takes the parent's items off the node (their
    addresses map other pages: remove_rmap_item_from_tree) and hangs the child's."""
    k, p, addr = identical(kernel_id, n=2, other=0)
    k.ksmd(2)
    kpage = p.translate(addr)
    c = p.fork()
    p.write(addr, b"P")
    p.write(addr + PAGE, b"P")
    c.write(addr + PAGE, b"C")
    c.swapout(addr, PAGE, until="written")
    assert c.translate(addr) is None
    assert c.read(addr, 4) == b"same" and c.translate(addr) == kpage and not k.ksm.unreached
    k.ksmd()
    (node,) = [n for n in k.ksm.nodes.values() if n.kpfn == kpage]
    assert [(i.pid, i.addr) for i in node.items] == [(c.pid, addr)]


@pytest.mark.parametrize("kernel_id", ALL)
def test_a_mapping_two_rmap_items_reach_is_unmapped_once(kernel_id: str) -> None:
    """Two merged pages, fork, and a ksmd pass that hangs C's own rmap_items on the stable node:
    C's PTE is now reached by rmap_walk_ksm through P's item (C's VMA is in P's anon_vma tree)
    and through C's own. P writes both pages and C the second (copies), so the KSM page is
    mapped once, by C's first page. Its swap-out (MADV_PAGEOUT from 5.4, the reclaim path
    before: neither tests PageKsm) unmaps that mapping once: on the second visit
    try_to_unmap_one's page_vma_mapped_walk finds no PTE mapping the page (4.5.0 .. 6.18.2
    mm/ksm.c rmap_walk_ksm, mm/rmap.c). One swap PTE, swap count 1, the page mapped nowhere."""
    k, p, addr = identical(kernel_id, n=2, other=0)
    assert k.ksmd(2) == 2
    kpage = p.translate(addr)
    assert kpage is not None
    c = p.fork()
    k.ksmd(2)
    (node,) = k.ksm.nodes.values()
    assert len(node.items) == 4
    p.write(addr, b"X")
    p.write(addr + PAGE, b"X")
    c.write(addr + PAGE, b"Y")
    assert page_mapcount(k.frames, kpage) == 1
    c.swapout(addr, PAGE, until="written")
    assert c.translate(addr) is None
    assert page_mapcount(k.frames, kpage) == 0
    assert int(k.swap.swap_map[int(k.frames.private[kpage])]) == 1


@pytest.mark.parametrize("kernel_id", ["v4.5", "v5.10", "v6.1", "v6.18"])
def test_a_page_without_a_stable_node_merged_again_leaves_a_sibling_out_of_reach(
    kernel_id: str,
) -> None:
    """P writes page 1 and forks C, C forks D: the three share it. C leaves it KSM with a NULL
    stable node (the failed second merge above), then writes both pages with bytes of its own.
    D writes page 0 with page 1's bytes and marks both mergeable: ksmd merges D's page 1, the
    NULL-node page, first (the stable node's items are D's) and points D's page 0 at it. P
    still maps the page, and P's VMA is in no tree of D's items' anon_vma (D's own VMA's), so
    rmap_walk_ksm misses P's mapping, in the kernel too (4.5.0, 6.18.2 mm/ksm.c): listed in
    `unreached`, where the model found no mapping to list, its page having no anon_vma."""
    k = Kernel(kernel_id, selfcheck=True)
    p = k.spawn()
    addr = p.mmap(2 * PAGE)
    p.write(addr + PAGE, b"same")
    c = p.fork()
    d = c.fork()
    c.write(addr, b"same")
    c.get_user_pages(addr, PAGE)
    c.madvise(addr, 2 * PAGE, "mergeable")
    kpage = p.translate(addr + PAGE)
    k.ksmd(2)
    assert kpage is not None and k.frames.mapping[kpage] == NULL_STABLE_NODE
    c.write(addr, b"c0")
    c.write(addr + PAGE, b"c1")
    d.write(addr, b"same")
    d.madvise(addr, 2 * PAGE, "mergeable")
    k.ksmd(2)  # selfcheck: P's mapping is no finding
    assert d.translate(addr) == d.translate(addr + PAGE) == p.translate(addr + PAGE) == kpage
    assert k.frames.flags[kpage] & PG_ksm and len(k.ksm.nodes) == 1
    assert k.ksm.unreached == {(p.pid, addr + PAGE)}


@pytest.mark.parametrize("kernel_id", ["v4.5", "v5.10+9348b73+feb889f", "v6.10", "v6.11", "v6.18"])
def test_a_failed_merge_with_a_stable_page_ends_the_page_s_turn(kernel_id: str) -> None:
    """cmp_and_merge_page returns once the merge with the KSM page stable_tree_search found
    fails (4.5.0, 5.10.7, 6.1.20, 6.18.2 mm/ksm.c): the page's checksum is not updated and it
    does not go into the unstable tree. Pages 0, 1 hold X and merge in pass 2 (a KSM page K);
    pages 2, 3 hold Y, Z then, and X from before pass 3, GUP-pinned. Pass 3 before 6.11 (stable
    search first): each finds K, write_protect_page refuses (a reference beyond the mapping), so
    their checksums stay Y, Z. Unpinned, K's two sharers written (K freed): in pass 4 the
    checksums differ from X's - both volatile, no merge; pass 5 merges them (2). 6.11+
    (d58a361b0350) checksums before the stable search: pass 3 stores X for both, pass 4 merges
    them."""
    k = Kernel(kernel_id, selfcheck=True)
    p = k.spawn()
    a = p.mmap(4 * PAGE)
    for i, data in enumerate([b"X", b"X", b"Y", b"Z"]):
        p.write(a + i * PAGE, data)
    p.madvise(a, 4 * PAGE, "mergeable")
    assert (k.ksmd(), k.ksmd()) == (0, 2)
    pin = p.get_user_pages(a + 2 * PAGE, 2 * PAGE)
    p.write(a + 2 * PAGE, b"X")
    p.write(a + 3 * PAGE, b"X")
    assert k.ksmd() == 0
    k.unpin(pin)
    p.write(a, b"a")
    p.write(a + PAGE, b"b")
    late = not since(kernel_id, "6.11")
    assert k.ksmd() == (0 if late else 2)
    if late:
        assert p.translate(a + 2 * PAGE) != p.translate(a + 3 * PAGE)
        assert k.ksmd() == 2
    kpage = p.translate(a + 2 * PAGE)
    assert kpage is not None and p.translate(a + 3 * PAGE) == kpage
    assert k.frames.flags[kpage] & PG_ksm
