"""The kernel paths one by one: counter changes and reuse/copy decisions, derived from the rules.

References are to the project's shared notes kernel-semantics.md (§B, §C, §D; kept outside this
repository, and checked against the 4.5/4.6 sources in docs/verification-4.5.md) and the
corrections in docs/verification-4.5.md (V§n). Notation as in tests/test_mapcount.py: C = PMD maps,
m = raw _mapcount + 1 of a subpage, ref = the head's _count.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cowlab import Config, InvariantViolation, Kernel, KernelBug, Process, Segfault, SyscallError
from cowlab.checker import check_pin_coherence
from cowlab.mm.constants import PG_allocated, PG_dirty, PG_head, PG_tail
from cowlab.mm.huge_memory import page_trans_huge_mapcount, total_mapcount
from cowlab.mm.mm import PageDoubleMap, compound_mapcount, page_count, page_mapcount
from cowlab.mm.page_alloc import HUGE_ZERO_PFN, ZERO_PFN
from cowlab.mm.pgtable import (
    PTE_DIRTY,
    PTE_PROTNONE,
    PTE_SOFT_DIRTY,
    PTE_SPECIAL,
    PTE_WRITE,
    PTE_YOUNG,
    HugePmd,
    PteTable,
    pte_without,
)

KiB = 1 << 10
MiB = 1 << 20
PAGE = 4 * KiB
NR = 512
KERNELS = ("v4.5", "v4.5+6d0a07e", "v4.5+6d0a07e-early")
PATCHED = ("v4.5+6d0a07e", "v4.5+6d0a07e-early")


# --- helpers ---------------------------------------------------------------------------------


@dataclass
class Thp:
    k: Kernel
    p: Process
    base: int
    head: int


def thp(kid: str, selfcheck: bool = True, config: Config | None = None) -> Thp:
    """S0: one write fault in a 2 MiB-aligned 4 MiB MADV_HUGEPAGE mapping -> a PMD-mapped THP."""
    k = Kernel(kid, config=config, selfcheck=selfcheck)
    p = k.spawn()
    base = p.mmap(4 * MiB, "rw", align=2 * MiB)
    p.madvise(base, 4 * MiB, "hugepage")
    p.write(base, b"S0 data")
    head = p.translate(base)
    assert head is not None
    return Thp(k, p, base, head)


def small(kid: str, npages: int = 8, prot: str = "rw") -> tuple[Kernel, Process, int]:
    """A kernel whose faults stay at PTE level (thp_enabled = never) and a mapping."""
    k = Kernel(kid, selfcheck=True)
    k.thp_enabled = "never"
    p = k.spawn()
    return k, p, p.mmap(npages * PAGE, prot)


def pmd(p: Process, addr: int) -> HugePmd | PteTable | None:
    return p.mm.pmds.get(addr >> 21)


def huge(p: Process, addr: int) -> HugePmd:
    entry = pmd(p, addr)
    assert isinstance(entry, HugePmd), f"expected a huge PMD at {addr:#x}, got {entry!r}"
    return entry


def table(p: Process, addr: int) -> PteTable:
    entry = pmd(p, addr)
    assert isinstance(entry, PteTable), f"expected a PTE table at {addr:#x}, got {entry!r}"
    return entry


def pte_bits(p: Process, addr: int) -> int:
    return int(table(p, addr).bits[(addr >> 12) & 511])


def split_own_pmd(p: Process, base: int) -> None:
    """mprotect(base+4K, 4K, RO) then RW: the VMA split splits the PMD; subpage 1's PTE stays
    read-only because a private VMA's vm_page_prot has no write bit (§B.7, D.3)."""
    p.mprotect(base + PAGE, PAGE, "r")
    p.mprotect(base + PAGE, PAGE, "rw")


def freed(k: Kernel, pfn: int) -> bool:
    return not k.frames.flags[pfn] & PG_allocated


def m(k: Kernel, pfn: int) -> int:
    return int(k.frames._mapcount[pfn]) + 1


# === do_anonymous_page (§B.1, V§2) =============================================================


@pytest.mark.parametrize("kid", KERNELS)
def test_do_anonymous_page_read_maps_zero_page(kid: str) -> None:
    """A read fault maps the shared zero page: special, read-only; no page, no counts, and no
    anon_vma (anon_vma_prepare is only on the write path)."""
    k, p, a = small(kid)
    assert p.read(a + 2 * PAGE, 4) == bytes(4)
    assert p.translate(a + 2 * PAGE) == ZERO_PFN
    bits = pte_bits(p, a + 2 * PAGE)
    assert bits & PTE_SPECIAL and not bits & PTE_WRITE
    assert k.frames.nr_allocated == 0
    assert p.mm.anon_rss == 0
    assert p.mm.vmas[0].anon_vma is None


@pytest.mark.parametrize("kid", KERNELS)
def test_do_anonymous_page_write_new_page(kid: str) -> None:
    """A write fault: a fresh page, page_add_new_anon_rmap (_mapcount 0, mapping = the VMA's
    anon_vma, index = linear_page_index), _count 1, PTE writable+dirty (VM_WRITE), rss +1."""
    k, p, a = small(kid)
    p.write(a + 3 * PAGE + 5, b"hi")
    pfn = p.translate(a + 3 * PAGE)
    assert pfn is not None and pfn != ZERO_PFN
    f = k.frames
    vma = p.mm.vmas[0]
    assert vma.anon_vma is not None
    assert (m(k, pfn), page_count(f, pfn)) == (1, 1)
    assert int(f.mapping[pfn]) == vma.anon_vma.id
    assert int(f.index[pfn]) == vma.vm_pgoff + 3
    assert not f.flags[pfn] & (PG_head | PG_tail)
    bits = pte_bits(p, a + 3 * PAGE)
    assert bits & PTE_WRITE and bits & PTE_DIRTY and not bits & PTE_SPECIAL
    assert p.mm.anon_rss == 1 and f.nr_allocated == 1
    assert p.read(a + 3 * PAGE + 5, 2) == b"hi"
    assert k.cow_log == []


@pytest.mark.parametrize("kid", KERNELS)
def test_write_after_read_copies_the_zero_page(kid: str) -> None:
    """Read (zero page) then write: do_wp_page finds no normal page -> wp_page_copy(NULL), a
    zeroed page; rss 0 -> 1; the zero page gains no counts."""
    k, p, a = small(kid)
    p.read(a, 1)
    p.write(a, b"w")
    pfn = p.translate(a)
    assert pfn not in (None, ZERO_PFN)
    assert (m(k, pfn), page_count(k.frames, pfn)) == (1, 1)
    assert pte_bits(p, a) & PTE_WRITE
    assert p.mm.anon_rss == 1
    assert [(e.function, e.old, e.new) for e in k.cow_log] == [("wp_page_copy", None, pfn)]


@pytest.mark.parametrize("kid", KERNELS)
def test_read_only_vma_read_zero_page_write_segfaults(kid: str) -> None:
    _k, p, a = small(kid, prot="r")
    p.read(a, 1)
    assert p.translate(a) == ZERO_PFN
    with pytest.raises(Segfault):
        p.write(a, b"x")


# === do_huge_pmd_anonymous_page (§B.1) =======================================================


@pytest.mark.parametrize("kid", KERNELS)
def test_huge_read_fault_maps_huge_zero_page(kid: str) -> None:
    """A read fault installs the read-only huge zero PMD: huge_zero_refcount +1, no rmap,
    no allocation, no rss; anon_vma_prepare ran (the VMA now has an anon_vma)."""
    k = Kernel(kid, selfcheck=True)
    p = k.spawn()
    base = p.mmap(4 * MiB, align=2 * MiB)
    assert p.read(base + 5 * PAGE, 3) == bytes(3)
    e = huge(p, base)
    assert e.huge_zero and not e.write
    assert p.translate(base + 5 * PAGE) == HUGE_ZERO_PFN + 5
    assert k.frames.huge_zero_refcount == 1
    assert k.frames.nr_allocated == 0 and p.mm.anon_rss == 0
    assert p.mm.vmas[0].anon_vma is not None


@pytest.mark.parametrize("kid", KERNELS)
def test_huge_write_fault_new_thp(kid: str) -> None:
    """A write fault: a new THP, PMD writable (VM_WRITE) and dirty, C=1 (page_add_new_anon_rmap
    compound), ref 1, every _mapcount -1, mapping/index on the head, rss +512."""
    t = thp(kid)
    k, f, h = t.k, t.k.frames, t.head
    assert h % NR == 0 and f.flags[h] & PG_head and (f.flags[h + 1 : h + NR] & PG_tail).all()
    e = huge(t.p, t.base)
    assert e.pfn == h and e.write and e.dirty and not e.huge_zero
    assert compound_mapcount(f, h) == 1 and page_count(f, h) == 1
    assert (f._mapcount[h : h + NR] == -1).all()
    vma = t.p.mm.vmas[0]
    assert vma.anon_vma is not None and int(f.mapping[h]) == vma.anon_vma.id
    assert int(f.index[h]) == t.base >> 12 == vma.linear_page_index(t.base)
    assert t.p.mm.anon_rss == NR
    assert k.vmstat["thp_fault_alloc"] == 1 and k.vmstat["thp_fault_fallback"] == 0
    assert t.p.translate(t.base + 77 * PAGE) == h + 77


