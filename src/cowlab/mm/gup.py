"""mm/gup.c: get_user_pages() as 4.5 has it — FOLL_GET references, faulting in as needed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.errors import SyscallError
from cowlab.mm.constants import (
    FOLL_FORCE,
    FOLL_GET,
    FOLL_NUMA,
    FOLL_TOUCH,
    FOLL_WRITE,
    PAGE_SIZE,
    VM_FAULT_SIGSEGV,
    VM_FAULT_WRITE,
    VM_MAYREAD,
    VM_READ,
    VM_WRITE,
)
from cowlab.mm.memory import handle_mm_fault
from cowlab.mm.mm import get_page, is_zero_pfn, put_page
from cowlab.mm.mm_types import MmStruct, VmArea, is_cow_mapping, pmd_index, pte_index
from cowlab.mm.pgtable import PTE_DIRTY, PTE_MIGRATION, PTE_PROTNONE, PTE_WRITE, PTE_YOUNG, HugePmd

if TYPE_CHECKING:
    from cowlab.kernel import Kernel

MAX_FAULT_RETRIES = 8


def check_vma_flags(vma: VmArea, gup_flags: int) -> bool:
    """check_vma_flags(): a write needs VM_WRITE, or FOLL_FORCE on a COW mapping."""
    if gup_flags & FOLL_WRITE:
        if vma.vm_flags & VM_WRITE:
            return True
        return bool(gup_flags & FOLL_FORCE) and is_cow_mapping(vma.vm_flags)
    if vma.vm_flags & VM_READ:
        return True
    return bool(gup_flags & FOLL_FORCE and vma.vm_flags & VM_MAYREAD)


def follow_page_mask(k: Kernel, mm: MmStruct, addr: int, gup_flags: int) -> int | None:
    """follow_page_mask(): the page mapped at addr if the entry allows the access, else None."""
    entry = mm.pmds.get(pmd_index(addr))
    write = bool(gup_flags & FOLL_WRITE)
    if isinstance(entry, HugePmd):
        if (gup_flags & FOLL_NUMA and entry.protnone) or (write and not entry.write):
            return None
        if gup_flags & FOLL_TOUCH:
            entry.young = True
            entry.dirty |= write
        return entry.pfn + pte_index(addr)
    if entry is None:
        return None
    i = pte_index(addr)
    bits = int(entry.bits[i])
    if entry.pfn[i] < 0 or bits & PTE_MIGRATION:
        return None
    if (gup_flags & FOLL_NUMA and bits & PTE_PROTNONE) or (write and not bits & PTE_WRITE):
        return None
    if gup_flags & FOLL_TOUCH:
        entry.bits[i] = bits | PTE_YOUNG | (PTE_DIRTY if write else 0)
    return int(entry.pfn[i])


def get_user_pages(k: Kernel, mm: MmStruct, start: int, nr_pages: int, flags: int) -> list[int]:
    """__get_user_pages(): one reference per 4 KiB page; faults as a write when FOLL_WRITE.

    4.5 has no FOLL_COW: after a forced write fault on a read-only VMA returns VM_FAULT_WRITE,
    FOLL_WRITE is dropped and the page now mapped (the COW copy) is looked up as a read.
    """
    gup_flags = flags | FOLL_GET | FOLL_TOUCH
    if not gup_flags & FOLL_FORCE:
        gup_flags |= FOLL_NUMA
    pages: list[int] = []
    try:
        for n in range(nr_pages):
            addr = start + n * PAGE_SIZE
            vma = mm.find_vma(addr)
            if vma is None or not check_vma_flags(vma, gup_flags):
                raise SyscallError("EFAULT", f"get_user_pages: {addr:#x} cannot be accessed so")
            pfn = _faultin_and_follow(k, vma, addr, gup_flags)
            if not is_zero_pfn(k.frames, pfn):
                get_page(k.frames, pfn)
            pages.append(pfn)
    except SyscallError:
        release_pages(k, pages)  # the caller (ib_umem_get) drops a partial result
        raise
    return pages


def release_pages(k: Kernel, pages: list[int]) -> None:
    """put_page() on every page GUP returned (the zero pages are not counted)."""
    for pfn in pages:
        if not is_zero_pfn(k.frames, pfn):
            put_page(k, pfn)


def _faultin_and_follow(k: Kernel, vma: VmArea, addr: int, gup_flags: int) -> int:
    foll = gup_flags
    for _ in range(MAX_FAULT_RETRIES):
        pfn = follow_page_mask(k, vma.mm, addr, foll)
        if pfn is not None:
            return pfn
        ret = handle_mm_fault(k, vma, addr, write=bool(foll & FOLL_WRITE))  # faultin_page()
        if ret & VM_FAULT_SIGSEGV:
            raise SyscallError("EFAULT", f"get_user_pages: fault at {addr:#x} failed")
        if ret & VM_FAULT_WRITE and not vma.vm_flags & VM_WRITE:
            foll &= ~FOLL_WRITE
    raise SyscallError("EFAULT", f"get_user_pages: {addr:#x} did not settle after retries")
