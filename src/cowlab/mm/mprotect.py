"""mm/mprotect.c: mprotect() and change_protection() (4.5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.errors import SyscallError
from cowlab.mm.constants import HPAGE_PMD_SIZE, PMD_SHIFT, VM_EXEC, VM_READ, VM_SHARED, VM_WRITE
from cowlab.mm.huge_memory import change_huge_pmd, split_huge_pmd
from cowlab.mm.mm_types import MmStruct, VmArea, pmd_index, pte_index
from cowlab.mm.mmap import calc_vm_prot_bits, check_range, vma_modify_flags
from cowlab.mm.pgtable import PTE_PROTNONE, PTE_WRITE, HugePmd, PteTable, pte_without

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


def vma_page_prot_writable(vma: VmArea) -> bool:
    """vm_get_page_prot(): only shared mappings get a writable vm_page_prot; private ones COW."""
    return bool(vma.vm_flags & VM_SHARED and vma.vm_flags & VM_WRITE)


def do_mprotect(k: Kernel, mm: MmStruct, start: int, length: int, prot: int) -> None:
    """sys_mprotect(): every page of the range must be mapped (else ENOMEM)."""
    end = check_range(start, length, "mprotect")
    covered = sum(min(v.vm_end, end) - max(v.vm_start, start) for v in mm.vmas_in(start, end))
    if covered != end - start:
        raise SyscallError("ENOMEM", f"mprotect: [{start:#x}, {end:#x}) is not fully mapped")
    bits = calc_vm_prot_bits(prot)
    changed = vma_modify_flags(
        k, mm, start, end, lambda flags: (flags & ~(VM_READ | VM_WRITE | VM_EXEC)) | bits
    )
    for vma, _old in changed:
        change_protection(k, vma, max(start, vma.vm_start), min(end, vma.vm_end))


def change_protection(k: Kernel, vma: VmArea, start: int, end: int) -> None:
    """change_protection(): pte_modify/pmd_modify to vm_page_prot; partial PMDs are split.

    For a private anonymous VMA vm_page_prot is never writable, so mprotect(RW) leaves every
    present entry read-only and the next write goes through do_wp_page.
    """
    mm = vma.mm
    writable = vma_page_prot_writable(vma)
    for idx in range(pmd_index(start), pmd_index(end - 1) + 1):
        entry = mm.pmds.get(idx)
        base = idx << PMD_SHIFT
        lo, hi = max(start, base), min(end, base + HPAGE_PMD_SIZE)
        if isinstance(entry, HugePmd):
            if hi - lo == HPAGE_PMD_SIZE:
                change_huge_pmd(entry, writable, prot_numa=False)
                continue
            split_huge_pmd(k, vma, base)
            entry = mm.pmds[idx]
        if isinstance(entry, PteTable):
            change_pte_range(entry, slice(pte_index(lo), pte_index(hi - 1) + 1), writable)


def change_pte_range(table: PteTable, sl: slice, writable: bool) -> None:
    """change_pte_range(): present PTEs take the new protection; dirty/young/soft-dirty stay."""
    present = table.pfn[sl] >= 0
    bits = table.bits[sl]
    bits[present] &= pte_without(PTE_PROTNONE | PTE_WRITE)
    if writable:
        bits[present] |= PTE_WRITE
