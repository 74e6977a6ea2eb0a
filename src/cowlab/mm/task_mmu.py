"""fs/proc/task_mmu.c: writes to /proc/PID/clear_refs (4.5, CONFIG_MEM_SOFT_DIRTY=y)."""

from __future__ import annotations

from cowlab.errors import SyscallError
from cowlab.mm.constants import VM_SOFTDIRTY
from cowlab.mm.mm_types import MmStruct
from cowlab.mm.pgtable import PTE_SOFT_DIRTY, PTE_WRITE, PTE_YOUNG, HugePmd, pte_without

CLEAR_REFS_ALL, CLEAR_REFS_ANON, CLEAR_REFS_MAPPED, CLEAR_REFS_SOFT_DIRTY = 1, 2, 3, 4


def clear_refs_write(mm: MmStruct, value: int) -> None:
    """clear_refs_write(): 1-3 clear the young bits; 4 write-protects everything (soft-dirty).

    Soft-dirty tracking needs the next write to fault, so 4.5 clears the write bit of every
    present PTE and huge PMD — pinned or not.
    """
    if value not in (CLEAR_REFS_ALL, CLEAR_REFS_ANON, CLEAR_REFS_MAPPED, CLEAR_REFS_SOFT_DIRTY):
        raise SyscallError("EINVAL", f"clear_refs: value {value} is not 1, 2, 3 or 4")
    soft_dirty = value == CLEAR_REFS_SOFT_DIRTY
    if soft_dirty:
        for vma in mm.vmas:
            vma.vm_flags &= ~VM_SOFTDIRTY
    for entry in mm.pmds.values():
        if isinstance(entry, HugePmd):
            if soft_dirty:
                entry.write = entry.soft_dirty = False
            else:
                entry.young = False
            continue
        present = entry.pfn >= 0
        mask = PTE_WRITE | PTE_SOFT_DIRTY if soft_dirty else PTE_YOUNG
        entry.bits[present] &= pte_without(mask)
