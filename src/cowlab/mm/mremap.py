"""mm/mremap.c: mremap() — shrink, grow in place, or move (4.5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cowlab.errors import SyscallError
from cowlab.mm.constants import (
    HPAGE_PMD_MASK,
    HPAGE_PMD_SIZE,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE_SHIFT,
    PAGE_SIZE,
    VM_MERGEABLE,
    VM_NOHUGEPAGE,
)
from cowlab.mm.huge_memory import split_huge_pmd
from cowlab.mm.ksm import ksm_moved, unmerge_ksm_pages
from cowlab.mm.mm_types import MmStruct, VmArea, pmd_index, pte_index
from cowlab.mm.mmap import check_range, do_munmap, get_unmapped_area, vma_merge_around
from cowlab.mm.pgtable import PTE_SOFT_DIRTY, HugePmd, PteTable
from cowlab.mm.rmap import anon_vma_clone

if TYPE_CHECKING:
    from cowlab.kernel import Kernel

# 5.16/5.17 return EFAULT without its minus sign: the C library hands it back as an address
POSITIVE_EFAULT = 14


def mremap_flags(may_move: bool, fixed_addr: int | None) -> int:
    """The flags a program passes: MREMAP_FIXED (to fixed_addr) always with MREMAP_MAYMOVE."""
    flags = MREMAP_MAYMOVE if may_move or fixed_addr is not None else 0
    return flags | MREMAP_FIXED if fixed_addr is not None else flags


def do_mremap(
    k: Kernel,
    mm: MmStruct,
    old_addr: int,
    old_len: int,
    new_len: int,
    flags: int,
    new_addr: int | None,
) -> int:
    """sys_mremap(): shrink in place, grow in place, or move.

    A shrink that is not MREMAP_FIXED just unmaps the tail, across VMAs and holes alike; only
    growing and moving need [old_addr, old_addr + len) in one VMA (EFAULT). Two rules of later
    generations are policy decisions: the VMA lookup at old_addr (5.16) and the move of several
    VMAs at once (6.17).
    """
    old_end = check_range(old_addr, old_len, "mremap")
    old_len = old_end - old_addr
    new_len = check_range(new_addr or 0, new_len, "mremap") - (new_addr or 0)
    if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
        raise SyscallError("EINVAL", "mremap: MREMAP_FIXED needs MREMAP_MAYMOVE")
    if flags & MREMAP_FIXED:
        if new_addr is None:
            raise SyscallError("EINVAL", "mremap: MREMAP_FIXED needs a new address")
        if new_addr < old_end and old_addr < new_addr + new_len:
            raise SyscallError("EINVAL", "mremap: the new range overlaps the old one")
        if k.policy.mremap_moves_vmas(old_len, new_len):
            return move_vmas(k, mm, old_addr, old_len, new_addr)
    if k.policy.mremap_looks_up_vma:
        vma = mm.find_vma(old_addr)
        if vma is None or vma.vm_start > old_addr:
            if k.policy.mremap_efault_positive:
                k.event("sys_mremap", "fail", addr=old_addr, detail="returns +EFAULT (14)")
                return POSITIVE_EFAULT
            raise SyscallError("EFAULT", f"mremap: no VMA at {old_addr:#x}")
    if not flags & MREMAP_FIXED and new_len <= old_len:
        # a shrink only unmaps the tail: no one-VMA check, holes do not matter
        if new_len < old_len:
            do_munmap(k, mm, old_addr + new_len, old_len - new_len)
        return old_addr
    if flags & MREMAP_FIXED:
        assert new_addr is not None
        # mremap_to(): the target and the tail go first, the one-VMA check is on what is left
        do_munmap(k, mm, new_addr, new_len)
        if old_len > new_len:
            do_munmap(k, mm, old_addr + new_len, old_len - new_len)
            old_len, old_end = new_len, old_addr + new_len
        vma = _one_vma(mm, old_addr, old_end)
        return move_vma(k, vma, old_addr, old_len, new_len, new_addr)
    vma = _one_vma(mm, old_addr, old_end)
    if old_end == vma.vm_end and not mm.vmas_in(old_end, old_addr + new_len):
        vma.vm_end = old_addr + new_len
        return old_addr
    if not flags & MREMAP_MAYMOVE:
        raise SyscallError("ENOMEM", "mremap: cannot grow in place and MREMAP_MAYMOVE is not set")
    return move_vma(k, vma, old_addr, old_len, new_len, get_unmapped_area(mm, new_len, PAGE_SIZE))


def _one_vma(mm: MmStruct, start: int, end: int) -> VmArea:
    """vma_to_resize() / check_prep_vma(): [start, end) must lie in the VMA at start."""
    vma = mm.find_vma(start)
    if vma is None or vma.vm_start > start or end > vma.vm_end:
        raise SyscallError("EFAULT", f"mremap: [{start:#x}, {end:#x}) is not one VMA")
    return vma


def move_vmas(k: Kernel, mm: MmStruct, start: int, length: int, new_addr: int) -> int:
    """remap_move() (6.17, d23cb648e365 "mm/mremap: permit mremap() move of multiple VMAs"):
    a same-size MREMAP_FIXED move takes every VMA in [start, start + length) along, each piece
    at the same offset from new_addr, so the holes between them are kept. A hole at the start
    (or no VMA at all) is EFAULT; each piece goes through mremap_to(), which unmaps only that
    piece's target, so whatever lies opposite a hole stays mapped.
    """
    end = start + length
    pieces = [(max(v.vm_start, start), min(v.vm_end, end)) for v in mm.vmas_in(start, end)]
    if not pieces or pieces[0][0] > start:
        raise SyscallError("EFAULT", f"mremap: no VMA at {start:#x}")
    for lo, hi in pieces:
        target = new_addr + (lo - start)
        do_munmap(k, mm, target, hi - lo)
        vma = mm.find_vma(lo)
        assert vma is not None and vma.vm_start <= lo and hi <= vma.vm_end
        move_vma(k, vma, lo, hi - lo, hi - lo, target)
    return new_addr


def move_vma(
    k: Kernel, vma: VmArea, old_addr: int, old_len: int, new_len: int, new_addr: int
) -> int:
    """move_vma(): copy_vma at the new place, move_page_tables, then unmap the old range. KSM
    pages in the range are broken first (ksm_madvise(MADV_UNMERGEABLE) without clearing
    VM_MERGEABLE), so none turns up at the new place."""
    if vma.vm_flags & VM_MERGEABLE:
        unmerge_ksm_pages(k, vma, old_addr, old_addr + old_len)
    pgoff = vma.vm_pgoff + ((old_addr - vma.vm_start) >> PAGE_SHIFT)
    new_vma = VmArea(vma.mm, new_addr, new_addr + new_len, vma.vm_flags, pgoff, vma.anon_vma)
    anon_vma_clone(new_vma, vma)
    vma.mm.insert_vma(new_vma)
    move_page_tables(k, vma, new_vma, old_addr, new_addr, old_len)
    if k.ksm.nodes or k.ksm.unreached:
        ksm_moved(k, new_vma, old_addr, new_addr, old_len)
    do_munmap(k, vma.mm, old_addr, old_len)
    vma_merge_around(k, new_vma)
    return new_addr


def move_page_tables(
    k: Kernel, vma: VmArea, new_vma: VmArea, old_addr: int, new_addr: int, length: int
) -> None:
    """move_page_tables(): whole aligned huge PMDs move intact, anything else as PTEs.

    move_huge_pmd() also needs an empty destination and a new VMA without VM_NOHUGEPAGE; the
    moved PMD is marked soft-dirty (docs/verification-4.5.md §14).
    """
    mm = vma.mm
    old, new, old_end = old_addr, new_addr, old_addr + length
    while old < old_end:
        extent = min(((old + HPAGE_PMD_SIZE) & HPAGE_PMD_MASK) - old, old_end - old)
        extent = min(extent, ((new + HPAGE_PMD_SIZE) & HPAGE_PMD_MASK) - new)
        entry = mm.pmds.get(pmd_index(old))
        if isinstance(entry, HugePmd):
            movable = extent == HPAGE_PMD_SIZE and not new_vma.vm_flags & VM_NOHUGEPAGE
            if movable and not mm.pmds.get(pmd_index(new)):
                del mm.pmds[pmd_index(old)]
                entry.soft_dirty = True
                mm.pmds[pmd_index(new)] = entry
                old, new = old + extent, new + extent
                continue
            split_huge_pmd(k, vma, old)
            entry = mm.pmds[pmd_index(old)]
        if isinstance(entry, PteTable):
            move_ptes(mm, entry, old, new, extent >> PAGE_SHIFT)
        old, new = old + extent, new + extent


def move_ptes(mm: MmStruct, src: PteTable, old: int, new: int, nr: int) -> None:
    """move_ptes(): the entries change address and become soft-dirty (move_soft_dirty_pte:
    present and swap PTEs); no mapcount or refcount changes."""
    dst = mm.pmds.get(pmd_index(new))
    if not isinstance(dst, PteTable):
        dst = mm.pmds[pmd_index(new)] = PteTable()
    a, b = pte_index(old), pte_index(new)
    dst.pfn[b : b + nr] = src.pfn[a : a + nr]
    present = src.pfn[a : a + nr] != -1
    dst.bits[b : b + nr] = src.bits[a : a + nr] | np.where(present, PTE_SOFT_DIRTY, 0).astype(
        np.uint8
    )
    src.pfn[a : a + nr] = -1
    src.bits[a : a + nr] = 0
    if src.empty():
        del mm.pmds[pmd_index(old)]
