"""mm_struct, vm_area_struct and anon_vma (include/linux/mm_types.h, include/linux/rmap.h)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cowlab.mm.constants import PAGE_SHIFT, PMD_SHIFT, VM_MAYWRITE, VM_SHARED
from cowlab.mm.pgtable import PmdEntry


@dataclass(eq=False)
class AnonVma:
    """struct anon_vma; ``vmas`` is its interval tree (the VMAs linked by anon_vma_chains)."""

    id: int
    root: AnonVma | None = None
    parent: AnonVma | None = None
    degree: int = 1
    vmas: set[VmArea] = field(default_factory=set)

    def __repr__(self) -> str:
        return f"anon_vma#{self.id}"


@dataclass(eq=False)
class VmArea:
    """struct vm_area_struct; ``anon_vma_chain`` lists every anon_vma this VMA is linked into."""

    mm: MmStruct
    vm_start: int
    vm_end: int
    vm_flags: int
    vm_pgoff: int
    anon_vma: AnonVma | None = None
    anon_vma_chain: list[AnonVma] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"vma[{self.vm_start:#x}-{self.vm_end:#x} pid {self.mm.pid}]"

    def linear_page_index(self, addr: int) -> int:
        """linear_page_index(): the page->index an anonymous page mapped at addr must carry."""
        return ((addr - self.vm_start) >> PAGE_SHIFT) + self.vm_pgoff

    def vma_address(self, pgoff: int) -> int:
        return self.vm_start + ((pgoff - self.vm_pgoff) << PAGE_SHIFT)

    @property
    def pages(self) -> int:
        return (self.vm_end - self.vm_start) >> PAGE_SHIFT


def is_cow_mapping(flags: int) -> bool:
    """is_cow_mapping(): private and may become writable."""
    return (flags & (VM_SHARED | VM_MAYWRITE)) == VM_MAYWRITE


@dataclass(eq=False)
class MmStruct:
    """struct mm_struct: the VMAs sorted by address and the page tables (PMD index -> entry)."""

    pid: int
    vmas: list[VmArea] = field(default_factory=list)
    pmds: dict[int, PmdEntry] = field(default_factory=dict)
    anon_rss: int = 0  # MM_ANONPAGES
    swapents: int = 0  # MM_SWAPENTS: swap PTEs
    has_pinned: bool = False  # MMF_HAS_PINNED (5.9 mm->has_pinned): a FOLL_PIN was taken here

    def find_vma(self, addr: int) -> VmArea | None:
        """The VMA containing addr (the kernel's find_vma also returns the next one above)."""
        for vma in self.vmas:
            if vma.vm_start <= addr < vma.vm_end:
                return vma
            if vma.vm_start > addr:
                return None
        return None

    def vmas_in(self, start: int, end: int) -> list[VmArea]:
        return [v for v in self.vmas if v.vm_start < end and v.vm_end > start]

    def insert_vma(self, vma: VmArea) -> None:
        self.vmas.append(vma)
        self.vmas.sort(key=lambda v: v.vm_start)


def pmd_index(addr: int) -> int:
    return addr >> PMD_SHIFT


def pte_index(addr: int) -> int:
    return (addr >> PAGE_SHIFT) & 511
