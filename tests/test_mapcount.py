"""Unit tests of the 4.5 THP counters on hand-computed states (kernel-semantics.md §A.3, §A.5).

Every state is built through the public Process/Kernel API and every expected number below is
derived by hand from the rules, never captured from a run. Notation (§A.3), for a THP with head H:

* C  = compound_mapcount(H) = H[1].compound_mapcount + 1 = number of PMD maps;
* DM = PageDoubleMap(H) (PG_double_map in page[1].flags);
* m_i + 1 = the raw H[i]._mapcount + 1 (PTE maps of subpage i, plus DM);
* page_mapcount(i) = (m_i + 1) + C - DM;
* total_mapcount(H) = C + sum_i (m_i + 1) - 512 * DM;
* page_trans_huge_mapcount = max_i (m_i + 1) - DM + C (its second result is total_mapcount);
* page_count(any subpage) = H._count: one reference per PMD map, per PTE map and per GUP pin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from cowlab import Config, Kernel, Process
from cowlab.mm.constants import PG_head, PG_tail
from cowlab.mm.huge_memory import page_trans_huge_mapcount, total_mapcount
from cowlab.mm.mm import (
    PageDoubleMap,
    PageTransCompound,
    compound_mapcount,
    page_count,
    page_mapcount,
)
from cowlab.mm.pgtable import HugePmd, PteTable
from cowlab.mm.swapfile import reuse_swap_page

KiB = 1 << 10
MiB = 1 << 20
PAGE = 4 * KiB
NR = 512
KERNELS = ("v4.5", "v4.5+6d0a07e", "v4.5+6d0a07e-early")
ALL = range(NR)


# --- building the §A.5 states through the public API ---------------------------------------


@dataclass
class State:
    k: Kernel
    parent: Process
    child: Process | None
    base: int
    head: int


def fresh_thp(kid: str, config: Config | None = None) -> State:
    """S0: a 4 MiB 2 MiB-aligned RW private mapping, MADV_HUGEPAGE, one write at its start.

    The write fault at base takes do_huge_pmd_anonymous_page (the aligned 2 MiB lies inside the
    VMA), so one PMD maps a new THP: page_add_new_anon_rmap(compound) gives C = 1, every
    _mapcount stays -1, and the allocation's single reference is the PMD's.
    """
    k = Kernel(kid, config=config, selfcheck=True)
    p = k.spawn()
    base = p.mmap(4 * MiB, "rw", align=2 * MiB)
    p.madvise(base, 4 * MiB, "hugepage")
    p.write(base, b"S0")
    head = p.translate(base)
    assert head is not None
    return State(k, p, None, base, head)


def split_own_pmd(p: Process, base: int) -> None:
    """mprotect one subpage RO and back to RW: the VMA split at base+4K splits the PMD (§B.4)."""
    p.mprotect(base + PAGE, PAGE, "r")
    p.mprotect(base + PAGE, PAGE, "rw")


def build(kid: str, name: str, config: Config | None = None) -> State:
    s = fresh_thp(kid, config)
    if name == "S0":
        return s
    if name in ("S1", "S2", "S3"):
        s.child = s.parent.fork()
        if name in ("S2", "S3"):
            split_own_pmd(s.child, s.base)
        if name == "S3":
            s.child.exit()
        return s
    split_own_pmd(s.parent, s.base)  # S4
    if name in ("S5", "S6"):
        s.child = s.parent.fork()
    if name == "S6":
        s.child.munmap(s.base + MiB, MiB)  # subpages 256..511 leave the child
        s.parent.munmap(s.base, MiB)  # subpages 0..255 leave the parent
    return s


@dataclass(frozen=True)
class Expect:
    C: int
    DM: int
    m: int  # raw _mapcount + 1, the same for every subpage in these states
    ref: int
    page_mapcount: int
    total: int
    ptm: int


# Each row is derived from the §A.3 formulas, step by step (§B transitions in brackets):
TABLE = {
    # fresh THP: C=1 (page_add_new_anon_rmap compound), m=0, ref=1 (the PMD's).
    # page_mapcount = 0+1-0 = 1; total = 1+0-0 = 1; ptm = 0-0+1 = 1.
    "S0": Expect(C=1, DM=0, m=0, ref=1, page_mapcount=1, total=1, ptm=1),
    # fork, copy_huge_pmd: get_page (ref 2) + page_dup_rmap(compound) (C 2).
    # page_mapcount = 0+2 = 2; total = 2; ptm = 0+2 = 2.
    "S1": Expect(C=2, DM=0, m=0, ref=2, page_mapcount=2, total=2, ptm=2),
    # child's __split_huge_pmd_locked: ref += 511 -> 513; m += 1 (its PTE); C was 2 > 1 so
    # DoubleMap is set and m += 1 again -> m = 2; C -= 1 -> 1.
    # page_mapcount = 2+1-1 = 2; total = 1 + 512*2 - 512 = 513; ptm = 2-1+1 = 2.
    "S2": Expect(C=1, DM=1, m=2, ref=513, page_mapcount=2, total=513, ptm=2),
    # child exits: zap_pte_range drops 512 PTE maps (m 2 -> 1) and 512 refs (513 -> 1).
    # DM stays (the parent's PMD remains). page_mapcount = 1+1-1 = 1;
    # total = 1 + 512 - 512 = 1; ptm = 1-1+1 = 1.
    "S3": Expect(C=1, DM=1, m=1, ref=1, page_mapcount=1, total=1, ptm=1),
    # S0 then the parent splits its only PMD: ref 1+511 = 512; m 0 -> 1; C was 1 (no DM);
    # C -> 0. page_mapcount = 1+0 = 1; total = 0 + 512 = 512; ptm = 1+0 = 1.
    "S4": Expect(C=0, DM=0, m=1, ref=512, page_mapcount=1, total=512, ptm=1),
    # fork, copy_one_pte per subpage: page_dup_rmap (m 1 -> 2), get_page (ref 512 -> 1024).
    # page_mapcount = 2; total = 1024; ptm = 2.
    "S5": Expect(C=0, DM=0, m=2, ref=1024, page_mapcount=2, total=1024, ptm=2),
    # child zaps 256..511 and parent zaps 0..255: every subpage loses one PTE map (m 2 -> 1),
    # 512 refs go (1024 -> 512). page_mapcount = 1; total = 512; ptm = max(m) = 1 (Kirill's
    # case: no subpage is mapped twice although the THP is mapped by two processes).
    "S6": Expect(C=0, DM=0, m=1, ref=512, page_mapcount=1, total=512, ptm=1),
}


def assert_thp(k: Kernel, head: int, e: Expect) -> None:
    f = k.frames
    assert f.flags[head] & PG_head
    assert (f.flags[head + 1 : head + NR] & PG_tail).all()
    assert int(f.compound_mapcount[head + 1]) + 1 == e.C  # the raw field in page[1]
    assert PageDoubleMap(f, head) == bool(e.DM)
    assert (f._mapcount[head : head + NR] + 1 == e.m).all()
    assert int(f._count[head]) == e.ref
    assert not f._count[head + 1 : head + NR].any(), "tail _count must stay 0 (ddc58f27f9ee)"
    assert total_mapcount(f, head) == e.total
    for i in ALL:
        pfn = head + i
        assert PageTransCompound(f, pfn)
        assert compound_mapcount(f, pfn) == e.C  # compound_mapcount() takes any subpage
        assert page_count(f, pfn) == e.ref  # compound_head(p)._count
        assert page_mapcount(f, pfn) == e.page_mapcount
    for i in (0, 1, 255, 256, 511):
        ptm, total, _ = page_trans_huge_mapcount(f, head + i)
        assert (ptm, total) == (e.ptm, e.total)


@pytest.mark.parametrize("kid", KERNELS)
@pytest.mark.parametrize("name", sorted(TABLE))
def test_a5_table_row(kid: str, name: str) -> None:
    s = build(kid, name)
    assert_thp(s.k, s.head, TABLE[name])
    assert s.k.check() == []


@pytest.mark.parametrize("kid", KERNELS)
def test_a5_row_counters_are_independent_of_config_swap(kid: str) -> None:
    """CONFIG_SWAP=n changes only reuse_swap_page's macro, never the counters (§C.1)."""
    for name, e in TABLE.items():
        s = build(kid, name, Config(swap=False))
        assert_thp(s.k, s.head, e)


