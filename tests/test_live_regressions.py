"""Model bugs found by `cowlab live` against the live 6.18 kernel, as pure model tests.

Each expected value is derived from the kernel rule cited (not captured from a run); the live
cases that showed them are named in docs/fidelity.md.
"""

from __future__ import annotations

import pytest

from cowlab import Kernel, Process, Segfault, SyscallError
from cowlab.mm.constants import VM_WRITE
from cowlab.mm.mm import PageKsm
from cowlab.scenario import parse_scenario
from cowlab.scenario.runner import Runner

PAGE = 4096
NEW = ("v5.18", "v5.19", "v6.15", "v6.18")  # 550a7d60bd5e (5.16): VMA lookup at old_addr
OLD = ("v4.5", "v5.8", "v5.9")


def small(kid: str, npages: int = 3) -> tuple[Kernel, Process, int]:
    k = Kernel(kid, selfcheck=True)
    k.thp_enabled = "never"
    p = k.spawn()
    return k, p, p.mmap(npages * PAGE, "rw", align=16 * PAGE)


def spans(p: Process, lo: int, hi: int) -> list[tuple[int, int]]:
    """The VMAs meeting [lo, hi), as page offsets from lo."""
    return [((v.vm_start - lo) // PAGE, (v.vm_end - lo) // PAGE) for v in p.mm.vmas_in(lo, hi)]


# --- mremap shrink: only the tail is unmapped, holes do not matter ---------------------------
# SYSCALL mremap (4.5 .. 6.15) "always allow a shrinking remap"; 6.16+ mremap_at() MREMAP_SHRINK
# -> shrink_vma() -> do_vmi_munmap() of the tail: no one-VMA check (check_prep_vma() only checks
# the extent when vrm_will_map_new()). The live cases random-s1-0082/0088/0126/0180 (hole in
# the unmapped tail), 0018/0101 (hole in the kept part), 0028/0092/0098/0131/0195 (second
# shrink beyond the new end) all succeed on 6.18; the model returned EFAULT.


@pytest.mark.parametrize("kid", OLD + NEW)
def test_shrink_over_a_hole_in_the_tail(kid: str) -> None:
    _k, p, a = small(kid)
    p.munmap(a + 2 * PAGE, PAGE)
    assert p.mremap(a, 3 * PAGE, 2 * PAGE) == a
    assert spans(p, a, a + 3 * PAGE) == [(0, 2)]


@pytest.mark.parametrize("kid", OLD + NEW)
def test_shrink_over_a_hole_in_the_kept_part(kid: str) -> None:
    _k, p, a = small(kid)
    p.write(a + 2 * PAGE, b"gone")
    p.munmap(a + PAGE, PAGE)
    assert p.mremap(a, 3 * PAGE, 2 * PAGE) == a
    assert spans(p, a, a + 3 * PAGE) == [(0, 1)]  # page 2 unmapped, page 1 still a hole
    assert p.translate(a + 2 * PAGE) is None


@pytest.mark.parametrize("kid", OLD + NEW)
def test_second_shrink_past_the_new_end(kid: str) -> None:
    _k, p, a = small(kid)
    assert p.mremap(a, 3 * PAGE, PAGE) == a
    assert p.mremap(a, 3 * PAGE, PAGE) == a
    assert spans(p, a, a + 3 * PAGE) == [(0, 1)]


@pytest.mark.parametrize("kid", NEW)
def test_shrink_at_an_unmapped_address_is_efault_since_5_16(kid: str) -> None:
    """550a7d60bd5e: vma_lookup(mm, addr) fails -> EFAULT before the shrink; nothing unmapped."""
    _k, p, a = small(kid)
    p.munmap(a, PAGE)
    with pytest.raises(SyscallError) as e:
        p.mremap(a, 3 * PAGE, PAGE)
    assert e.value.errno == "EFAULT"
    assert spans(p, a, a + 3 * PAGE) == [(1, 3)]


@pytest.mark.parametrize("kid", OLD)
def test_shrink_at_an_unmapped_address_unmaps_the_tail_before_5_16(kid: str) -> None:
    """4.5: the shrink is done before any VMA is looked up (vm_munmap of the tail, return addr)."""
    _k, p, a = small(kid)
    p.munmap(a, PAGE)
    assert p.mremap(a, 3 * PAGE, PAGE) == a
    assert spans(p, a, a + 3 * PAGE) == []


@pytest.mark.parametrize("kid", OLD + NEW)
def test_grow_over_a_hole_is_efault(kid: str) -> None:
    """vma_to_resize() / check_prep_vma(): old_len > vma->vm_end - addr -> EFAULT."""
    _k, p, a = small(kid)
    p.munmap(a + 2 * PAGE, PAGE)
    with pytest.raises(SyscallError) as e:
        p.mremap(a, 3 * PAGE, 4 * PAGE, may_move=True)
    assert e.value.errno == "EFAULT"
    assert spans(p, a, a + 4 * PAGE) == [(0, 2)]


@pytest.mark.parametrize("kid", ("v4.5", "v6.18"))
def test_fixed_shrink_checks_the_kept_part_only(kid: str) -> None:
    """mremap_to(): the tail is unmapped first, the one-VMA check covers [addr, addr+new_len)."""
    _k, p, a = small(kid)
    dest = p.mmap(3 * PAGE, "rw", align=16 * PAGE)
    p.munmap(a + 2 * PAGE, PAGE)
    assert p.mremap(a, 3 * PAGE, 2 * PAGE, fixed_addr=dest) == dest
    assert spans(p, a, a + 3 * PAGE) == []
    _k, p, a = small(kid)
    dest = p.mmap(3 * PAGE, "rw", align=16 * PAGE)
    p.munmap(a + PAGE, PAGE)
    with pytest.raises(SyscallError) as e:
        p.mremap(a, 3 * PAGE, 2 * PAGE, fixed_addr=dest)
    assert e.value.errno == "EFAULT"


# --- 6.17: a same-size MREMAP_FIXED move takes several VMAs along -----------------------------
# d23cb648e365 ("mm/mremap: permit mremap() move of multiple VMAs"): remap_move() moves every
# VMA of [addr, addr+len) to the same offset from new_addr, keeping the gaps; a gap at the start
# is EFAULT; each piece's mremap_to() unmaps only that piece's target.


def test_fixed_move_of_two_vmas_on_6_18() -> None:
    _k, p, a = small("v6.18")
    dest = p.mmap(3 * PAGE, "rw", align=16 * PAGE)
    p.write(a, b"A0")
    p.write(a + 2 * PAGE, b"A2")
    p.mprotect(a, PAGE, "r")
    assert p.mremap(a, 3 * PAGE, 3 * PAGE, fixed_addr=dest) == dest
    assert spans(p, a, a + 3 * PAGE) == []
    assert spans(p, dest, dest + 3 * PAGE) == [(0, 1), (1, 3)]  # r and rw stay apart
    assert p.read(dest, 2) == b"A0" and p.read(dest + 2 * PAGE, 2) == b"A2"


def test_fixed_move_keeps_the_hole_and_what_lies_opposite_on_6_18() -> None:
    _k, p, a = small("v6.18")
    dest = p.mmap(3 * PAGE, "rw", align=16 * PAGE)
    p.write(dest + PAGE, b"T1")  # opposite the hole: not unmapped
    p.write(a, b"A0")
    p.write(a + 2 * PAGE, b"A2")
    p.munmap(a + PAGE, PAGE)
    assert p.mremap(a, 3 * PAGE, 3 * PAGE, fixed_addr=dest) == dest
    assert spans(p, a, a + 3 * PAGE) == []
    assert p.read(dest, 2) == b"A0"
    assert p.read(dest + PAGE, 2) == b"T1"
    assert p.read(dest + 2 * PAGE, 2) == b"A2"


def test_fixed_move_with_a_hole_at_the_start_is_efault_on_6_18() -> None:
    _k, p, a = small("v6.18")
    dest = p.mmap(3 * PAGE, "rw", align=16 * PAGE)
    p.munmap(a, PAGE)
    with pytest.raises(SyscallError) as e:
        p.mremap(a, 3 * PAGE, 3 * PAGE, fixed_addr=dest)
    assert e.value.errno == "EFAULT"
    assert spans(p, a, a + 3 * PAGE) == [(1, 3)]


def test_fixed_move_of_two_vmas_is_efault_before_6_17() -> None:
    """6.15 (and every older generation) requires one VMA: old_len > vma->vm_end - addr."""
    _k, p, a = small("v6.15")
    dest = p.mmap(3 * PAGE, "rw", align=16 * PAGE)
    p.mprotect(a, PAGE, "r")
    with pytest.raises(SyscallError) as e:
        p.mremap(a, 3 * PAGE, 3 * PAGE, fixed_addr=dest)
    assert e.value.errno == "EFAULT"


# --- mprotect over a hole: the VMAs before it are changed, then ENOMEM ------------------------
# do_mprotect_pkey() (4.5 and 6.x): ENOMEM at once only if no VMA contains start; otherwise the
# loop runs mprotect_fixup() VMA by VMA and breaks with ENOMEM at the first gap. Found while
# checking M1 with raw calls on the live 6.18 kernel (the live worker had refused the call).


@pytest.mark.parametrize("kid", ("v4.5", "v6.18"))
def test_mprotect_over_a_hole_changes_the_part_before_it(kid: str) -> None:
    _k, p, a = small(kid)
    p.munmap(a + 2 * PAGE, PAGE)
    with pytest.raises(SyscallError) as e:
        p.mprotect(a, 3 * PAGE, "r")
    assert e.value.errno == "ENOMEM"
    assert spans(p, a, a + 3 * PAGE) == [(0, 2)]
    vma = p.mm.find_vma(a)
    assert vma is not None and vma.vm_flags & VM_WRITE == 0  # pages 0 and 1 are read-only
    with pytest.raises(Segfault):
        p.write(a, b"x")


@pytest.mark.parametrize("kid", ("v4.5", "v6.18"))
def test_mprotect_from_a_hole_changes_nothing(kid: str) -> None:
    _k, p, a = small(kid)
    p.munmap(a, PAGE)
    with pytest.raises(SyscallError) as e:
        p.mprotect(a, 3 * PAGE, "r")
    assert e.value.errno == "ENOMEM"
    p.write(a + PAGE, b"still writable")


# --- a write to the huge zero PMD of a VMA that no longer wants THPs ---------------------------
# 4.5 do_huge_pmd_wp_page() allocates only if transparent_hugepage_enabled(vma) (else the zero
# page fallback: one 4 KiB page, zero PTEs for the rest); 6.13's do_huge_zero_wp_pmd()
# (1ced09e0331f) calls vma_alloc_anon_folio_pmd() without asking (6.13.2 and 6.18.2 alike):
# after MADV_NOHUGEPAGE the write still gets a PMD-mapped THP. Live case random-s4242-0039
# (docs/fidelity.md, K2).


@pytest.mark.parametrize(("kid", "thp"), [("v4.5", False), ("v6.13", True), ("v6.18", True)])
def test_write_to_the_huge_zero_pmd_after_nohugepage(kid: str, thp: bool) -> None:
    k = Kernel(kid, selfcheck=True)
    p = k.spawn()
    a = p.mmap(2 << 20, "rw", align=2 << 20)
    p.madvise(a, 2 << 20, "hugepage")
    assert p.read(a + 0x140000, 1) == b"\0"  # the huge zero PMD
    p.madvise(a, 2 << 20, "nohugepage")
    p.write(a + 0x128000, b"kP")
    pfn = p.translate(a + 0x128000)
    assert pfn is not None
    assert bool(k.frames.order[pfn]) == thp
    assert p.read(a + 0x128000, 2) == b"kP" and p.read(a, 1) == b"\0"


# --- ksmd: a stale node of the unstable tree ends the search -------------------------------------
# 6.18 unstable_tree_search_insert() returns NULL, inserting nothing, at the first node whose page
# get_mergeable_page() no longer finds. Two equal pages (59, 481) of a THP that khugepaged made:
# ksmd's first pass only takes checksums; in the second, page 0 (zeros) goes into the tree, page 1
# meets it and the THP is split (cmp_and_merge_page: the first split fails on the shared folio's
# extra reference, the second succeeds), which maps every zero-filled subpage, page 0 included, to
# the shared zero page (6.12 b1f202060afe). Page 0's node stays at the root, so pages 59 and 481
# find nothing and go nowhere in that pass; the third pass merges them. Live case
# random-s4242-0075 of a first version of the khugepaged op (docs/fidelity.md, K3).
K3 = """
name: k3
processes: [P]
steps:
  - {op: mmap, proc: P, name: r, size: 2M, align: 2M}
  - {op: write, proc: P, at: r+0x3b000, data: kP}
  - {op: write, proc: P, at: r+0x1e1000, data: kP}
  - {op: madvise, proc: P, at: r, size: 2M, advice: hugepage}
  - {op: khugepaged}
  - {op: madvise, proc: P, at: r, size: 2M, advice: mergeable}
"""


@pytest.mark.parametrize(("passes", "merged"), [(2, False), (3, True)])
def test_a_stale_unstable_node_ends_the_search(passes: int, merged: bool) -> None:
    text = K3 + f"  - {{op: ksmd, scans: {passes}}}\n"
    scenario = parse_scenario(text)
    runner = Runner(scenario, "v6.18")
    for step in scenario.steps:
        runner.run_step(step)
    p, base = runner.procs["P"], runner.regions["r"]
    a, b = p.translate(base + 0x3B000), p.translate(base + 0x1E1000)
    assert a is not None and b is not None
    assert (a == b) == merged and PageKsm(runner.k.frames, a) == merged