@pytest.mark.parametrize("kid", KERNELS)
def test_huge_fault_fallback_on_allocation_failure(kid: str) -> None:
    """No THP: VM_FAULT_FALLBACK + THP_FAULT_FALLBACK, then do_anonymous_page for the one page.
    The PMD now holds a PTE table, so later faults in that 2 MiB stay at PTE level."""
    k = Kernel(kid, selfcheck=True)
    k.thp_alloc_fail = True
    p = k.spawn()
    base = p.mmap(4 * MiB, align=2 * MiB)
    p.write(base + 9 * PAGE, b"x")
    t = table(p, base)
    assert int((t.pfn >= 0).sum()) == 1
    pfn = p.translate(base + 9 * PAGE)
    assert pfn is not None and not k.frames.flags[pfn] & (PG_head | PG_tail)
    assert k.vmstat["thp_fault_fallback"] == 1 and k.vmstat["thp_fault_alloc"] == 0
    k.thp_alloc_fail = False
    p.write(base + 10 * PAGE, b"y")  # pmd is not none: no huge attempt at all
    assert isinstance(pmd(p, base), PteTable)
    assert k.vmstat["thp_fault_alloc"] == 0 and k.frames.nr_allocated == 2


@pytest.mark.parametrize("kid", KERNELS)
def test_huge_fault_fallback_when_vma_does_not_cover_the_2mib(kid: str) -> None:
    """[haddr, haddr+2M) must lie inside the VMA. An unaligned 4 MiB VMA starting at
    base+4K: the block at base is cut by vm_start (fallback), the block at base+2M is
    inside (THP). A 1 MiB VMA never gets a THP. The VMA check does not count a fallback."""
    k = Kernel(kid, selfcheck=True)
    p = k.spawn()
    hole = p.mmap(8 * MiB, align=2 * MiB)
    p.munmap(hole, 8 * MiB)
    a = p.mmap(4 * MiB, addr=hole + PAGE)
    p.write(a, b"x")  # in [hole, hole+2M): starts before vm_start
    assert isinstance(pmd(p, a), PteTable)
    p.write(hole + 2 * MiB, b"y")  # [hole+2M, hole+4M) inside [hole+4K, hole+4M+4K)
    assert isinstance(pmd(p, hole + 2 * MiB), HugePmd)
    p.write(a + 4 * MiB - PAGE, b"z")  # block [hole+4M, hole+6M): ends after vm_end
    assert isinstance(pmd(p, a + 4 * MiB - PAGE), PteTable)
    b = p.mmap(MiB, addr=hole + 6 * MiB)
    p.write(b, b"w")
    assert isinstance(pmd(p, b), PteTable)
    assert k.vmstat["thp_fault_fallback"] == 0 and k.vmstat["thp_fault_alloc"] == 1


@pytest.mark.parametrize(
    ("mode", "advice", "expect_thp"),
    [
        ("always", None, True),
        ("always", "hugepage", True),
        ("always", "nohugepage", False),  # VM_NOHUGEPAGE always wins
        ("madvise", None, False),
        ("madvise", "hugepage", True),
        ("madvise", "nohugepage", False),
        ("never", None, False),
        ("never", "hugepage", False),
    ],
)
def test_transparent_hugepage_enabled_modes(
    mode: str, advice: str | None, expect_thp: bool
) -> None:
    k = Kernel("v4.5+6d0a07e", selfcheck=True)
    k.thp_enabled = mode
    p = k.spawn()
    base = p.mmap(4 * MiB, align=2 * MiB)
    if advice:
        p.madvise(base, 4 * MiB, advice)
    p.write(base, b"x")
    assert isinstance(pmd(p, base), HugePmd) is expect_thp
    p.read(base + 2 * MiB, 1)  # a read fault: the huge zero page only where THP is allowed
    assert isinstance(pmd(p, base + 2 * MiB), HugePmd) is expect_thp
    assert k.frames.huge_zero_refcount == int(expect_thp)


def test_thp_mode_rejects_unknown_value() -> None:
    k = Kernel("v4.5")
    with pytest.raises(SyscallError):
        k.thp_enabled = "sometimes"


# === do_wp_page (§C.1, §C.2, §C.6) ===========================================================


@pytest.mark.parametrize("kid", KERNELS)
def test_do_wp_page_small_page_mapcount_1_reuses(kid: str) -> None:
    """mprotect RO->RW leaves the PTE read-only (§B.7); the write fault finds page_mapcount 1:
    wp_page_reuse keeps the pfn, makes the PTE writable, changes no counter."""
    k, p, a = small(kid)
    p.write(a, b"a")
    pfn = p.translate(a)
    p.mprotect(a, PAGE, "r")
    p.mprotect(a, PAGE, "rw")
    assert not pte_bits(p, a) & PTE_WRITE
    p.write(a, b"b")
    assert p.translate(a) == pfn
    assert pte_bits(p, a) & PTE_WRITE
    assert (m(k, pfn), page_count(k.frames, pfn)) == (1, 1)
    assert k.cow_log == [] and k.vmstat["pgreuse"] == 1


@pytest.mark.parametrize("kid", KERNELS)
def test_do_wp_page_small_page_shared_copies(kid: str) -> None:
    """After fork page_mapcount is 2: wp_page_copy. New page: m 1, ref 1, writable PTE. Old
    page: m -1, ref -1 (the child's map alone); the child's PTE still maps it read-only."""
    k, p, a = small(kid)
    p.write(a, b"old")
    old = p.translate(a)
    c = p.fork()
    p.write(a, b"new")
    new = p.translate(a)
    assert new not in (None, old)
    f = k.frames
    assert (m(k, new), page_count(f, new)) == (1, 1)
    assert (m(k, old), page_count(f, old)) == (1, 1)
    assert pte_bits(p, a) & PTE_WRITE
    assert c.translate(a) == old and not pte_bits(c, a) & PTE_WRITE
    assert c.read(a, 3) == b"old" and p.read(a, 3) == b"new"
    assert [(e.function, e.old, e.new) for e in k.cow_log] == [("wp_page_copy", old, new)]


@pytest.mark.parametrize("kid", KERNELS)
def test_do_wp_page_small_reuse_moves_anon_vma(kid: str) -> None:
    """Parent exits after fork; the child's write finds mapcount 1 and reuses. A small page
    reused is mapped once (total 1), so every kernel calls page_move_anon_rmap: the page
    moves from the parent's anon_vma to the child VMA's own."""
    k, p, a = small(kid)
    p.write(a, b"x")
    pfn = p.translate(a)
    assert pfn is not None
    parent_av = p.mm.vmas[0].anon_vma
    c = p.fork()
    child_av = c.mm.vmas[0].anon_vma
    assert parent_av is not None and child_av is not None and child_av is not parent_av
    assert int(k.frames.mapping[pfn]) == parent_av.id
    p.exit()
    c.write(a, b"y")
    assert c.translate(a) == pfn and k.cow_log == []
    assert int(k.frames.mapping[pfn]) == child_av.id


@pytest.mark.parametrize("kid", KERNELS)
def test_do_wp_page_thp_subpage_exclusive(kid: str) -> None:
    """S4 with subpage 1's PTE read-only (ptm 1, total 512). 4.5.0: reuse_swap_page returns 0
    for any PageTransCompound page -> copy 4 KiB: new small page; subpage 1: m 1 -> 0 (queues
    the THP for deferred split), ref 512 -> 511. 6d0a07e: ptm 1 -> reuse, nothing changes."""
    t = thp(kid)
    split_own_pmd(t.p, t.base)
    k, f, h = t.k, t.k.frames, t.head
    addr = t.base + PAGE
    assert not pte_bits(t.p, addr) & PTE_WRITE
    t.p.write(addr, b"sub1")
    if kid == "v4.5":
        new = t.p.translate(addr)
        assert new is not None and new != h + 1
        assert not f.flags[new] & (PG_head | PG_tail)
        assert (m(k, h + 1), page_count(f, h), total_mapcount(f, h)) == (0, 511, 511)
        assert h in k.deferred_split
        assert [(e.function, e.old, e.new) for e in k.cow_log] == [("wp_page_copy", h + 1, new)]
    else:
        assert t.p.translate(addr) == h + 1
        assert (m(k, h + 1), page_count(f, h), total_mapcount(f, h)) == (1, 512, 512)
        assert k.cow_log == [] and k.vmstat["pgreuse"] == 1
        assert h not in k.deferred_split
    assert pte_bits(t.p, addr) & PTE_WRITE
    assert t.p.read(addr, 4) == b"sub1"