@pytest.mark.parametrize("kid", KERNELS)
@pytest.mark.parametrize("pinned", [(0, 1), (0, 3), (37, 2), (0, NR)])
def test_s0_plus_gup_pins(kid: str, pinned: tuple[int, int]) -> None:
    """S0 + GUP pins of n subpages: each pinned 4 KiB subpage is one get_page on the head.

    Pins are plain references in 4.5: ref = 1 + n, nothing else moves (§B.9).
    """
    first, n = pinned
    s = fresh_thp(kid)
    pin = s.parent.get_user_pages(s.base + first * PAGE, n * PAGE, write=True)
    assert pin.pages.tolist() == [s.head + first + i for i in range(n)]
    assert_thp(s.k, s.head, Expect(C=1, DM=0, m=0, ref=1 + n, page_mapcount=1, total=1, ptm=1))
    s.k.unpin(pin)  # put_page on every pinned subpage: back to S0
    assert_thp(s.k, s.head, TABLE["S0"])


@pytest.mark.parametrize("kid", KERNELS)
def test_s4_plus_gup_pins(kid: str) -> None:
    """A read pin of 3 subpages of a PTE-mapped THP: ref 512 + 3, mapcounts as S4."""
    s = build(kid, "S4")
    s.parent.get_user_pages(s.base + 10 * PAGE, 3 * PAGE, write=False)
    e = TABLE["S4"]
    assert_thp(s.k, s.head, Expect(**{**e.__dict__, "ref": 512 + 3}))


