"""mm/gup.c: get_user_pages() as 4.5 has it — FOLL_GET references, faulting in as needed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.errors import SyscallError
from cowlab.mm.constants import (
    FOLL_FORCE,
    FOLL_GET,
    FOLL_LONGTERM,
    FOLL_NUMA,
    FOLL_PIN,
    FOLL_TOUCH,
    FOLL_WRITE,
    PAGE_SIZE,
    VM_FAULT_SIGSEGV,
    VM_FAULT_WRITE,
    VM_MAYREAD,
    VM_READ,
    VM_WRITE,
    PG_dirty,
    PG_head,
)
from cowlab.mm.memory import handle_mm_fault
from cowlab.mm.mm import (
    GUP_PIN_COUNTING_BIAS,
    PageAnon,
    PageAnonExclusive,
    compound_head,
    get_page,
    is_zero_pfn,
    put_page,
)
from cowlab.mm.mm_types import MmStruct, VmArea, is_cow_mapping, pmd_index, pte_index
from cowlab.mm.pgtable import (
    PTE_MIGRATION,
    PTE_PROTNONE,
    PTE_SPECIAL,
    PTE_WRITE,
    PTE_YOUNG,
    HugePmd,
)

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
    """follow_page_mask(): the page mapped at addr if the entry allows the access, else None.

    FOLL_TOUCH: a PMD is made young and, for a write, dirty (touch_pmd); a PTE is not changed —
    follow_page_pte dirties the page (set_page_dirty) and marks it accessed, which the model
    keeps as the PTE's young bit (khugepaged counts either as referenced)."""
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
        entry.bits[i] = bits | PTE_YOUNG
        if write:
            k.frames.flags[int(entry.pfn[i])] |= PG_dirty
    return int(entry.pfn[i])


def get_user_pages(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, flags: int, fast: bool = False
) -> list[int]:
    """__get_user_pages() (or GUP-fast first): one reference or pin per 4 KiB page, faulting
    as a write when FOLL_WRITE.

    4.5 has no FOLL_COW: after a forced write fault on a read-only VMA returns VM_FAULT_WRITE,
    FOLL_WRITE is dropped and the page now mapped (the COW copy) is looked up as a read. 5.8
    faults every GUP on a COW mapping as a write (17839856fd58); 5.19 unshares a shared
    anonymous page before a read-only FOLL_PIN (FAULT_FLAG_UNSHARE).
    """
    gup_flags = effective_gup_flags(k, flags) | FOLL_TOUCH
    if not gup_flags & FOLL_FORCE:
        gup_flags |= FOLL_NUMA
    pages: list[int] = []
    try:
        for n in range(nr_pages):
            addr = start + n * PAGE_SIZE
            vma = mm.find_vma(addr)
            if vma is None or not check_vma_flags(vma, gup_flags):
                raise SyscallError("EFAULT", f"get_user_pages: {addr:#x} cannot be accessed so")
            pfn = gup_fast_one(k, vma, addr, gup_flags) if fast else None
            if pfn is None:
                pfn = _faultin_and_follow(k, vma, addr, gup_flags)
            try_grab_page(k, mm, pfn, gup_flags)
            pages.append(pfn)
    except SyscallError:
        release_pages(k, pages, gup_flags)  # the caller (ib_umem_get) drops a partial result
        raise
    return pages


def effective_gup_flags(k: Kernel, flags: int) -> int:
    """FOLL_GET unless a FOLL_PIN the generation knows (before 5.7 every caller took refs)."""
    if flags & FOLL_PIN and k.policy.foll_pin:
        return flags
    return (flags & ~(FOLL_PIN | FOLL_LONGTERM)) | FOLL_GET


def try_grab_page(k: Kernel, mm: MmStruct, pfn: int, gup_flags: int) -> None:
    """try_grab_page(): FOLL_GET is one reference; FOLL_PIN adds GUP_PIN_COUNTING_BIAS to a
    small page, or one reference and one _pincount to a large folio (5.7)."""
    f = k.frames
    if is_zero_pfn(f, pfn):
        return
    if not gup_flags & FOLL_PIN:
        get_page(f, pfn)
        return
    mm.has_pinned = True
    head = compound_head(f, pfn)
    if f.flags[head] & PG_head:
        get_page(f, head)
        f._pincount[head] += 1
    else:
        get_page(f, head, GUP_PIN_COUNTING_BIAS)


def release_pages(k: Kernel, pages: list[int], gup_flags: int) -> None:
    """put_page()/unpin_user_page() on every page GUP returned (zero pages are not counted)."""
    f = k.frames
    for pfn in pages:
        if is_zero_pfn(f, pfn):
            continue
        head = compound_head(f, pfn)
        if not gup_flags & FOLL_PIN:
            put_page(k, pfn)
        elif f.flags[head] & PG_head:
            f._pincount[head] -= 1
            put_page(k, head)
        else:
            put_page(k, head, GUP_PIN_COUNTING_BIAS)


def must_unshare(k: Kernel, vma: VmArea, addr: int, gup_flags: int) -> bool:
    """gup_must_unshare() (5.19): a R/O FOLL_PIN of a read-only mapped, not exclusive anon page."""
    if not (k.policy.gup_unshares_ro_pins and gup_flags & FOLL_PIN) or gup_flags & FOLL_WRITE:
        return False
    entry = vma.mm.pmds.get(pmd_index(addr))
    if isinstance(entry, HugePmd):
        if entry.write or entry.huge_zero:
            return False
        pfn = entry.pfn
    elif entry is not None and entry.pfn[pte_index(addr)] >= 0:
        i = pte_index(addr)
        if entry.bits[i] & (PTE_WRITE | PTE_SPECIAL):
            return False
        pfn = int(entry.pfn[i])
    else:
        return False
    f = k.frames
    return PageAnon(f, pfn) and not PageAnonExclusive(f, pfn)


def gup_fast_one(k: Kernel, vma: VmArea, addr: int, gup_flags: int) -> int | None:
    """The lockless GUP-fast walk: the page if no fault is needed, else None (slow GUP)."""
    foll = gup_flags | (FOLL_WRITE if k.policy.gup_breaks_cow_on_read else 0)
    if must_unshare(k, vma, addr, gup_flags):
        return None
    return follow_page_mask(k, vma.mm, addr, foll)


def _faultin_and_follow(k: Kernel, vma: VmArea, addr: int, gup_flags: int) -> int:
    foll = gup_flags
    if k.policy.gup_breaks_cow_on_read and is_cow_mapping(vma.vm_flags):
        foll |= FOLL_WRITE  # should_force_cow_break(): fault as a write even to read
    for _ in range(MAX_FAULT_RETRIES):
        pfn = None if must_unshare(k, vma, addr, foll) else follow_page_mask(k, vma.mm, addr, foll)
        if pfn is not None:
            return pfn
        unshare = must_unshare(k, vma, addr, foll)
        write = bool(foll & FOLL_WRITE) and not unshare
        ret = handle_mm_fault(k, vma, addr, write=write, unshare=unshare)  # faultin_page()
        if ret & VM_FAULT_SIGSEGV:
            raise SyscallError("EFAULT", f"get_user_pages: fault at {addr:#x} failed")
        if ret & VM_FAULT_WRITE and not vma.vm_flags & VM_WRITE:
            foll &= ~FOLL_WRITE
    raise SyscallError("EFAULT", f"get_user_pages: {addr:#x} did not settle after retries")
