"""kernel/fork.c: dup_mmap() — the child's VMAs, anon_vma chains and page tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.mm.constants import VM_DONTCOPY
from cowlab.mm.ksm import ksm_fork
from cowlab.mm.memory import copy_page_range
from cowlab.mm.mm_types import MmStruct, VmArea
from cowlab.mm.rmap import anon_vma_fork

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


def dup_mmap(k: Kernel, child: MmStruct, parent: MmStruct) -> None:
    """dup_mmap(): VM_DONTCOPY VMAs are skipped; only VMAs with an anon_vma copy page tables."""
    for vma in parent.vmas:
        if vma.vm_flags & VM_DONTCOPY:
            continue
        new = VmArea(child, vma.vm_start, vma.vm_end, vma.vm_flags, vma.vm_pgoff)
        anon_vma_fork(k, new, vma)
        child.insert_vma(new)
        if vma.anon_vma is not None:
            copy_page_range(k, new, vma)
    if k.ksm.unreached:
        ksm_fork(k, child, parent)