@pytest.mark.parametrize("kid", KERNELS)
def test_page_mapcount_of_mixed_subpages(kid: str) -> None:
    """S1, then the child zaps subpages 0..1 with MADV_DONTNEED: per-subpage values differ.

    The child's split (inside zap_pmd_range, partial range) is the S2 step: C 2 -> 1, DM set,
    every m = 2, ref 513. zap_pte_range on subpages 0 and 1: m 2 -> 1, ref 513 -> 511.
    page_mapcount(0|1) = 1+1-1 = 1, page_mapcount(others) = 2+1-1 = 2.
    total = 1 + (2*1 + 510*2) - 512 = 511; ptm = max(m) - DM + C = 2 - 1 + 1 = 2.
    """
    s = build(kid, "S1")
    assert s.child is not None
    s.child.madvise(s.base, 2 * PAGE, "dontneed")
    f = s.k.frames
    h = s.head
    assert compound_mapcount(f, h) == 1 and PageDoubleMap(f, h)
    assert [int(f._mapcount[h + i]) + 1 for i in (0, 1, 2, 511)] == [1, 1, 2, 2]
    assert [page_mapcount(f, h + i) for i in (0, 1, 2, 511)] == [1, 1, 2, 2]
    assert page_count(f, h + 1) == 511
    assert total_mapcount(f, h) == 511
    assert page_trans_huge_mapcount(f, h + 1)[:2] == (2, 511)


@pytest.mark.parametrize("kid", KERNELS)
def test_s6_is_mapped_by_two_processes_in_disjoint_halves(kid: str) -> None:
    """S6's shape: parent maps 256..511, child maps 0..255, each once (what makes ptm 1)."""
    s = build(kid, "S6")
    assert s.child is not None
    for i in (0, 255):
        assert s.child.translate(s.base + i * PAGE) == s.head + i
        assert s.parent.translate(s.base + i * PAGE) is None
    for i in (256, 511):
        assert s.parent.translate(s.base + i * PAGE) == s.head + i
        assert s.child.translate(s.base + i * PAGE) is None


# --- small pages ---------------------------------------------------------------------------


