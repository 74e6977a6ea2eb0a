"""mm/madvise.c: MADV_DONTNEED, MADV_DONTFORK/DOFORK and MADV_HUGEPAGE/NOHUGEPAGE (4.5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.errors import SyscallError
from cowlab.mm.constants import (
    MADV_DOFORK,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MADV_NOHUGEPAGE,
    VM_DONTCOPY,
    VM_HUGEPAGE,
    VM_NOHUGEPAGE,
)
from cowlab.mm.memory import zap_page_range
from cowlab.mm.mm_types import MmStruct
from cowlab.mm.mmap import check_range, vma_modify_flags

if TYPE_CHECKING:
    from cowlab.kernel import Kernel

# Advice values by name without MADV_ (include/uapi/asm-generic/mman-common.h): the live driver
# passes any of these to the running kernel; the model implements ADVICE, a subset.
MADV_BY_NAME = {
    "willneed": 3,
    "dontneed": MADV_DONTNEED,
    "free": 8,
    "dontfork": MADV_DONTFORK,
    "dofork": MADV_DOFORK,
    "mergeable": 12,
    "unmergeable": 13,
    "hugepage": MADV_HUGEPAGE,
    "nohugepage": MADV_NOHUGEPAGE,
    "wipeonfork": 18,
    "keeponfork": 19,
    "cold": 20,
    "pageout": 21,
    "populate_read": 22,
    "populate_write": 23,
    "collapse": 25,
}
MODELLED = ("dontneed", "dontfork", "dofork", "hugepage", "nohugepage")
ADVICE = {name: MADV_BY_NAME[name] for name in MODELLED}

FLAG_CHANGES = {
    MADV_DONTFORK: (VM_DONTCOPY, 0),
    MADV_DOFORK: (0, VM_DONTCOPY),
    MADV_HUGEPAGE: (VM_HUGEPAGE, VM_NOHUGEPAGE),
    MADV_NOHUGEPAGE: (VM_NOHUGEPAGE, VM_HUGEPAGE),
}


def do_madvise(k: Kernel, mm: MmStruct, start: int, length: int, advice: int) -> None:
    """sys_madvise(): flag advice splits and merges VMAs; DONTNEED zaps; holes give ENOMEM."""
    end = check_range(start, length, "madvise")
    if advice != MADV_DONTNEED and advice not in FLAG_CHANGES:
        raise SyscallError("EINVAL", f"madvise: unsupported advice {advice}")
    if advice in (MADV_HUGEPAGE, MADV_NOHUGEPAGE) and not k.config.thp:
        # madvise_behavior_valid() knows these only with CONFIG_TRANSPARENT_HUGEPAGE
        raise SyscallError("EINVAL", "madvise: no THP advice without CONFIG_TRANSPARENT_HUGEPAGE")
    vmas = mm.vmas_in(start, end)
    covered = sum(min(v.vm_end, end) - max(v.vm_start, start) for v in vmas)  # before splits
    if advice == MADV_DONTNEED:
        for vma in vmas:
            zap_page_range(k, vma, start, end)
    else:
        add, clear = FLAG_CHANGES[advice]
        vma_modify_flags(k, mm, start, end, lambda flags: (flags & ~clear) | add)
    if covered != end - start:
        raise SyscallError("ENOMEM", f"madvise: [{start:#x}, {end:#x}) has unmapped pages")
