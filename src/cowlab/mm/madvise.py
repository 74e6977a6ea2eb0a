"""mm/madvise.c: MADV_DONTNEED, MADV_DONTFORK/DOFORK and MADV_HUGEPAGE/NOHUGEPAGE (4.5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.errors import SyscallError
from cowlab.mm.constants import (
    MADV_COLLAPSE,
    MADV_DOFORK,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MADV_MERGEABLE,
    MADV_NOHUGEPAGE,
    MADV_UNMERGEABLE,
    VM_DONTCOPY,
    VM_HUGEPAGE,
    VM_NOHUGEPAGE,
)
from cowlab.mm.khugepaged import madvise_collapse
from cowlab.mm.ksm import ksm_madvise
from cowlab.mm.memory import zap_page_range
from cowlab.mm.mm_types import MmStruct
from cowlab.mm.mmap import check_range, has_holes, vma_modify_flags

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
    "mergeable": MADV_MERGEABLE,
    "unmergeable": MADV_UNMERGEABLE,
    "hugepage": MADV_HUGEPAGE,
    "nohugepage": MADV_NOHUGEPAGE,
    "wipeonfork": 18,
    "keeponfork": 19,
    "cold": 20,
    "pageout": 21,
    "populate_read": 22,
    "populate_write": 23,
    "collapse": MADV_COLLAPSE,
}
MODELLED = (
    "dontneed",
    "dontfork",
    "dofork",
    "hugepage",
    "nohugepage",
    "collapse",
    "mergeable",
    "unmergeable",
)
ADVICE = {name: MADV_BY_NAME[name] for name in MODELLED}

FLAG_CHANGES = {
    MADV_DONTFORK: (VM_DONTCOPY, 0),
    MADV_DOFORK: (0, VM_DONTCOPY),
    MADV_HUGEPAGE: (VM_HUGEPAGE, VM_NOHUGEPAGE),
    MADV_NOHUGEPAGE: (VM_NOHUGEPAGE, VM_HUGEPAGE),
}


def do_madvise(k: Kernel, mm: MmStruct, start: int, length: int, advice: int) -> None:
    """sys_madvise(): the advice on every VMA of the range; holes give ENOMEM afterwards."""
    end = check_range(start, length, "madvise")
    holes = has_holes(mm, start, end)  # before any split
    _advise(k, mm, start, end, advice)
    if holes:
        raise SyscallError("ENOMEM", f"madvise: [{start:#x}, {end:#x}) has unmapped pages")


def _advise(k: Kernel, mm: MmStruct, start: int, end: int, advice: int) -> None:
    """Flag advice splits and merges VMAs; DONTNEED zaps; COLLAPSE (6.1) and the KSM advice
    go to khugepaged and KSM."""
    if advice == MADV_COLLAPSE and k.policy.madv_collapse:
        return madvise_collapse(k, mm, start, end)
    if advice in (MADV_MERGEABLE, MADV_UNMERGEABLE):
        return ksm_madvise(k, mm, start, end, merge=advice == MADV_MERGEABLE)
    if advice != MADV_DONTNEED and advice not in FLAG_CHANGES:
        raise SyscallError("EINVAL", f"madvise: unsupported advice {advice}")
    if advice in (MADV_HUGEPAGE, MADV_NOHUGEPAGE) and not k.config.thp:
        # madvise_behavior_valid() knows these only with CONFIG_TRANSPARENT_HUGEPAGE
        raise SyscallError("EINVAL", "madvise: no THP advice without CONFIG_TRANSPARENT_HUGEPAGE")
    if advice == MADV_DONTNEED:
        for vma in mm.vmas_in(start, end):
            zap_page_range(k, vma, start, end)
        return None
    add, clear = FLAG_CHANGES[advice]
    vma_modify_flags(k, mm, start, end, lambda flags: (flags & ~clear) | add)
    return None