@pytest.mark.parametrize("kid", KERNELS)
def test_small_page_counters(kid: str) -> None:
    """A non-compound page: every count is _mapcount + 1 and ptm returns no subpage (§A.3)."""
    k = Kernel(kid, selfcheck=True)
    k.thp_enabled = "never"
    p = k.spawn()
    a = p.mmap(4 * PAGE)
    p.write(a, b"x")  # do_anonymous_page: _mapcount 0, _count 1
    pfn = p.translate(a)
    assert pfn is not None
    f = k.frames
    assert not PageTransCompound(f, pfn)
    assert (page_mapcount(f, pfn), total_mapcount(f, pfn), page_count(f, pfn)) == (1, 1, 1)
    assert page_trans_huge_mapcount(f, pfn) == (1, 1, None)
    c = p.fork()  # copy_one_pte: +1 mapcount, +1 ref
    assert (page_mapcount(f, pfn), total_mapcount(f, pfn), page_count(f, pfn)) == (2, 2, 2)
    assert page_trans_huge_mapcount(f, pfn) == (2, 2, None)
    p.get_user_pages(a, PAGE)  # a write GUP on a RO (COW) PTE copies first: parent gets a new
    new = p.translate(a)  # page, the old one keeps only the child's map and ref
    assert new is not None and new != pfn
    assert (page_mapcount(f, pfn), page_count(f, pfn)) == (1, 1)
    assert (page_mapcount(f, new), page_count(f, new)) == (1, 2)  # map + pin
    c.exit()
    assert f._count[pfn] == 0  # freed with the child's last reference


# --- CONFIG_SWAP=n: the reuse macro fed by these counts -------------------------------------

# 4.5.0 swap.h: reuse_swap_page(p) = !PageTransCompound(p) && page_mapcount(p) == 1.
# 6d0a07edd17c: reuse_swap_page(p, &total) = page_trans_huge_mapcount(p, &total) == 1.
# With CONFIG_SWAP=y and no swap cache the function returns count <= 1: the same answers.
REUSE = {
    # state: (v4.5 answer, 6d0a07e answer) for a subpage of that state's THP
    "S3": (False, True),  # compound -> 4.5.0 says no; ptm 1
    "S4": (False, True),  # ptm 1
    "S5": (False, False),  # ptm 2
    "S6": (False, True),  # ptm 1 (the reason the move needs total == 1)
    "S1": (False, False),  # ptm 2
}


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("kid", KERNELS)
@pytest.mark.parametrize("name", sorted(REUSE))
def test_reuse_swap_page_answer(kid: str, name: str, swap: bool) -> None:
    s = build(kid, name, Config(swap=swap))
    want = REUSE[name][0 if kid == "v4.5" else 1]
    sub = 300 if name == "S6" else 1  # a subpage the parent still maps
    decision = reuse_swap_page(s.k, s.head + sub, s.k.policy.reuse_mapcount)  # type: ignore[attr-defined]
    assert decision.reuse is want
    if want:
        # *total_mapcount is meaningful only when reuse is granted (§C.1)
        assert decision.total_mapcount == TABLE[name].total


# --- CONFIG_TRANSPARENT_HUGEPAGE=n: the same program, small pages only ----------------------


def small_pages_program(kid: str, name: str) -> tuple[Kernel, Process, Process | None, int]:
    """The S-state programs on a THP=n kernel, writing all 512 pages of the first 2 MiB.

    No MADV_HUGEPAGE: without CONFIG_TRANSPARENT_HUGEPAGE 4.5 rejects it (see
    test_madv_hugepage_einval_without_thp). Every write fault is do_anonymous_page.
    """
    k = Kernel(kid, config=Config(thp=False), selfcheck=True)
    p = k.spawn()
    base = p.mmap(4 * MiB, "rw", align=2 * MiB)
    p.write(base, b"\1" * (2 * MiB))
    child = None
    if name in ("S1", "S2", "S3"):
        child = p.fork()
        if name in ("S2", "S3"):
            split_own_pmd(child, base)
        if name == "S3":
            child.exit()
            child = None
    elif name in ("S4", "S5", "S6"):
        split_own_pmd(p, base)
        if name in ("S5", "S6"):
            child = p.fork()
        if name == "S6":
            assert child is not None
            child.munmap(base + MiB, MiB)
            p.munmap(base, MiB)
    return k, p, child, base