@pytest.mark.parametrize("kid", KERNELS)
def test_do_wp_page_thp_subpage_shared_copies_everywhere(kid: str) -> None:
    """S5 (PTE-mapped THP shared by fork, ptm 2): the parent's write to subpage 0 copies on
    every kernel. Subpage 0: m 2 -> 1; ref 1024 -> 1023; the child keeps the old data."""
    t = thp(kid)
    split_own_pmd(t.p, t.base)
    c = t.p.fork()
    t.p.write(t.base, b"P")
    f, h = t.k.frames, t.head
    new = t.p.translate(t.base)
    assert new is not None and new != h
    assert (m(t.k, h), page_count(f, h)) == (1, 1023)
    assert page_trans_huge_mapcount(f, h)[0] == 2  # the other subpages are still shared
    assert c.read(t.base, 7) == b"S0 data"
    assert t.k.cow_log[-1].old == h


@pytest.mark.parametrize(
    ("kid", "reuse", "moved"),
    [("v4.5", False, False), ("v4.5+6d0a07e", True, False), ("v4.5+6d0a07e-early", True, True)],
)
def test_do_wp_page_kirills_case(kid: str, reuse: bool, moved: bool) -> None:
    """S6 (D.5): the child writes subpage 0, which only it maps (ptm 1, total 512).
    v4.5 copies (compound); 6d0a07e reuses without moving (total != 1); the early version
    moves the whole THP to the child's anon_vma, so the parent's PTEs of subpages 256..511
    are no longer reachable by the rmap walk (invariant A.4.4 broken)."""
    t = thp(kid, selfcheck=not moved)  # the early move breaks rmap on purpose
    split_own_pmd(t.p, t.base)
    c = t.p.fork()
    c.munmap(t.base + MiB, MiB)
    t.p.munmap(t.base, MiB)
    k, f, h = t.k, t.k.frames, t.head
    parent_av, child_av = t.p.mm.vmas[0].anon_vma, c.mm.vmas[0].anon_vma
    assert parent_av is not None and child_av is not None
    assert int(f.mapping[h]) == parent_av.id
    assert page_trans_huge_mapcount(f, h)[:2] == (1, 512)
    c.write(t.base, b"C")
    assert (c.translate(t.base) == h) is reuse
    assert int(f.mapping[h]) == (child_av.id if moved else parent_av.id)
    problems = k.check()
    if moved:
        assert any("rmap_walk_anon misses" in s for s in problems)
    else:
        assert problems == []


def test_kirills_case_selfcheck_raises_on_early_kernel() -> None:
    t = thp("v4.5+6d0a07e-early")
    split_own_pmd(t.p, t.base)
    c = t.p.fork()
    c.munmap(t.base + MiB, MiB)
    t.p.munmap(t.base, MiB)
    with pytest.raises(InvariantViolation):
        c.write(t.base, b"C")


@pytest.mark.parametrize(("kid", "reuse"), [("v4.5", False), *((kid, True) for kid in PATCHED)])
def test_do_wp_page_thp_total_mapcount_1_moves(kid: str, reuse: bool) -> None:
    """S5, then the parent unmaps the whole THP and the child all but subpage 0: the child's
    PTE of subpage 0 is the only mapping (ptm 1, total 1). 6d0a07e and -early reuse and move
    the THP to the child's anon_vma, which is safe: rmap stays consistent. v4.5 copies."""
    t = thp(kid)
    split_own_pmd(t.p, t.base)
    c = t.p.fork()
    t.p.munmap(t.base, 2 * MiB)
    c.munmap(t.base + PAGE, 2 * MiB - PAGE)
    f, h = t.k.frames, t.head
    assert page_trans_huge_mapcount(f, h)[:2] == (1, 1)
    child_av = c.mm.vmas[0].anon_vma
    assert child_av is not None
    c.write(t.base, b"C")
    if reuse:
        assert c.translate(t.base) == h
        assert int(f.mapping[h]) == child_av.id
    else:
        assert c.translate(t.base) != h
        assert freed(t.k, h)  # the last map and last reference went with the copy
    assert t.k.check() == []


# === do_huge_pmd_wp_page (§C.3, V§15) =========================================================


def pinned_ro_thp(kid: str, npins: int, make_ro: str) -> tuple[Thp, int]:
    """S0 + a write GUP pin of npins subpages, then the PMD made read-only without a fork."""
    t = thp(kid)
    if npins:
        t.p.get_user_pages(t.base, npins * PAGE, write=True)
    if make_ro == "mprotect":
        t.p.mprotect(t.base, 2 * MiB, "r")
        t.p.mprotect(t.base, 2 * MiB, "rw")
    elif make_ro == "clear_refs":
        t.p.clear_refs(4)
    else:  # fork + child exit (D.2): C 2 -> 1, the parent's PMD stays write-protected
        t.p.fork().exit()
    assert not huge(t.p, t.base).write
    return t, npins


@pytest.mark.parametrize("make_ro", ["mprotect", "clear_refs", "fork+exit"])
@pytest.mark.parametrize("kid", KERNELS)
@pytest.mark.parametrize("npins", [0, 1, 4])
def test_do_huge_pmd_wp_page_exclusive_thp(kid: str, npins: int, make_ro: str) -> None:
    """Exclusive PMD-mapped THP (C 1), maybe pinned, write-protected, then written.
    4.5.0: reuse iff page_mapcount(head) == 1 and page_count(head) == 1 -> any pin copies 2 MiB:
    new THP PMD-mapped writable; the old THP keeps only the pins (C 0, ref = npins) and sits on
    the deferred-split queue (nr 512 > 0). 6d0a07e: ptm == 1 -> reuse (pins ignored)."""
    t, n = pinned_ro_thp(kid, npins, make_ro)
    k, f, h = t.k, t.k.frames, t.head
    t.p.write(t.base + 3 * PAGE, b"W")
    e = huge(t.p, t.base)
    assert e.write
    copies = kid == "v4.5" and n > 0
    if copies:
        assert e.pfn != h
        assert (compound_mapcount(f, e.pfn), page_count(f, e.pfn)) == (1, 1)
        assert (compound_mapcount(f, h), page_count(f, h)) == (0, n)
        assert h in k.deferred_split
        ev = k.cow_log[-1]
        assert (ev.function, ev.old, ev.new, ev.nr) == ("do_huge_pmd_wp_page", h, e.pfn, NR)
        assert t.p.read(t.base, 7) == b"S0 data"  # copy_user_huge_page
        assert check_pin_coherence(k) != []  # the pinned pages no longer back the VA
    else:
        assert e.pfn == h
        assert (compound_mapcount(f, h), page_count(f, h)) == (1, 1 + n)
        assert k.cow_log == []
        assert check_pin_coherence(k) == []
    assert t.p.mm.anon_rss == NR


@pytest.mark.parametrize("kid", KERNELS)
def test_do_huge_pmd_wp_page_shared_copies(kid: str) -> None:
    """S1: the parent's write to its read-only PMD sees page_mapcount 2 / ptm 2 -> copy 2 MiB.
    New THP: C 1, ref 1. Old THP: C 2 -> 1, ref 2 -> 1 (the child's), not queued (C > 0)."""
    t = thp(kid)
    c = t.p.fork()
    t.p.write(t.base, b"parent")
    f, h = t.k.frames, t.head
    e = huge(t.p, t.base)
    assert e.pfn != h and e.write
    assert (compound_mapcount(f, e.pfn), page_count(f, e.pfn)) == (1, 1)
    assert (compound_mapcount(f, h), page_count(f, h)) == (1, 1)
    assert h not in t.k.deferred_split
    assert c.read(t.base, 7) == b"S0 data"
    assert t.k.vmstat["thp_fault_alloc"] == 2
    # the child is now the only mapper: its write reuses on every kernel (ptm 1, and 4.5.0's
    # page_mapcount(head) 1 with page_count 1)
    c.write(t.base, b"child")
    assert huge(c, t.base).pfn == h and huge(c, t.base).write


