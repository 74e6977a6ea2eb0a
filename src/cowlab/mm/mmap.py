"""mm/mmap.c: mmap, munmap, exit_mmap and the VMA split/merge machinery they share."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from cowlab.errors import SyscallError
from cowlab.mm.constants import (
    PAGE_SHIFT,
    PAGE_SIZE,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    TASK_SIZE,
    TASK_UNMAPPED_TOP,
    VM_EXEC,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYWRITE,
    VM_READ,
    VM_SOFTDIRTY,
    VM_WRITE,
)
from cowlab.mm.huge_memory import vma_adjust_trans_huge
from cowlab.mm.memory import zap_page_range
from cowlab.mm.mm_types import MmStruct, VmArea
from cowlab.mm.rmap import anon_vma_clone, unlink_anon_vmas

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


def calc_vm_prot_bits(prot: int) -> int:
    """calc_vm_prot_bits(): PROT_* to VM_READ/VM_WRITE/VM_EXEC."""
    return (
        (VM_READ if prot & PROT_READ else 0)
        | (VM_WRITE if prot & PROT_WRITE else 0)
        | (VM_EXEC if prot & PROT_EXEC else 0)
    )


def check_range(addr: int, length: int, what: str) -> int:
    """Page alignment and a non-empty range, as the syscalls demand (else EINVAL)."""
    if addr % PAGE_SIZE:
        raise SyscallError("EINVAL", f"{what}: address {addr:#x} is not page aligned")
    if length <= 0:
        raise SyscallError("EINVAL", f"{what}: length must be positive")
    end = addr + ((length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))
    if end > TASK_SIZE:
        raise SyscallError("EINVAL", f"{what}: range ends beyond the user address space")
    return end


def has_holes(mm: MmStruct, start: int, end: int) -> bool:
    """Does [start, end) have addresses no VMA covers (madvise's -ENOMEM)?"""
    covered = sum(min(v.vm_end, end) - max(v.vm_start, start) for v in mm.vmas_in(start, end))
    return covered != end - start


def get_unmapped_area(mm: MmStruct, length: int, align: int) -> int:
    """arch_get_unmapped_area_topdown(): the highest free, aligned gap below mmap_base."""
    top = TASK_UNMAPPED_TOP
    for vma in sorted(mm.vmas, key=lambda v: -v.vm_start):
        if vma.vm_start >= top:
            top = min(top, vma.vm_start)
            continue
        candidate = (top - length) & ~(align - 1)
        if candidate >= vma.vm_end:
            return candidate
        top = vma.vm_start
    candidate = (top - length) & ~(align - 1)
    if candidate < PAGE_SIZE:
        raise SyscallError("ENOMEM", "no free address range of that size")
    return candidate


def do_mmap(k: Kernel, mm: MmStruct, length: int, prot: int, align: int, addr: int | None) -> int:
    """do_mmap() of MAP_PRIVATE|MAP_ANONYMOUS (MAP_FIXED when addr is given): vm_pgoff = addr >> 12.

    ``align`` stands for the usual over-map-and-trim a program does to get an aligned buffer.
    """
    if length <= 0:
        raise SyscallError("EINVAL", "mmap: length must be positive")
    length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    align = max(align, PAGE_SIZE)
    if align & (align - 1) or align % PAGE_SIZE:
        raise SyscallError("EINVAL", f"mmap: alignment {align:#x} is not a power-of-two page size")
    if addr is None:
        # what a program does for alignment: map length + align, then trim both ends, which
        # leaves gaps (so the region does not merge with its neighbours)
        over = get_unmapped_area(mm, length + align, PAGE_SIZE) if align > PAGE_SIZE else None
        addr = get_unmapped_area(mm, length, align) if over is None else -(-over // align) * align
    else:
        check_range(addr, length, "mmap")
        if addr % align:
            raise SyscallError("EINVAL", f"mmap: fixed address {addr:#x} is not {align:#x} aligned")
        do_munmap(k, mm, addr, length)
    flags = calc_vm_prot_bits(prot) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | VM_SOFTDIRTY
    vma = VmArea(mm, addr, addr + length, flags, addr >> PAGE_SHIFT)
    mm.insert_vma(vma)
    vma_merge_around(k, vma)
    return addr


# --- split and merge ----------------------------------------------------------------------


def split_vma(k: Kernel, vma: VmArea, addr: int) -> VmArea:
    """split_vma(): cut vma at addr; the upper part is a new VMA with the same anon_vma chain."""
    vma_adjust_trans_huge(k, vma, addr)
    new = VmArea(
        vma.mm,
        addr,
        vma.vm_end,
        vma.vm_flags,
        vma.vm_pgoff + ((addr - vma.vm_start) >> PAGE_SHIFT),
        vma.anon_vma,
    )
    anon_vma_clone(new, vma)
    vma.vm_end = addr
    vma.mm.insert_vma(new)
    return new


def is_mergeable(a: VmArea, b: VmArea) -> bool:
    """can_vma_merge_after(): adjacent, same flags but soft-dirty, contiguous pgoff, anon_vma ok."""
    if a.vm_end != b.vm_start or (a.vm_flags ^ b.vm_flags) & ~VM_SOFTDIRTY:
        return False
    if a.vm_pgoff + a.pages != b.vm_pgoff:
        return False
    if a.anon_vma is b.anon_vma:
        return True
    other = b if a.anon_vma is None else a
    return (a.anon_vma is None or b.anon_vma is None) and len(other.anon_vma_chain) == 1


def merge_into(k: Kernel, prev: VmArea, nxt: VmArea) -> None:
    """vma_adjust() for a merge: prev grows over nxt, which is removed."""
    if prev.anon_vma is None and nxt.anon_vma is not None:
        prev.anon_vma = nxt.anon_vma
        anon_vma_clone(prev, nxt)
    prev.vm_end = nxt.vm_end
    prev.vm_flags |= nxt.vm_flags & VM_SOFTDIRTY
    remove_vma(k, nxt)


def vma_merge_around(k: Kernel, vma: VmArea) -> VmArea:
    """vma_merge(): fold vma into its neighbours where the kernel would."""
    mm = vma.mm
    i = mm.vmas.index(vma)
    if i + 1 < len(mm.vmas) and is_mergeable(vma, mm.vmas[i + 1]):
        merge_into(k, vma, mm.vmas[i + 1])
    if i > 0 and is_mergeable(mm.vmas[i - 1], vma):
        prev = mm.vmas[i - 1]
        merge_into(k, prev, vma)
        return prev
    return vma


def vma_modify_flags(
    k: Kernel, mm: MmStruct, start: int, end: int, newflags: Callable[[int], int]
) -> list[tuple[VmArea, int]]:
    """mprotect_fixup()/madvise_behavior(): split at start/end, set flags, merge back.

    Returns the VMAs whose flags changed, with their old flags.
    """
    changed: list[tuple[VmArea, int]] = []
    for vma in list(mm.vmas_in(start, end)):
        flags = newflags(vma.vm_flags)
        if flags == vma.vm_flags:
            continue
        if vma.vm_start < start:
            vma = split_vma(k, vma, start)
        if vma.vm_end > end:
            split_vma(k, vma, end)
        changed.append((vma, vma.vm_flags))
        vma.vm_flags = flags
    for vma, _ in changed:
        if vma in mm.vmas:
            vma_merge_around(k, vma)
    return [(v, old) for v, old in changed if v in mm.vmas]


# --- munmap and exit ----------------------------------------------------------------------


def remove_vma(k: Kernel, vma: VmArea) -> None:
    """remove_vma(): unlink from the anon_vma trees and from the mm."""
    unlink_anon_vmas(k, vma)
    vma.mm.vmas.remove(vma)


def do_munmap(k: Kernel, mm: MmStruct, start: int, length: int) -> None:
    """do_munmap(): split the edge VMAs, zap the range, remove what lies inside."""
    end = check_range(start, length, "munmap")
    for vma in list(mm.vmas_in(start, end)):
        if vma.vm_start < start:
            vma = split_vma(k, vma, start)
        if vma.vm_end > end:
            split_vma(k, vma, end)
        zap_page_range(k, vma, vma.vm_start, vma.vm_end)
        remove_vma(k, vma)


def exit_mmap(k: Kernel, mm: MmStruct) -> None:
    """exit_mmap(): unmap everything and free the page tables."""
    for vma in list(mm.vmas):
        zap_page_range(k, vma, vma.vm_start, vma.vm_end)
        remove_vma(k, vma)
    mm.pmds.clear()
