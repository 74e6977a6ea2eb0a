"""mm/khugepaged.c: collapsing the 512 PTEs of a 2 MiB block into a new THP — khugepaged's full
scan and MADV_COLLAPSE (6.1) — with the checks of each generation (docs/sources-khugepaged.md).

hpage_collapse_scan_pmd() checks the PTEs; collapse_huge_page() swaps in what is swapped out,
re-checks (__collapse_huge_page_isolate), copies every page into a new THP, drops this mm's
mappings of the old pages and installs a dirty PMD, writable iff the VMA is. The model is
sequential, so the scan and the isolate pass see the same pages except those swapped in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cowlab.errors import SyscallError
from cowlab.mm.constants import (
    HPAGE_PMD_NR,
    HPAGE_PMD_SIZE,
    PAGE_SHIFT,
    VM_HUGEPAGE,
    VM_NOHUGEPAGE,
    VM_WRITE,
)
from cowlab.mm.memory import handle_mm_fault
from cowlab.mm.mm import PageAnon, PageSwapCache, put_page
from cowlab.mm.mm_types import MmStruct, VmArea, pmd_index
from cowlab.mm.pgtable import (
    PTE_NONE,
    PTE_SPECIAL,
    PTE_WRITE,
    PTE_YOUNG,
    HugePmd,
    PteTable,
    is_swap_pte,
)
from cowlab.mm.rmap import page_add_new_anon_rmap, page_remove_rmap
from cowlab.mm.swapfile import reuse_swap_page, try_to_free_swap

if TYPE_CHECKING:
    from cowlab.kernel import Kernel

SUCCEED = "SCAN_SUCCEED"
PMD_MAPPED = "SCAN_PMD_MAPPED"
# MADV_COLLAPSE goes on to the next block after these; any other failure stops it
CONTINUE = frozenset(
    {
        "SCAN_PMD_NULL",
        "SCAN_PTE_NON_PRESENT",
        "SCAN_PAGE_RO",
        "SCAN_LACK_REFERENCED_PAGE",
        "SCAN_PAGE_NULL",
        "SCAN_PAGE_COUNT",
        "SCAN_PAGE_LOCK",
        "SCAN_PAGE_COMPOUND",
        "SCAN_PAGE_LRU",
        "SCAN_DEL_PAGE_LRU",
    }
)
EAGAIN_CODES = frozenset(
    {"SCAN_PAGE_COUNT", "SCAN_PAGE_LOCK", "SCAN_PAGE_LRU", "SCAN_DEL_PAGE_LRU"}
)


@dataclass
class Scan:
    """What hpage_collapse_scan_pmd() found in one block."""

    code: str = SUCCEED
    none: int = 0
    swapped: int = 0
    shared: int = 0
    referenced: int = 0
    writable: bool = False
    why: str = ""


def max_ptes(k: Kernel, name: str, khugepaged: bool) -> int:
    """A khugepaged sysfs limit; MADV_COLLAPSE ignores them (6.1: cc->is_khugepaged)."""
    return int(getattr(k, name)) if khugepaged else HPAGE_PMD_NR


def hpage_collapse_scan_pmd(k: Kernel, table: PteTable, khugepaged: bool) -> Scan:
    """khugepaged_scan_pmd() / hpage_collapse_scan_pmd(): the per-PTE checks of the generation."""
    s = Scan()
    policy = k.policy
    for i in range(HPAGE_PMD_NR):
        value, bits = int(table.pfn[i]), int(table.bits[i])
        if value == PTE_NONE or bits & PTE_SPECIAL:
            s.none += 1
            if s.none > max_ptes(k, "max_ptes_none", khugepaged):
                return _fail(s, "SCAN_EXCEED_NONE_PTE", f"{s.none} none or zero-page PTEs")
            continue
        if is_swap_pte(value):
            if not policy.collapse_swaps_in:
                return _fail(s, "SCAN_PTE_NON_PRESENT", "a swap PTE (no swap-in before 4.8)")
            s.swapped += 1
            if s.swapped > max_ptes(k, "max_ptes_swap", khugepaged):
                return _fail(s, "SCAN_EXCEED_SWAP_PTE", f"{s.swapped} swap PTEs")
            continue
        s.writable |= bool(bits & PTE_WRITE)
        s.referenced += bool(bits & PTE_YOUNG)
        if _page_check(k, s, value, khugepaged) != SUCCEED:
            return s
    if policy.collapse_needs_writable and not s.writable:
        return _fail(s, "SCAN_PAGE_RO", "no writable PTE")
    if khugepaged and not policy.collapse_referenced_ok(s.referenced, s.swapped):
        return _fail(s, "SCAN_LACK_REFERENCED_PAGE", f"{s.referenced} young PTEs")
    return s


def _fail(s: Scan, code: str, why: str) -> Scan:
    s.code, s.why = code, why
    return s


def _page_check(k: Kernel, s: Scan, pfn: int, khugepaged: bool) -> str:
    """The checks on one mapped page: anonymous, compound (4.5–5.7 refuse it), shared (5.8+:
    counted against max_ptes_shared), and no reference beyond the expected ones (pins)."""
    f = k.frames
    policy = k.policy
    if not PageAnon(f, pfn):
        return _fail(s, "SCAN_PAGE_ANON", f"pfn {pfn:#x} is not anonymous").code
    if f.order[pfn] and not policy.collapse_pte_mapped_thp:
        return _fail(s, "SCAN_PAGE_COMPOUND", f"pfn {pfn:#x} is part of a THP").code
    if policy.collapse_counts_shared and policy.collapse_page_shared(k, pfn):
        s.shared += 1
        if s.shared > max_ptes(k, "max_ptes_shared", khugepaged):
            return _fail(s, "SCAN_EXCEED_SHARED_PTE", f"{s.shared} shared pages").code
    ok, why = policy.collapse_refcount_ok(k, pfn)
    if not ok:
        return _fail(s, "SCAN_PAGE_COUNT", why).code
    return SUCCEED


def collapse_huge_page(k: Kernel, vma: VmArea, haddr: int, khugepaged: bool) -> str:
    """collapse_huge_page(): swap in, re-check, copy into a new THP, map it by one PMD."""
    mm = vma.mm
    idx = pmd_index(haddr)
    if k.thp_alloc_fail:
        return "SCAN_ALLOC_HUGE_PAGE_FAIL"
    _swapin(k, vma, haddr)
    table = mm.pmds[idx]
    assert isinstance(table, PteTable)
    s = hpage_collapse_scan_pmd(k, table, khugepaged)
    if s.code == SUCCEED:
        s.code = _isolate_swapcache(k, table)
    if s.code != SUCCEED:
        return s.code
    head = k.frames.alloc_hugepage()
    _copy_and_release(k, mm, table, head)
    mm.pmds[idx] = HugePmd(head, write=bool(vma.vm_flags & VM_WRITE), dirty=True)
    page_add_new_anon_rmap(k, head, vma, haddr, compound=True)
    k.vmstat["thp_collapse_alloc"] += 1
    k.event("collapse_huge_page", addr=haddr, pfn=head, detail="512 PTEs copied into a new THP")
    return SUCCEED


def _swapin(k: Kernel, vma: VmArea, haddr: int) -> None:
    """__collapse_huge_page_swapin(): every swap PTE is faulted in as a read (a swap-in cannot
    fail in the model, so SCAN_FAIL never arises)."""
    table = vma.mm.pmds[pmd_index(haddr)]
    assert isinstance(table, PteTable)
    for i in range(HPAGE_PMD_NR):
        if is_swap_pte(int(table.pfn[i])):
            handle_mm_fault(k, vma, haddr + (i << PAGE_SHIFT), write=False)


def _isolate_swapcache(k: Kernel, table: PteTable) -> str:
    """__collapse_huge_page_isolate() up to 5.17: a read-only PTE of a swap-cache page must pass
    reuse_swap_page() (which drops the swap-cache copy when it is all ours)."""
    if not k.policy.collapse_checks_swapcache:
        return SUCCEED
    f = k.frames
    for i in range(HPAGE_PMD_NR):
        pfn = int(table.pfn[i])
        if pfn < 0 or table.bits[i] & (PTE_SPECIAL | PTE_WRITE) or not PageSwapCache(f, pfn):
            continue
        d = reuse_swap_page(k, pfn, k.policy.reuse_mapcount)
        if not d.reuse:
            rule = f"a read-only swap-cache page must pass reuse_swap_page(): {d.rule}"
            k.event(
                "__collapse_huge_page_isolate",
                "SCAN_SWAP_CACHE_PAGE",
                pfn=pfn,
                read=d.read,
                rule=rule,
            )
            return "SCAN_SWAP_CACHE_PAGE"
    return SUCCEED


def _copy_and_release(k: Kernel, mm: MmStruct, table: PteTable, head: int) -> None:
    """__collapse_huge_page_copy(): each page's bytes into the new THP (none and zero-page PTEs
    give zeros); this mm's mapping of each old page goes (free_page_and_swap_cache)."""
    f = k.frames
    present = 0
    for i in range(HPAGE_PMD_NR):
        pfn = int(table.pfn[i])
        if pfn < 0 or table.bits[i] & PTE_SPECIAL:
            continue
        f.copy_page(head + i, pfn)
        page_remove_rmap(k, mm, pfn, compound=False)
        present += 1
        if PageSwapCache(f, pfn) and f._mapcount[pfn] < 0:
            try_to_free_swap(k, pfn)
        put_page(k, pfn)
    mm.anon_rss += HPAGE_PMD_NR - present