@pytest.mark.parametrize("trigger", ["alloc_fail", "nohugepage"])
@pytest.mark.parametrize("kid", KERNELS)
def test_do_huge_pmd_wp_page_fallback_512_small_pages(kid: str, trigger: str) -> None:
    """S1 with no THP for the copy (allocation fails, or THP now disallowed for the VMA):
    do_huge_pmd_wp_page_fallback copies into 512 new small pages, PTE-mapped writable and
    dirty, each m 1 / ref 1 with the parent VMA's anon_vma; the old THP loses the parent's PMD
    (C 1, ref 1). rss is unchanged (512 out, 512 in)."""
    t = thp(kid)
    c = t.p.fork()
    f, h = t.k.frames, t.head
    if trigger == "alloc_fail":
        t.k.thp_alloc_fail = True
    else:
        t.p.madvise(t.base, 4 * MiB, "nohugepage")
    t.p.write(t.base + PAGE, b"P")
    tab = table(t.p, t.base)
    pfns = [int(x) for x in tab.pfn]
    assert len(set(pfns)) == NR and not set(pfns) & set(range(h, h + NR))
    av = t.p.mm.vmas[0].anon_vma
    assert av is not None
    for i, pfn in enumerate(pfns):
        assert not f.flags[pfn] & (PG_head | PG_tail)
        assert (m(t.k, pfn), page_count(f, pfn)) == (1, 1)
        assert int(f.mapping[pfn]) == av.id and int(f.index[pfn]) == (t.base >> 12) + i
        assert tab.bits[i] & PTE_WRITE and tab.bits[i] & PTE_DIRTY
    assert (compound_mapcount(f, h), page_count(f, h)) == (1, 1)
    assert t.p.read(t.base, 7) == b"S0 data" and c.read(t.base + PAGE, 1) == b"\0"
    assert t.p.mm.anon_rss == NR
    ev = t.k.cow_log[-1]
    assert (ev.function, ev.old, ev.nr) == ("do_huge_pmd_wp_page_fallback", h, NR)
    assert t.k.vmstat["thp_fault_fallback"] == 1


@pytest.mark.parametrize("kid", KERNELS)
def test_do_huge_pmd_wp_page_huge_zero_page(kid: str) -> None:
    """A write to the huge zero PMD is never a reuse: a new zeroed THP, PMD writable;
    rss +512; huge_zero_refcount -1."""
    k = Kernel(kid, selfcheck=True)
    p = k.spawn()
    base = p.mmap(4 * MiB, align=2 * MiB)
    p.read(base, 1)
    p.write(base + 3 * PAGE, b"z")
    e = huge(p, base)
    assert not e.huge_zero and e.write and e.pfn != HUGE_ZERO_PFN
    assert (compound_mapcount(k.frames, e.pfn), page_count(k.frames, e.pfn)) == (1, 1)
    assert k.frames.huge_zero_refcount == 0 and p.mm.anon_rss == NR
    ev = k.cow_log[-1]
    assert (ev.function, ev.old, ev.new, ev.nr) == ("do_huge_pmd_wp_page", None, e.pfn, NR)


@pytest.mark.parametrize("kid", KERNELS)
def test_do_huge_pmd_wp_page_huge_zero_alloc_failure_splits(kid: str) -> None:
    """Huge zero PMD + no THP: split_huge_pmd makes 512 special read-only zero-pfn PTEs
    (huge_zero put), VM_FAULT_FALLBACK, and the PTE retry copies only the written subpage
    from the zero page: rss 1."""
    k = Kernel(kid, selfcheck=True)
    p = k.spawn()
    base = p.mmap(4 * MiB, align=2 * MiB)
    p.read(base, 1)
    k.thp_alloc_fail = True
    p.write(base + 3 * PAGE, b"z")
    tab = table(p, base)
    new = p.translate(base + 3 * PAGE)
    assert new not in (None, ZERO_PFN)
    assert tab.bits[3] & PTE_WRITE
    others = [i for i in range(NR) if i != 3]
    assert all(int(tab.pfn[i]) == ZERO_PFN for i in others)
    assert all(tab.bits[i] & PTE_SPECIAL and not tab.bits[i] & PTE_WRITE for i in others)
    assert k.frames.huge_zero_refcount == 0
    assert p.mm.anon_rss == 1 and k.frames.nr_allocated == 1
    assert k.vmstat["thp_fault_fallback"] == 1
    ev = k.cow_log[-1]
    assert (ev.function, ev.old, ev.new, ev.nr) == ("wp_page_copy", None, new, 1)


# === fork: copy_huge_pmd / copy_one_pte (§B.2, V§3, V§4) =====================================


@pytest.mark.parametrize("kid", KERNELS)
def test_copy_huge_pmd(kid: str) -> None:
    """get_page + page_dup_rmap(compound): C 1 -> 2, ref 1 -> 2. pmdp_set_wrprotect on the
    parent; the child gets pmd_mkold(pmd_wrprotect()) with dirty kept; child rss +512."""
    t = thp(kid)
    c = t.p.fork()
    f, h = t.k.frames, t.head
    pe, ce = huge(t.p, t.base), huge(c, t.base)
    assert pe.pfn == ce.pfn == h
    assert not pe.write and not ce.write
    assert not ce.young and ce.dirty
    assert (compound_mapcount(f, h), page_count(f, h)) == (2, 2)
    assert (f._mapcount[h : h + NR] == -1).all()
    assert c.mm.anon_rss == NR and t.p.mm.anon_rss == NR
    c.read(t.base, 1)  # huge_pmd_set_accessed: the access makes the child's PMD young
    assert huge(c, t.base).young and not huge(c, t.base).write


@pytest.mark.parametrize("kid", KERNELS)
def test_copy_huge_pmd_pinned_no_pin_check(kid: str) -> None:
    """4.5 has no pin check in copy_huge_pmd: a pinned THP is shared and write-protected too."""
    t = thp(kid)
    t.p.get_user_pages(t.base, 2 * PAGE)
    c = t.p.fork()
    assert huge(c, t.base).pfn == t.head and not huge(t.p, t.base).write
    assert page_count(t.k.frames, t.head) == 2 + 2


@pytest.mark.parametrize("kid", KERNELS)
def test_copy_huge_pmd_huge_zero(kid: str) -> None:
    """Huge zero PMD: the child gets its own (get_huge_zero_page), no rmap, no rss."""
    k = Kernel(kid, selfcheck=True)
    p = k.spawn()
    base = p.mmap(4 * MiB, align=2 * MiB)
    p.read(base, 1)
    c = p.fork()
    assert huge(c, base).huge_zero and not huge(c, base).write
    assert k.frames.huge_zero_refcount == 2
    assert c.mm.anon_rss == 0 and k.frames.nr_allocated == 0


@pytest.mark.parametrize("kid", KERNELS)
def test_copy_one_pte_small_pages(kid: str) -> None:
    """Each present PTE: parent write-protected, child copy write-protected and old;
    page_dup_rmap (m +1) and get_page (ref +1); child rss +1 per normal page. The zero page
    PTE is copied without counters."""
    k, p, a = small(kid)
    for i in range(3):
        p.write(a + i * PAGE, b"x")
    p.read(a + 5 * PAGE, 1)
    pfns = [p.translate(a + i * PAGE) for i in range(3)]
    c = p.fork()
    f = k.frames
    for i, pfn in enumerate(pfns):
        assert pfn is not None and c.translate(a + i * PAGE) == pfn
        assert (m(k, pfn), page_count(f, pfn)) == (2, 2)
        assert not pte_bits(p, a + i * PAGE) & PTE_WRITE
        cb = pte_bits(c, a + i * PAGE)
        assert not cb & PTE_WRITE and not cb & PTE_YOUNG
    assert c.translate(a + 5 * PAGE) == ZERO_PFN
    assert c.mm.anon_rss == 3


@pytest.mark.parametrize("kid", KERNELS)
def test_fork_without_anon_vma_copies_no_page_tables(kid: str) -> None:
    """A VMA that only took read faults has no anon_vma: copy_page_range skips it."""
    _k, p, a = small(kid)
    p.read(a, 1)
    c = p.fork()
    assert c.mm.pmds == {} and len(c.mm.vmas) == 1
    assert c.read(a, 1) == b"\0"  # a fault fills it
    assert c.translate(a) == ZERO_PFN


@pytest.mark.parametrize("kid", KERNELS)
def test_copy_one_pte_of_thp_subpages(kid: str) -> None:
    """S4 -> S5 per PTE: parent and child PTEs read-only, child PTEs old; m 1 -> 2 each,
    ref 512 -> 1024 (each get_page lands on the head); the page stays compound."""
    t = thp(kid)
    split_own_pmd(t.p, t.base)
    c = t.p.fork()
    f, h = t.k.frames, t.head
    pt, ct = table(t.p, t.base), table(c, t.base)
    assert not (pt.bits & PTE_WRITE).any() and not (ct.bits & PTE_WRITE).any()
    assert not (ct.bits & PTE_YOUNG).any()
    assert (ct.pfn == pt.pfn).all()
    assert (f._mapcount[h : h + NR] == 1).all() and page_count(f, h) == 1024
    assert not f._count[h + 1 : h + NR].any()


