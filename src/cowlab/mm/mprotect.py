"""mm/mprotect.c: mprotect() and change_protection() (4.5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.errors import SyscallError
from cowlab.mm.constants import HPAGE_PMD_SIZE, PMD_SHIFT, VM_EXEC, VM_READ, VM_SHARED, VM_WRITE
from cowlab.mm.huge_memory import change_huge_pmd, split_huge_pmd
from cowlab.mm.mm_types import MmStruct, VmArea, pmd_index, pte_index
from cowlab.mm.mmap import calc_vm_prot_bits, check_range, vma_modify_flags
from cowlab.mm.pgtable import (
    PTE_DIRTY,
    PTE_PROTNONE,
    PTE_SOFT_DIRTY,
    PTE_SPECIAL,
    PTE_WRITE,
    HugePmd,
    PteTable,
    pte_without,
)

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


def vma_page_prot_writable(vma: VmArea) -> bool:
    """vm_get_page_prot(): only shared mappings get a writable vm_page_prot; private ones COW."""
    return bool(vma.vm_flags & VM_SHARED and vma.vm_flags & VM_WRITE)


def do_mprotect(k: Kernel, mm: MmStruct, start: int, length: int, prot: int) -> None:
    """sys_mprotect(): ENOMEM for a hole, but only after the VMAs before it were changed.

    The VMA at start must exist (else ENOMEM, nothing changed); the loop then applies
    mprotect_fixup() VMA by VMA and stops with ENOMEM at the first hole (4.5 and 6.x
    do_mprotect_pkey() alike), so the part before the hole keeps the new protection.
    """
    end = check_range(start, length, "mprotect")
    reach = start  # the end of the mapped run that begins at start
    for v in mm.vmas_in(start, end):
        if v.vm_start > reach:
            break
        reach = v.vm_end
    if reach == start:
        raise SyscallError("ENOMEM", f"mprotect: nothing mapped at {start:#x}")
    stop = min(reach, end)
    bits = calc_vm_prot_bits(prot)
    changed = vma_modify_flags(
        k, mm, start, stop, lambda flags: (flags & ~(VM_READ | VM_WRITE | VM_EXEC)) | bits
    )
    for vma, _old in changed:
        change_protection(k, vma, max(start, vma.vm_start), min(stop, vma.vm_end))
    if stop < end:
        raise SyscallError("ENOMEM", f"mprotect: [{start:#x}, {end:#x}) has a hole at {stop:#x}")


def change_protection(k: Kernel, vma: VmArea, start: int, end: int) -> None:
    """change_protection(): pte_modify/pmd_modify to vm_page_prot; partial PMDs are split.

    For a private anonymous VMA vm_page_prot is never writable, so mprotect(RW) leaves every
    present entry read-only and the next write goes through do_wp_page — until 6.0/6.2, which
    map exclusive anonymous pages writable at once (can_change_pte_writable, 64fe24a3e05e).
    """
    mm = vma.mm
    writable = vma_page_prot_writable(vma)
    direct = bool(vma.vm_flags & VM_WRITE) and k.policy.mprotect_maps_exclusive_writable
    for idx in range(pmd_index(start), pmd_index(end - 1) + 1):
        entry = mm.pmds.get(idx)
        base = idx << PMD_SHIFT
        lo, hi = max(start, base), min(end, base + HPAGE_PMD_SIZE)
        if isinstance(entry, HugePmd):
            if hi - lo == HPAGE_PMD_SIZE:
                pmd_direct = direct and k.policy.mprotect_writable(
                    k, vma, entry.pfn, entry.soft_dirty, entry.dirty, True
                )
                change_huge_pmd(entry, writable or (pmd_direct and not entry.huge_zero), False)
                continue
            split_huge_pmd(k, vma, base)
            entry = mm.pmds[idx]
        if isinstance(entry, PteTable):
            sl = slice(pte_index(lo), pte_index(hi - 1) + 1)
            change_pte_range(entry, sl, writable)
            if direct:
                map_exclusive_writable(k, vma, entry, sl)


def change_pte_range(table: PteTable, sl: slice, writable: bool) -> None:
    """change_pte_range(): present PTEs take the new protection; dirty/young/soft-dirty stay."""
    present = table.pfn[sl] >= 0
    bits = table.bits[sl]
    bits[present] &= pte_without(PTE_PROTNONE | PTE_WRITE)
    if writable:
        bits[present] |= PTE_WRITE


def map_exclusive_writable(k: Kernel, vma: VmArea, table: PteTable, sl: slice) -> None:
    """can_change_pte_writable(): the PTEs the generation may make writable without a fault."""
    for i in range(sl.start, sl.stop):
        bits = int(table.bits[i])
        if table.pfn[i] < 0 or bits & PTE_SPECIAL:
            continue
        soft_dirty, dirty = bool(bits & PTE_SOFT_DIRTY), bool(bits & PTE_DIRTY)
        if k.policy.mprotect_writable(k, vma, int(table.pfn[i]), soft_dirty, dirty, False):
            table.bits[i] = bits | PTE_WRITE
