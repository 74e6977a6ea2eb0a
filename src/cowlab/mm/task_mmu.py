"""fs/proc/task_mmu.c: writes to /proc/PID/clear_refs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cowlab.errors import SyscallError
from cowlab.mm.constants import PMD_SHIFT, VM_SOFTDIRTY
from cowlab.mm.mm import page_maybe_dma_pinned
from cowlab.mm.mm_types import MmStruct, is_cow_mapping
from cowlab.mm.pgtable import (
    PTE_SOFT_DIRTY,
    PTE_SPECIAL,
    PTE_WRITE,
    PTE_YOUNG,
    HugePmd,
    pte_without,
)

if TYPE_CHECKING:
    from cowlab.kernel import Kernel

CLEAR_REFS_ALL, CLEAR_REFS_ANON, CLEAR_REFS_MAPPED, CLEAR_REFS_SOFT_DIRTY = 1, 2, 3, 4


def clear_refs_write(k: Kernel, mm: MmStruct, value: int) -> None:
    """clear_refs_write(): 1-3 clear the young bits; 4 write-protects everything (soft-dirty).

    Soft-dirty tracking needs the next write to fault, so the kernel clears the write bit of
    every present PTE and huge PMD — pinned or not until 5.11, which skips a writable PTE of a
    maybe-pinned page. Without CONFIG_MEM_SOFT_DIRTY value 4 does nothing.
    """
    if value not in (CLEAR_REFS_ALL, CLEAR_REFS_ANON, CLEAR_REFS_MAPPED, CLEAR_REFS_SOFT_DIRTY):
        raise SyscallError("EINVAL", f"clear_refs: value {value} is not 1, 2, 3 or 4")
    soft_dirty = value == CLEAR_REFS_SOFT_DIRTY
    if soft_dirty and not k.soft_dirty_enabled:
        return
    if soft_dirty:
        for vma in mm.vmas:
            vma.vm_flags &= ~VM_SOFTDIRTY
    for idx, entry in mm.pmds.items():
        if isinstance(entry, HugePmd):
            if soft_dirty:
                entry.write = entry.soft_dirty = False
            else:
                entry.young = False
            continue
        present = entry.pfn >= 0
        if soft_dirty and mm.has_pinned and k.policy.clear_refs_skips_pinned:
            present &= ~_pinned_writable(k, mm, idx, entry.pfn, entry.bits)
        mask = PTE_WRITE | PTE_SOFT_DIRTY if soft_dirty else PTE_YOUNG
        entry.bits[present] &= pte_without(mask)
        if soft_dirty:  # clear_soft_dirty(): pte_swp_clear_soft_dirty() on swap PTEs
            entry.bits[entry.pfn <= -2] &= pte_without(PTE_SOFT_DIRTY)


def _pinned_writable(
    k: Kernel, mm: MmStruct, idx: int, pfns: np.ndarray, bits: np.ndarray
) -> np.ndarray:
    """pte_is_pinned() (5.11): writable, in a COW mapping, and the page may be DMA-pinned."""
    out = np.zeros(pfns.size, dtype=bool)
    candidates = (pfns >= 0) & ((bits & PTE_WRITE) != 0) & ((bits & PTE_SPECIAL) == 0)
    for i in np.flatnonzero(candidates).tolist():
        vma = mm.find_vma((idx << PMD_SHIFT) + (i << 12))
        if vma is not None and is_cow_mapping(vma.vm_flags):
            out[i] = page_maybe_dma_pinned(k.frames, int(pfns[i]))
    return out