# per small page (mapcount, refcount): one per PTE map; mprotect never changes counts;
# S6: each surviving page is mapped by exactly one of the two processes.
SMALL = {"S0": (1, 1), "S1": (2, 2), "S2": (2, 2), "S3": (1, 1), "S4": (1, 1), "S5": (2, 2)}


@pytest.mark.parametrize("kid", KERNELS)
@pytest.mark.parametrize("name", sorted(SMALL))
def test_thp_disabled_states_are_small_pages(kid: str, name: str) -> None:
    k, p, _child, base = small_pages_program(kid, name)
    f = k.frames
    assert isinstance(p.mm.pmds[base >> 21], PteTable)
    pfns = [p.translate(base + i * PAGE) for i in range(NR)]
    assert None not in pfns and len(set(pfns)) == NR
    mc, ref = SMALL[name]
    for pfn in pfns:
        assert pfn is not None
        assert not PageTransCompound(f, pfn)
        assert page_mapcount(f, pfn) == mc and total_mapcount(f, pfn) == mc
        assert page_count(f, pfn) == ref
        assert page_trans_huge_mapcount(f, pfn) == (mc, mc, None)
    assert not (f.flags[: f.nr] & (PG_head | PG_tail))[2 * NR :].any()  # no THP anywhere
    assert f.nr_allocated == NR


@pytest.mark.parametrize("kid", KERNELS)
def test_thp_disabled_s6(kid: str) -> None:
    """S6 with small pages: after the fork every page was mapped by both; the child unmapped
    256..511 and the parent 0..255, so 0..255 survive only in the child, 256..511 only in the
    parent: all 512 pages survive, each with mapcount 1 and ref 1, none freed."""
    k, p, child, base = small_pages_program(kid, "S6")
    assert child is not None
    f = k.frames
    for i in range(NR):
        owner = child if i < 256 else p
        other = p if i < 256 else child
        pfn = owner.translate(base + i * PAGE)
        assert pfn is not None and other.translate(base + i * PAGE) is None
        assert (page_mapcount(f, pfn), page_count(f, pfn)) == (1, 1)
    assert f.nr_allocated == NR


@pytest.mark.parametrize("kid", KERNELS)
def test_thp_disabled_pins(kid: str) -> None:
    """S0 + pins with THP=n: each pinned page gets its own +1 (ref 2), the rest stay at 1."""
    k, p, _c, base = small_pages_program(kid, "S0")
    p.get_user_pages(base + 5 * PAGE, 3 * PAGE)
    f = k.frames
    counts = [page_count(f, p.translate(base + i * PAGE)) for i in range(4, 9)]  # type: ignore[arg-type]
    assert counts == [1, 2, 2, 2, 1]


@pytest.mark.parametrize("advice", ["hugepage", "nohugepage"])
def test_madv_hugepage_einval_without_thp(advice: str) -> None:
    from cowlab import SyscallError

    k = Kernel("v4.5", config=Config(thp=False), selfcheck=True)
    p = k.spawn()
    base = p.mmap(4 * MiB, "rw", align=2 * MiB)
    with pytest.raises(SyscallError) as err:
        p.madvise(base, 4 * MiB, advice)
    assert err.value.errno == "EINVAL"


def test_thp_disabled_ignores_thp_enabled_always() -> None:
    """thp_enabled='always' cannot matter when the kernel is built without THP."""
    k = Kernel("v4.5+6d0a07e", config=Config(thp=False), selfcheck=True)
    assert k.thp_enabled == "always"
    p = k.spawn()
    base = p.mmap(4 * MiB, "rw", align=2 * MiB)
    p.write(base, b"x")
    assert not isinstance(p.mm.pmds[base >> 21], HugePmd)
    assert k.frames.nr_allocated == 1
    assert int(np.count_nonzero(k.frames.flags & PG_head)) == 1  # only the huge zero page's