def hugepage_vma_check(k: Kernel, vma: VmArea, khugepaged: bool) -> str | None:
    """hugepage_vma_check(): why the VMA may not be collapsed, or None. khugepaged needs THP
    wanted by sysfs (always, or madvise + VM_HUGEPAGE); MADV_COLLAPSE ignores sysfs (6.1)."""
    if not k.config.thp:
        return "no CONFIG_TRANSPARENT_HUGEPAGE"
    if vma.vm_flags & VM_NOHUGEPAGE:
        return "VM_NOHUGEPAGE"
    if khugepaged:
        mode = k.thp_enabled
        if mode == "never" or (mode == "madvise" and not vma.vm_flags & VM_HUGEPAGE):
            return f"transparent_hugepage/enabled is {mode}"
    if vma.anon_vma is None:
        return "no anon_vma (never faulted)"
    if not blocks(vma, vma.vm_start, vma.vm_end):
        return "no PMD-aligned 2 MiB block in the VMA"
    return None


def blocks(vma: VmArea, start: int, end: int) -> list[int]:
    """The PMD-aligned 2 MiB blocks wholly inside both the VMA and [start, end)."""
    lo = max(start, vma.vm_start)
    lo = -(-lo // HPAGE_PMD_SIZE) * HPAGE_PMD_SIZE
    hi = min(end, vma.vm_end) // HPAGE_PMD_SIZE * HPAGE_PMD_SIZE
    return list(range(lo, hi, HPAGE_PMD_SIZE))


def collapse_block(k: Kernel, vma: VmArea, haddr: int, khugepaged: bool) -> str:
    """One block: the PMD's state, the scan, the collapse; the verdict is recorded."""
    entry = vma.mm.pmds.get(pmd_index(haddr))
    if isinstance(entry, HugePmd):
        code, why = PMD_MAPPED, "already PMD-mapped"
    elif entry is None:
        code, why = k.policy.collapse_no_table_code, "no page table"
    else:
        s = hpage_collapse_scan_pmd(k, entry, khugepaged)
        code, why = s.code, s.why
        if code == SUCCEED:
            code = collapse_huge_page(k, vma, haddr, khugepaged)
    function = "khugepaged_scan_pmd" if khugepaged else "madvise_collapse"
    k.event(function, code, addr=haddr, rule=why)
    return code


def khugepaged_scan(k: Kernel) -> int:
    """One full khugepaged pass: every process by pid, every VMA it may collapse, every block."""
    procs = sorted(k.processes.values(), key=lambda p: p.pid)
    return sum(len(khugepaged_scan_mm(k, p.mm)) for p in procs)


def khugepaged_scan_mm(k: Kernel, mm: MmStruct) -> list[int]:
    """khugepaged_scan_mm_slot() over one whole mm: the blocks it collapsed."""
    collapsed = []
    for vma in list(mm.vmas):
        if vma not in mm.vmas or hugepage_vma_check(k, vma, khugepaged=True):
            continue
        for haddr in blocks(vma, vma.vm_start, vma.vm_end):
            if collapse_block(k, vma, haddr, khugepaged=True) == SUCCEED:
                collapsed.append(haddr)
    return collapsed


def madvise_collapse(k: Kernel, mm: MmStruct, start: int, end: int) -> None:
    """MADV_COLLAPSE (6.1, 7d8faaf15545): collapse every aligned block of the range; 0 iff each
    succeeded or was already PMD-mapped, else the errno of the last failure."""
    for vma in mm.vmas_in(start, end):  # madvise_walk_vmas(): the first VMA's error returns
        _collapse_vma(k, vma, start, end)


def _collapse_vma(k: Kernel, vma: VmArea, start: int, end: int) -> None:
    """madvise_collapse() on one VMA's part of the range."""
    problem = hugepage_vma_check(k, vma, khugepaged=False)
    if problem:
        raise SyscallError("EINVAL", f"madvise(MADV_COLLAPSE): {problem}")
    lo, hi = max(start, vma.vm_start), min(end, vma.vm_end)
    if -(-lo // HPAGE_PMD_SIZE) > hi // HPAGE_PMD_SIZE:
        # the range lies inside one block, off its start: madvise_collapse's unsigned count of
        # blocks (hend - hstart) wraps and the call fails as SCAN_FAIL
        raise SyscallError("EINVAL", "madvise(MADV_COLLAPSE): SCAN_FAIL (no whole block)")
    last = None
    for haddr in blocks(vma, start, end):
        code = collapse_block(k, vma, haddr, khugepaged=False)
        if code in (SUCCEED, PMD_MAPPED):
            continue
        last = code
        if code not in CONTINUE:
            break
    if last is not None:
        errno = "EAGAIN" if last in EAGAIN_CODES else k.policy.collapse_errno(last)
        raise SyscallError(errno, f"madvise(MADV_COLLAPSE): {last}")