# === zap (§B.3, V§5, V§7) =====================================================================


@pytest.mark.parametrize("kid", KERNELS)
def test_zap_whole_pmd_frees_thp(kid: str) -> None:
    """munmap of the whole 2 MiB: zap_huge_pmd. C 1 -> 0, ref 1 -> 0: the THP is freed."""
    t = thp(kid)
    t.p.munmap(t.base, 2 * MiB)
    assert pmd(t.p, t.base) is None
    assert freed(t.k, t.head) and t.k.frames.nr_allocated == 0
    assert t.p.mm.anon_rss == 0 and t.head not in t.k.deferred_split


@pytest.mark.parametrize("kid", KERNELS)
def test_zap_whole_pmd_while_pinned(kid: str) -> None:
    """Pinned: C 0, ref = pins; page_remove_anon_compound_rmap queued it (4.5: nr 512 > 0).
    The last put_page (unpin) frees it and takes it off the queue."""
    t = thp(kid)
    pin = t.p.get_user_pages(t.base + 8 * PAGE, 2 * PAGE)
    t.p.munmap(t.base, 2 * MiB)
    f, h = t.k.frames, t.head
    assert not freed(t.k, h)
    assert (compound_mapcount(f, h), page_count(f, h), total_mapcount(f, h)) == (0, 2, 0)
    assert h in t.k.deferred_split
    assert t.k.shrink_deferred_split() == 0  # pinned: split_huge_page fails
    t.k.unpin(pin)
    assert freed(t.k, h) and h not in t.k.deferred_split


@pytest.mark.parametrize("how", ["munmap", "dontneed"])
@pytest.mark.parametrize("kid", KERNELS)
def test_zap_partial_pmd_splits(kid: str, how: str) -> None:
    """Zapping the first 1 MiB: the PMD is split (ref +511, m 1 each, C 0), then subpages
    0..255 are zapped: m 0, ref 512 -> 256; page_remove_rmap queues the THP. Still compound."""
    t = thp(kid)
    if how == "munmap":
        t.p.munmap(t.base, MiB)
    else:
        t.p.madvise(t.base, MiB, "dontneed")
    f, h = t.k.frames, t.head
    tab = table(t.p, t.base + MiB)
    assert (tab.pfn[:256] == -1).all() and (tab.pfn[256:] == [h + i for i in range(256, NR)]).all()
    assert (f._mapcount[h : h + 256] == -1).all() and (f._mapcount[h + 256 : h + NR] == 0).all()
    assert (compound_mapcount(f, h), page_count(f, h)) == (0, 256)
    assert f.flags[h] & PG_head and h in t.k.deferred_split
    assert t.p.mm.anon_rss == 256
    assert len(t.p.mm.vmas) == 1  # munmap trims the VMA; MADV_DONTNEED keeps it whole
    if how == "munmap":
        assert t.p.mm.vmas[0].vm_start == t.base + MiB
    else:
        assert t.p.mm.vmas[0].vm_start == t.base


@pytest.mark.parametrize("kid", KERNELS)
def test_exit_zaps_everything(kid: str) -> None:
    """S1, child exit: zap_huge_pmd in the child: C 2 -> 1, ref 2 -> 1; nothing queued."""
    t = thp(kid)
    c = t.p.fork()
    c.exit()
    f, h = t.k.frames, t.head
    assert (compound_mapcount(f, h), page_count(f, h)) == (1, 1)
    assert h not in t.k.deferred_split


# === split_huge_pmd and DoubleMap (§B.4, V§6) =================================================


@pytest.mark.parametrize("kid", KERNELS)
def test_split_huge_pmd_with_double_map(kid: str) -> None:
    """S1 -> S2: the child's PMD (read-only, old, dirty) becomes 512 PTEs that inherit write
    (none) and young (none); dirty goes to PG_dirty, not into the PTEs; soft-dirty is dropped.
    C 2 -> 1, DoubleMap set (another PMD map remains), m 2, ref 513. The parent keeps its PMD."""
    t = thp(kid)
    c = t.p.fork()
    c.mprotect(t.base + PAGE, PAGE, "r")
    f, h = t.k.frames, t.head
    tab = table(c, t.base)
    assert (tab.pfn == [h + i for i in range(NR)]).all()
    assert not (tab.bits & (PTE_WRITE | PTE_YOUNG | PTE_DIRTY | PTE_SOFT_DIRTY)).any()
    assert (f.flags[h : h + NR] & PG_dirty).all()
    assert huge(t.p, t.base).pfn == h
    assert compound_mapcount(f, h) == 1 and PageDoubleMap(f, h)
    assert (f._mapcount[h : h + NR] == 1).all() and page_count(f, h) == 513


@pytest.mark.parametrize("kid", KERNELS)
def test_split_huge_pmd_inherits_write_and_young(kid: str) -> None:
    """S0 -> S4: the writable, young PMD gives writable, young PTEs (clean: dirty is PG_dirty),
    except the mprotected subpage 1. No DoubleMap: C was 1."""
    t = thp(kid)
    t.p.mprotect(t.base + PAGE, PAGE, "r")
    tab = table(t.p, t.base)
    want = [True] + [False] + [True] * (NR - 2)
    assert [bool(b & PTE_WRITE) for b in tab.bits] == want
    assert (tab.bits & PTE_YOUNG).all() and not (tab.bits & (PTE_DIRTY | PTE_SOFT_DIRTY)).any()
    assert not PageDoubleMap(t.k.frames, t.head)


@pytest.mark.parametrize("kid", KERNELS)
def test_last_pmd_split_clears_double_map(kid: str) -> None:
    """S2, then the parent splits its PMD too: m 2 -> 3 (its PTE), C was 1 so no new offset;
    C 1 -> 0 clears DoubleMap and takes the offset back: m 2 for both PTE maps; ref 1024."""
    t = thp(kid)
    c = t.p.fork()
    c.mprotect(t.base + PAGE, PAGE, "r")
    t.p.mprotect(t.base + PAGE, PAGE, "r")
    f, h = t.k.frames, t.head
    assert compound_mapcount(f, h) == 0 and not PageDoubleMap(f, h)
    assert (f._mapcount[h : h + NR] == 1).all() and page_count(f, h) == 1024
    assert page_trans_huge_mapcount(f, h)[:2] == (2, 1024)


@pytest.mark.parametrize("kid", KERNELS)
def test_zap_last_pmd_with_double_map(kid: str) -> None:
    """S2, then the parent munmaps the whole 2 MiB (zap_huge_pmd): C 1 -> 0, TestClearPage-
    DoubleMap takes the offset off (m 2 -> 1); no subpage reached -1 so nr 0: not queued."""
    t = thp(kid)
    c = t.p.fork()
    c.mprotect(t.base + PAGE, PAGE, "r")
    t.p.munmap(t.base, 2 * MiB)
    f, h = t.k.frames, t.head
    assert compound_mapcount(f, h) == 0 and not PageDoubleMap(f, h)
    assert (f._mapcount[h : h + NR] == 0).all() and page_count(f, h) == NR
    assert h not in t.k.deferred_split


# === split_huge_page (§B.5, V§8) ==============================================================


@pytest.mark.parametrize("kid", KERNELS)
def test_split_huge_page_ebusy_while_pinned_without_side_effects(kid: str) -> None:
    """total_mapcount (1) != page_count (1 + pin) - 1 -> -EBUSY before any PMD is touched."""
    t = thp(kid)
    pin = t.p.get_user_pages(t.base, PAGE)
    assert t.k.split_huge_pages() == 0
    f, h = t.k.frames, t.head
    assert huge(t.p, t.base).pfn == h and f.flags[h] & PG_head
    assert (compound_mapcount(f, h), page_count(f, h)) == (1, 2)
    t.k.unpin(pin)
    assert t.k.split_huge_pages() == 1
    assert not t.k.frames.flags[h] & PG_head


@pytest.mark.parametrize("kid", KERNELS)
def test_split_huge_page_pmd_mapped(kid: str) -> None:
    """Unpinned PMD-mapped THP: freeze (PMD -> migration entries), split, unfreeze: 512 small
    pages, each m 1 / ref 1 (its PTE), mapping = the head's, index = head.index + i; the PTEs
    keep the PMD's write bit; the pfns do not change; nothing freed."""
    t = thp(kid)
    f, h = t.k.frames, t.head
    av, index = int(f.mapping[h]), int(f.index[h])
    assert t.k.split_huge_pages() == 1
    tab = table(t.p, t.base)
    assert (tab.pfn == [h + i for i in range(NR)]).all()
    assert (tab.bits & PTE_WRITE).all()
    for i in range(NR):
        pfn = h + i
        assert not f.flags[pfn] & (PG_head | PG_tail)
        assert (m(t.k, pfn), page_count(f, pfn)) == (1, 1)
        assert (int(f.mapping[pfn]), int(f.index[pfn])) == (av, index + i)
    assert f.nr_allocated == NR
    assert t.p.read(t.base, 7) == b"S0 data"


