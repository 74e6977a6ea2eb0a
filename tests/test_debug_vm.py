"""CONFIG_DEBUG_VM: the two VM_BUG_ONs of this story fire exactly where the 2016 kernels did."""

from __future__ import annotations

import pytest

from cowlab import Config, Kernel, KernelBug
from cowlab.checker import check_counters, check_rmap
from cowlab.mm.mm import compound_head

THP = 2 << 20
PAGE = 4096


def lone_subpage_after_fork(kernel_id: str, subpage: int) -> tuple[Kernel, int]:
    """A THP of which only one subpage is still mapped, write-protected by fork + child exit."""
    k = Kernel(kernel_id, Config(debug_vm=True), selfcheck=True)
    p = k.spawn()
    buf = p.mmap(THP, align=THP)
    p.write(buf, b"x")
    if subpage:
        p.madvise(buf, subpage * PAGE, "dontneed")
    p.madvise(buf + (subpage + 1) * PAGE, THP - (subpage + 1) * PAGE, "dontneed")
    p.fork().exit()
    return k, buf + subpage * PAGE


def test_seed_trips_page_move_anon_rmap_index_check_on_a_tail() -> None:
    # total_mapcount == 1, so the seed calls page_move_anon_rmap(compound_head(page), vma,
    # address); 4.5's VM_BUG_ON compares the head's index with the tail's address.
    k, addr = lone_subpage_after_fork("v4.5+6d0a07e", 5)
    with pytest.raises(KernelBug, match="page_move_anon_rmap"):
        k.processes[1].write(addr, b"y")


@pytest.mark.parametrize(
    ("release", "trips"),
    [("4.5.6", True), ("4.6", True), ("4.6.1", True), ("4.5.7", False), ("4.6.2", False)],
)
def test_the_rounded_check_is_the_stable_backport_of_0798d3c022dc(
    release: str, trips: bool
) -> None:
    # 4.6.0 has 4.5's unrounded VM_BUG_ON (0798d3c022dc is a v4.7-rc1 commit); stable 4.5.7 and
    # 4.6.2 round the tail's address down to the PMD first (the stable-queue patch for 4.5.7,
    # the 4.6.2 tree's mm/rmap.c page_move_anon_rmap), which is the THP's start: no BUG
    k, addr = lone_subpage_after_fork(release, 5)
    if trips:
        with pytest.raises(KernelBug, match="page_move_anon_rmap"):
            k.processes[1].write(addr, b"y")
    else:
        k.processes[1].write(addr, b"y")
        assert k.cow_log == []  # reused: total_mapcount == 1


def test_seed_is_fine_when_the_lone_subpage_is_the_head() -> None:
    k, addr = lone_subpage_after_fork("v4.5+6d0a07e", 0)
    k.processes[1].write(addr, b"y")
    assert k.cow_log == []


def test_v45_copies_instead_and_never_moves() -> None:
    k, addr = lone_subpage_after_fork("v4.5", 5)
    k.processes[1].write(addr, b"y")
    assert [e.function for e in k.cow_log] == ["wp_page_copy"]


def kirill(kernel_id: str) -> Kernel:
    k = Kernel(kernel_id, Config(debug_vm=True))
    parent = k.spawn()
    buf = parent.mmap(THP, align=THP)
    parent.write(buf, b"x")
    child = parent.fork()
    parent.munmap(buf, THP // 2)
    child.munmap(buf + THP // 2, THP // 2)
    child.write(buf, b"y")
    return k


def test_early_version_split_huge_page_hits_bug() -> None:
    # The THP moved to the child's anon_vma; freeze_page's rmap walk cannot find the parent's
    # PTEs, mapcount is left after freezing: BUG() under CONFIG_DEBUG_VM.
    k = kirill("v4.5+6d0a07e-early")
    with pytest.raises(KernelBug, match="rmap walk"):
        k.split_huge_pages()


def test_early_version_without_debug_vm_fails_split_with_ebusy() -> None:
    k = kirill("v4.5+6d0a07e-early")
    k.config = Config(debug_vm=False)
    assert k.split_huge_pages() == 0
    assert check_counters(k) == []  # unfreeze_page restored every mapping and reference
    assert any("rmap_walk_anon misses" in p for p in check_rmap(k))


@pytest.mark.parametrize("kernel_id", ["v4.5", "v4.5+6d0a07e"])
def test_released_kernels_split_the_half_shared_thp(kernel_id: str) -> None:
    k = kirill(kernel_id)
    assert k.split_huge_pages() == 1
    assert k.check() == []


@pytest.mark.parametrize("kernel_id", ["v4.14", "v5.8"])
def test_no_index_check_after_4_7(kernel_id: str) -> None:
    # 4.7 (5a49973d7143) dropped page_move_anon_rmap's address and its VM_BUG_ON: the same
    # lone-tail reuse that trips the seed under CONFIG_DEBUG_VM is legal and moves the anon_vma
    k, addr = lone_subpage_after_fork(kernel_id, 5)
    p = k.processes[1]
    p.write(addr, b"y")
    assert k.cow_log == []  # reused: total_mapcount == 1
    tail = p.translate(addr)
    vma = p.mm.find_vma(addr)
    assert tail is not None and vma is not None and vma.anon_vma is not None
    assert int(k.frames.mapping[compound_head(k.frames, tail)]) == vma.anon_vma.id