@pytest.mark.parametrize("kid", KERNELS)
def test_split_huge_page_unfrozen_ptes_old_and_dirty(kid: str) -> None:
    t = thp(kid)
    assert t.k.split_huge_pages() == 1
    tab = table(t.p, t.base)
    assert (t.k.frames.flags[t.head : t.head + NR] & PG_dirty).all()
    assert not (tab.bits & PTE_YOUNG).any()
    assert (tab.bits & PTE_DIRTY).all()


@pytest.mark.parametrize(("state", "maps"), [("S1", 2), ("S2", 2), ("S3", 1)])
@pytest.mark.parametrize("kid", KERNELS)
def test_split_huge_page_shared_by_fork(kid: str, state: str, maps: int) -> None:
    """Split of a THP mapped by PMDs and/or PTEs of two processes: every mapping the rmap walk
    finds is frozen and unfrozen as a PTE of the now-small page. S1 (two PMDs) and S2 (parent
    PMD + child PTEs): each small page is mapped by both, read-only: m 2, ref 2. S3 (the
    parent's PMD alone, DoubleMap set): m 1, ref 1. No page is freed."""
    t = thp(kid)
    c = t.p.fork()
    if state in ("S2", "S3"):
        split_own_pmd(c, t.base)
    if state == "S3":
        c.exit()
    assert t.k.split_huge_pages() == 1
    f, h = t.k.frames, t.head
    assert not PageDoubleMap(f, h) and not f.flags[h + 1] & PG_tail
    for proc in (t.p, c) if maps == 2 else (t.p,):
        tab = table(proc, t.base)
        assert (tab.pfn == [h + i for i in range(NR)]).all()
        assert not (tab.bits & PTE_WRITE).any()
    assert all((m(t.k, h + i), page_count(f, h + i)) == (maps, maps) for i in range(NR))
    assert f.nr_allocated == NR


@pytest.mark.parametrize("kid", KERNELS)
def test_deferred_split_frees_unmapped_subpages(kid: str) -> None:
    """Partial munmap queues the THP; the shrinker's split frees subpages 0..255 (ref 0) and
    leaves 256..511 as small pages with m 1 / ref 1."""
    t = thp(kid)
    t.p.munmap(t.base, MiB)
    assert t.head in t.k.deferred_split
    assert t.k.shrink_deferred_split() == 1
    f, h = t.k.frames, t.head
    assert all(freed(t.k, h + i) for i in range(256))
    for i in range(256, NR):
        assert not f.flags[h + i] & (PG_head | PG_tail)
        assert (m(t.k, h + i), page_count(f, h + i)) == (1, 1)
    assert f.nr_allocated == 256 and t.k.deferred_split == set()


@pytest.mark.parametrize("kid", KERNELS)
def test_deferred_split_pinned_stays_queued(kid: str) -> None:
    t = thp(kid)
    t.p.munmap(t.base, MiB)
    pin = t.p.get_user_pages(t.base + MiB, PAGE, write=False)
    assert t.k.shrink_deferred_split() == 0
    assert t.head in t.k.deferred_split and t.k.frames.flags[t.head] & PG_head
    t.k.unpin(pin)
    assert t.k.shrink_deferred_split() == 1 and t.k.deferred_split == set()


@pytest.mark.parametrize("debug_vm", [True, False])
def test_split_huge_page_after_early_move_misses_mappings(debug_vm: bool) -> None:
    """D.5 consequence on the early kernel: after the wholesale move the rmap walk from the
    child's anon_vma cannot freeze the parent's PTEs, so mapcount stays > 0 after freeze_page:
    BUG() with CONFIG_DEBUG_VM, else unfreeze and -EBUSY."""
    k = Kernel("v4.5+6d0a07e-early", config=Config(debug_vm=debug_vm))  # no selfcheck: rmap broken
    p = k.spawn()
    base = p.mmap(4 * MiB, align=2 * MiB)
    p.write(base, b"x")
    split_own_pmd(p, base)
    c = p.fork()
    c.munmap(base + MiB, MiB)
    p.munmap(base, MiB)
    c.write(base, b"C")  # subpage 0: index matches, so page_move_anon_rmap's VM_BUG_ON holds
    if debug_vm:
        with pytest.raises(KernelBug):
            k.split_huge_pages()
    else:
        assert k.split_huge_pages() == 0
        head = c.translate(base)
        assert head is not None and k.frames.flags[head] & PG_head
        assert p.translate(base + 300 * PAGE) == head + 300


# === mremap of part of a THP (§B.6, V§14) =====================================================


@pytest.mark.parametrize("kid", KERNELS)
def test_mremap_half_a_thp(kid: str) -> None:
    """Move the upper 1 MiB onto a placeholder: the extent is not a whole PMD, so the PMD is
    split and the PTEs move (no count change). The new VMA keeps pgoff (index still matches);
    one mm maps the THP from two VMAs: C 0, m 1 each, ref 512, total 512, ptm 1."""
    t = thp(kid)
    f, h = t.k.frames, t.head
    dest = t.p.mmap(MiB, "none", align=2 * MiB)
    assert t.p.mremap(t.base + MiB, MiB, MiB, fixed_addr=dest) == dest
    assert t.p.translate(t.base) == h and t.p.translate(t.base + MiB) is None
    assert t.p.translate(dest) == h + 256 and t.p.translate(dest + MiB - PAGE) == h + 511
    moved = t.p.mm.find_vma(dest)
    assert moved is not None and moved.vm_pgoff == (t.base >> 12) + 256
    assert moved.linear_page_index(dest) == int(f.index[h]) + 256
    assert compound_mapcount(f, h) == 0 and (f._mapcount[h : h + NR] == 0).all()
    assert page_count(f, h) == NR and f.flags[h] & PG_head
    assert page_trans_huge_mapcount(f, h)[:2] == (1, NR)
    assert pte_bits(t.p, dest) & PTE_WRITE  # move_ptes keeps the bits
    t.p.write(dest, b"hi")  # no fault: same page
    assert t.k.cow_log == [] and t.k.vmstat["pgreuse"] == 0
    assert f.read(h + 256, 0, 2) == b"hi"
    assert t.k.check() == []
    # the rmap walk finds both VMAs, so split_huge_page succeeds and frees nothing
    assert t.k.split_huge_pages() == 1
    assert f.nr_allocated == NR
    assert all((m(t.k, h + i), page_count(f, h + i)) == (1, 1) for i in range(NR))


@pytest.mark.parametrize("kid", KERNELS)
def test_mremap_whole_aligned_pmd_moves_intact(kid: str) -> None:
    """A whole, aligned 2 MiB extent to an aligned address: move_huge_pmd, no split."""
    t = thp(kid)
    dest = t.p.mmap(2 * MiB, "none", align=2 * MiB)
    t.p.mremap(t.base, 2 * MiB, 2 * MiB, fixed_addr=dest)
    e = huge(t.p, dest)
    assert e.pfn == t.head and e.write
    assert (compound_mapcount(t.k.frames, t.head), page_count(t.k.frames, t.head)) == (1, 1)


# === mprotect / clear_refs write-protection (§B.7, V§9, V§10) =================================


@pytest.mark.parametrize("kid", KERNELS)
def test_mprotect_ro_rw_leaves_pmd_read_only(kid: str) -> None:
    """change_huge_pmd(vm_page_prot) with a private VMA: no write bit after RO and after RW;
    the next write takes do_huge_pmd_wp_page, which reuses the unshared, unpinned THP."""
    t = thp(kid)
    t.p.mprotect(t.base, 2 * MiB, "r")
    assert not huge(t.p, t.base).write
    t.p.mprotect(t.base, 2 * MiB, "rw")
    assert not huge(t.p, t.base).write and huge(t.p, t.base).pfn == t.head
    t.p.write(t.base, b"again")
    assert huge(t.p, t.base).write and huge(t.p, t.base).pfn == t.head
    assert t.k.vmstat["pgreuse"] == 1 and t.k.cow_log == []


@pytest.mark.parametrize("kid", KERNELS)
def test_mprotect_ro_rw_leaves_ptes_read_only(kid: str) -> None:
    k, p, a = small(kid, npages=4)
    for i in range(4):
        p.write(a + i * PAGE, b"x")
    p.mprotect(a, 4 * PAGE, "r")
    p.mprotect(a, 4 * PAGE, "rw")
    assert not any(pte_bits(p, a + i * PAGE) & PTE_WRITE for i in range(4))
    p.write(a + 2 * PAGE, b"y")
    assert pte_bits(p, a + 2 * PAGE) & PTE_WRITE and not pte_bits(p, a) & PTE_WRITE
    assert k.vmstat["pgreuse"] == 1


@pytest.mark.parametrize("kid", KERNELS)
def test_clear_refs_soft_dirty_write_protects(kid: str) -> None:
    """clear_refs 4: every PMD and present PTE loses write and soft-dirty; the next write
    faults (wp path) and reuses the exclusive, unpinned pages."""
    t = thp(kid)
    t.p.write(t.base + 2 * MiB + 8 * PAGE, b"x")  # a second THP
    t.k.thp_enabled = "never"
    small_a = t.p.mmap(4 * PAGE)
    t.p.write(small_a, b"s")
    t.p.clear_refs(4)
    for addr in (t.base, t.base + 2 * MiB):
        e = huge(t.p, addr)
        assert not e.write and not e.soft_dirty
    assert not pte_bits(t.p, small_a) & (PTE_WRITE | PTE_SOFT_DIRTY)
    t.p.write(t.base, b"1")
    t.p.write(small_a, b"2")
    assert huge(t.p, t.base).write and huge(t.p, t.base).soft_dirty
    assert not huge(t.p, t.base + 2 * MiB).write
    assert pte_bits(t.p, small_a) & PTE_WRITE and pte_bits(t.p, small_a) & PTE_SOFT_DIRTY
    assert t.k.vmstat["pgreuse"] == 2 and t.k.cow_log == []


@pytest.mark.parametrize("kid", KERNELS)
def test_clear_refs_pinned_pte_mapped_thp(kid: str) -> None:
    """D.4: PMD split, then a write pin on subpage 5 (writable PTE: no fault), then clear_refs
    write-protects it, then the process writes: 4.5.0 copies the subpage (the pin and the VA
    diverge); 6d0a07e reuses (ptm 1)."""
    t = thp(kid)
    split_own_pmd(t.p, t.base)
    addr = t.base + 5 * PAGE
    pin = t.p.get_user_pages(addr, PAGE)
    assert pin.pages.tolist() == [t.head + 5]
    t.p.clear_refs(4)
    t.p.write(addr, b"cpu")
    if kid == "v4.5":
        assert t.p.translate(addr) != t.head + 5
        assert check_pin_coherence(t.k) != []
    else:
        assert t.p.translate(addr) == t.head + 5
        assert check_pin_coherence(t.k) == []
        pin.dma_write(0, b"dma")
        assert t.p.read(addr, 3) == b"dma"


# === NUMA hinting faults (D.1, V§11) ==========================================================


@pytest.mark.parametrize("kid", KERNELS)
def test_numa_pinned_thp_comes_back_read_only(kid: str) -> None:
    """change_prot_numa keeps the write bit under prot_none; the hint fault finds a misplaced,
    pinned THP: isolation fails, out_fail restores pmd_modify(vm_page_prot) -> read-only, same
    pfn. The next write: 4.5.0 copies 2 MiB (ref != 1), 6d0a07e reuses."""
    t = thp(kid)
    t.p.get_user_pages(t.base, PAGE)
    t.p.numa_balance(t.base, 2 * MiB)
    e = huge(t.p, t.base)
    assert e.protnone and e.write
    assert t.p.read(t.base, 7) == b"S0 data"
    e = huge(t.p, t.base)
    assert not e.protnone and not e.write and e.pfn == t.head
    t.p.write(t.base, b"W")
    assert (huge(t.p, t.base).pfn == t.head) is (kid != "v4.5")
    assert (check_pin_coherence(t.k) == []) is (kid != "v4.5")


@pytest.mark.parametrize("kid", KERNELS)
def test_numa_unpinned_thp_migrates(kid: str) -> None:
    """Unpinned, misplaced: migrate_misplaced_transhuge_page moves it to a new THP, PMD
    writable again (VM_WRITE); the old THP loses its only map and ref and is freed."""
    t = thp(kid)
    f, old = t.k.frames, t.head
    t.p.numa_balance(t.base, 2 * MiB)
    assert t.p.read(t.base, 7) == b"S0 data"
    e = huge(t.p, t.base)
    assert e.pfn != old and e.write and not e.protnone
    assert (compound_mapcount(f, e.pfn), page_count(f, e.pfn)) == (1, 1)
    assert int(f.index[e.pfn]) == t.base >> 12
    assert freed(t.k, old)
    assert t.p.mm.anon_rss == NR


@pytest.mark.parametrize("kid", KERNELS)
def test_numa_well_placed_thp_keeps_write(kid: str) -> None:
    """Not misplaced: clear_pmdnuma re-adds the write bit it had."""
    t = thp(kid)
    t.k.numa_misplaced = False
    t.p.numa_balance(t.base, 2 * MiB)
    t.p.read(t.base, 1)
    e = huge(t.p, t.base)
    assert e.pfn == t.head and e.write and not e.protnone


@pytest.mark.parametrize("pinned", [False, True])
@pytest.mark.parametrize("kid", KERNELS)
def test_numa_pte_keeps_write_bit(kid: str, pinned: bool) -> None:
    """do_numa_page restores the PTE with its write bit before trying to migrate. A misplaced
    small page migrates (new pfn) unless an extra reference (a pin) holds it."""
    k, p, a = small(kid)
    p.write(a, b"x")
    pfn = p.translate(a)
    if pinned:
        p.get_user_pages(a, PAGE)
    p.numa_balance(a, PAGE)
    assert pte_bits(p, a) & PTE_PROTNONE and pte_bits(p, a) & PTE_WRITE
    assert p.read(a, 1) == b"x"
    bits = pte_bits(p, a)
    assert bits & PTE_WRITE and not bits & PTE_PROTNONE
    assert (p.translate(a) == pfn) is pinned
    p.write(a, b"y")  # writable: no fault
    assert k.cow_log == [] and k.vmstat["pgreuse"] == 0


@pytest.mark.parametrize("kid", KERNELS)
def test_numa_pte_mapped_thp_not_migrated(kid: str) -> None:
    """A PTE-mapped THP subpage: write bit restored, no migration ('TODO' in 4.5)."""
    t = thp(kid)
    t.p.mprotect(t.base + PAGE, PAGE, "r")
    t.p.numa_balance(t.base, 2 * MiB)
    t.p.read(t.base + 7 * PAGE, 1)
    assert t.p.translate(t.base + 7 * PAGE) == t.head + 7
    bits = pte_bits(t.p, t.base + 7 * PAGE)
    assert bits & PTE_WRITE and not bits & PTE_PROTNONE


# === GUP (§B.9, V§12) =========================================================================


@pytest.mark.parametrize("kid", KERNELS)
def test_gup_write_on_writable_thp_takes_references_only(kid: str) -> None:
    t = thp(kid)
    pin = t.p.get_user_pages(t.base + 10 * PAGE, 3 * PAGE)
    assert pin.pages.tolist() == [t.head + 10, t.head + 11, t.head + 12]
    assert page_count(t.k.frames, t.head) == 4 and huge(t.p, t.base).pfn == t.head
    assert t.k.cow_log == []


@pytest.mark.parametrize("kid", KERNELS)
def test_gup_force_on_read_only_vma_cow_then_read_pin(kid: str) -> None:
    """FOLL_WRITE|FOLL_FORCE on a read-only private VMA whose page is shared with a child:
    the write fault copies (mapcount 2) into a page mapped read-only but dirty (maybe_mkwrite
    without VM_WRITE); VM_FAULT_WRITE without VM_WRITE drops FOLL_WRITE and the read lookup
    pins the copy: ref 2 (map + pin). The child keeps the original."""
    k, p, a = small(kid)
    p.write(a, b"orig")
    old = p.translate(a)
    p.mprotect(a, 8 * PAGE, "r")
    c = p.fork()
    pin = p.get_user_pages(a, PAGE, write=True, force=True)
    new = p.translate(a)
    assert new not in (None, old) and pin.pages.tolist() == [new]
    bits = pte_bits(p, a)
    assert not bits & PTE_WRITE and bits & PTE_DIRTY
    f = k.frames
    assert (m(k, new), page_count(f, new)) == (1, 2)
    assert (m(k, old), page_count(f, old)) == (1, 1)
    assert c.translate(a) == old
    assert [(e.function, e.old, e.new) for e in k.cow_log] == [("wp_page_copy", old, new)]
    pin.dma_write(0, b"poke")
    assert p.read(a, 4) == b"poke" and c.read(a, 4) == b"orig"


@pytest.mark.parametrize("kid", KERNELS)
def test_gup_force_on_read_only_zero_page(kid: str) -> None:
    """The same on a page that was only read: the forced write copies the zero page."""
    k, p, a = small(kid, prot="r")
    p.read(a, 1)
    pin = p.get_user_pages(a, PAGE, write=True, force=True)
    new = p.translate(a)
    assert new not in (None, ZERO_PFN) and pin.pages.tolist() == [new]
    assert not pte_bits(p, a) & PTE_WRITE
    assert page_count(k.frames, new) == 2
    assert [(e.function, e.old) for e in k.cow_log] == [("wp_page_copy", None)]


@pytest.mark.parametrize("kid", KERNELS)
def test_gup_write_without_force_on_read_only_vma_fails(kid: str) -> None:
    _k, p, a = small(kid, prot="r")
    with pytest.raises(SyscallError) as err:
        p.get_user_pages(a, PAGE, write=True)
    assert err.value.errno == "EFAULT"


@pytest.mark.parametrize("kid", KERNELS)
def test_gup_read_untouched_pins_zero_page(kid: str) -> None:
    """A read GUP faults as a read: the zero page is mapped and is what gets pinned."""
    k, p, a = small(kid)
    pin = p.get_user_pages(a, 2 * PAGE, write=False)
    assert pin.pages.tolist() == [ZERO_PFN, ZERO_PFN]
    assert p.translate(a) == ZERO_PFN and k.frames.nr_allocated == 0


@pytest.mark.parametrize("kid", KERNELS)
def test_gup_read_untouched_thp_range_pins_huge_zero_page(kid: str) -> None:
    k = Kernel(kid, selfcheck=True)
    p = k.spawn()
    base = p.mmap(4 * MiB, align=2 * MiB)
    pin = p.get_user_pages(base + 4 * PAGE, 2 * PAGE, write=False)
    assert pin.pages.tolist() == [HUGE_ZERO_PFN + 4, HUGE_ZERO_PFN + 5]
    assert huge(p, base).huge_zero and k.frames.nr_allocated == 0


@pytest.mark.parametrize("kid", KERNELS)
def test_gup_write_untouched_thp_range_allocates_and_pins(kid: str) -> None:
    """A write GUP on untouched THP-eligible memory: do_huge_pmd_anonymous_page, then pin:
    C 1, ref 1 + 2."""
    k = Kernel(kid, selfcheck=True)
    p = k.spawn()
    base = p.mmap(4 * MiB, align=2 * MiB)
    pin = p.get_user_pages(base + PAGE, 2 * PAGE)
    head = huge(p, base).pfn
    assert pin.pages.tolist() == [head + 1, head + 2]
    assert (compound_mapcount(k.frames, head), page_count(k.frames, head)) == (1, 3)
    assert page_mapcount(k.frames, head + 1) == 1


@pytest.mark.parametrize("kid", KERNELS)
def test_gup_write_on_cow_shared_thp_copies_before_pinning(kid: str) -> None:
    """S1, then a write GUP in the parent: follow_trans_huge_pmd refuses the read-only PMD,
    faultin_page runs do_huge_pmd_wp_page, which copies (ptm 2), and the pin lands on the copy:
    the VA and the pin agree (D.4: only pin -> write-protect -> write is harmful)."""
    t = thp(kid)
    c = t.p.fork()
    pin = t.p.get_user_pages(t.base, 2 * PAGE)
    new = huge(t.p, t.base).pfn
    assert new != t.head and pin.pages.tolist() == [new, new + 1]
    assert page_count(t.k.frames, new) == 1 + 2
    assert (compound_mapcount(t.k.frames, t.head), page_count(t.k.frames, t.head)) == (1, 1)
    assert huge(c, t.base).pfn == t.head
    assert check_pin_coherence(t.k) == []


@pytest.mark.parametrize("kid", KERNELS)
def test_split_of_numa_hinting_pmd_drops_protnone(kid: str) -> None:
    """V§6: __split_huge_pmd_locked builds PTEs from vm_page_prot, so a prot_none (NUMA) PMD
    split by a partial mprotect gives accessible PTEs; the write bit (kept under prot_numa)
    is inherited except where mprotect removed it."""
    t = thp(kid)
    t.p.numa_balance(t.base, 2 * MiB)
    assert huge(t.p, t.base).protnone
    t.p.mprotect(t.base + PAGE, PAGE, "r")
    tab = table(t.p, t.base)
    assert not (tab.bits & PTE_PROTNONE).any()
    assert tab.bits[0] & PTE_WRITE and not tab.bits[1] & PTE_WRITE and tab.bits[511] & PTE_WRITE
    t.p.write(t.base + 9 * PAGE, b"x")  # writable, present: no fault
    assert t.k.vmstat["pgreuse"] == 0 and t.k.cow_log == []


@pytest.mark.parametrize("kid", KERNELS)
def test_numa_target_thp_allocation_failure_restores_read_only(kid: str) -> None:
    """V§11 (b): with no THP on the target node migration fails even without a pin, and
    out_fail restores the PMD read-only. The next write reuses on every kernel (nothing but
    the PMD references the THP: 4.5.0's mapcount 1 / count 1 holds too)."""
    t = thp(kid)
    t.k.thp_alloc_fail = True
    t.p.numa_balance(t.base, 2 * MiB)
    t.p.read(t.base, 1)
    e = huge(t.p, t.base)
    assert e.pfn == t.head and not e.write and not e.protnone
    t.p.write(t.base, b"W")
    assert huge(t.p, t.base).pfn == t.head and huge(t.p, t.base).write
    assert t.k.cow_log == []


@pytest.mark.parametrize("kid", KERNELS)
def test_mremap_whole_pmd_marks_it_soft_dirty(kid: str) -> None:
    """V§14: move_huge_pmd sets the moved PMD soft-dirty, so a clear_refs(4) tracker sees it."""
    t = thp(kid)
    t.p.clear_refs(4)
    assert not huge(t.p, t.base).soft_dirty
    dest = t.p.mmap(2 * MiB, "none", align=2 * MiB)
    t.p.mremap(t.base, 2 * MiB, 2 * MiB, fixed_addr=dest)
    e = huge(t.p, dest)
    assert e.soft_dirty and e.pfn == t.head and not e.write


@pytest.mark.parametrize("kid", KERNELS)
def test_mremap_marks_moved_ptes_soft_dirty(kid: str) -> None:
    t = thp(kid)
    t.p.clear_refs(4)
    dest = t.p.mmap(MiB, "none", align=2 * MiB)
    t.p.mremap(t.base + MiB, MiB, MiB, fixed_addr=dest)
    tab = table(t.p, dest)
    assert (tab.pfn[:256] == [t.head + 256 + i for i in range(256)]).all()
    assert (tab.bits[:256] & PTE_SOFT_DIRTY).all()


@pytest.mark.parametrize(
    ("kernel_id", "remapped_dirty"),
    [
        ("v4.5", "all"),  # unfreeze_page_vma: pte_mkdirty where PageDirty (4.5.0)
        ("v4.6", "none"),  # remove_migration_pte: never pte_mkdirty (4.6 .. 6.0)
        # 6.1: folio_test_dirty && is_migration_entry_dirty, but its PMD split left every PTE
        # clean (the PMD's dirty bit went to the page): no entry froze dirty
        ("v6.1", "none"),
        ("v6.2", "frozen dirty"),  # the PMD split keeps the dirty bit on the PTEs (6.2)
        ("v6.18", "frozen dirty"),
    ],
)
def test_split_huge_page_remaps_each_pte_dirty_as_the_generation_says(
    kernel_id: str, remapped_dirty: str
) -> None:
    """A THP written whole (a dirty PMD, the page PG_dirty), its PMD split into 512 PTEs, then
    the dirty bit cleared from every even PTE: split_huge_page's remap makes a PTE dirty by the
    generation's rule - all of them, none, or the odd ones whose frozen entry was dirty."""
    from cowlab.mm.huge_memory import split_huge_page, split_huge_pmd

    k = Kernel(kernel_id)
    k.thp_enabled = "always"
    p = k.spawn()
    addr = p.mmap(2 * MiB, align=2 * MiB)
    p.fill(addr, 2 * MiB, 0x61)  # every page: 6.12+ maps none as the zero page after the split
    head = p.translate(addr)
    assert head is not None and k.frames.flags[head] & PG_head
    split_huge_pmd(k, p.mm.find_vma(addr), addr)
    table = p.mm.pmds[addr >> 21]
    assert isinstance(table, PteTable)
    table.bits[0::2] &= pte_without(PTE_DIRTY)
    assert split_huge_page(k, head) == 0
    dirty = (table.bits & PTE_DIRTY) != 0
    odd = [bool(i % 2) for i in range(NR)]
    expected = {"all": [True] * NR, "none": [False] * NR, "frozen dirty": odd}[remapped_dirty]
    assert dirty.tolist() == expected
    assert table.pfn.tolist() == list(range(head, head + NR)) and k.check() == []
