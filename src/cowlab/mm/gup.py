"""mm/gup.c: get_user_pages() as 4.5 has it — FOLL_GET references, faulting in as needed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from cowlab.errors import SyscallError
from cowlab.mm.constants import (
    FOLL_FORCE,
    FOLL_GET,
    FOLL_LONGTERM,
    FOLL_NUMA,
    FOLL_PIN,
    FOLL_TOUCH,
    FOLL_WRITE,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SHIFT,
    VM_FAULT_SIGSEGV,
    VM_FAULT_WRITE,
    VM_MAYREAD,
    VM_READ,
    VM_WRITE,
    PG_anon_exclusive,
    PG_dirty,
    PG_head,
    PG_ksm,
    PG_reserved,
)
from cowlab.mm.decision import Reads, WpDecision
from cowlab.mm.memory import handle_mm_fault, trace_copied, trace_fault, wp_reuse_anon
from cowlab.mm.mm import (
    GUP_PIN_COUNTING_BIAS,
    Field,
    PageAnon,
    PageAnonExclusive,
    compound_head,
    get_page,
    heads_of,
    is_zero_pfn,
    put_page,
    put_pages,
)
from cowlab.mm.mm_types import MmStruct, VmArea, is_cow_mapping, pmd_index, pte_index
from cowlab.mm.page_alloc import PageFrames
from cowlab.mm.pgtable import (
    PTE_MIGRATION,
    PTE_PROTNONE,
    PTE_SOFT_DIRTY,
    PTE_SPECIAL,
    PTE_WRITE,
    PTE_YOUNG,
    HugePmd,
    PteTable,
)
from cowlab.mm.range_fault import _leading, fault_in_range, large_copies_settled
from cowlab.mm.rmap import anon_vma_prepare, page_remove_rmap, pages_add_new_anon_rmap
from cowlab.mm.trace import CowCopies, Decisions, Packed

Ints = npt.NDArray[np.int64]
NO_PAGES: Ints = np.zeros(0, dtype=np.int64)
NO_UNSHARE: tuple[bool, Reads, str] = (False, (), "")

if TYPE_CHECKING:
    from cowlab.kernel import Kernel

MAX_FAULT_RETRIES = 8
# PTE bits that keep a page from the unshare range path (the page-by-page path handles them)
RUN_BLOCKED = PTE_PROTNONE | PTE_MIGRATION
ANON_RULE = "PageAnon: !PageAnonExclusive"
Bools = npt.NDArray[np.bool_]


def check_vma_flags(vma: VmArea, gup_flags: int) -> bool:
    """check_vma_flags(): a write needs VM_WRITE, or FOLL_FORCE on a COW mapping."""
    if gup_flags & FOLL_WRITE:
        if vma.vm_flags & VM_WRITE:
            return True
        return bool(gup_flags & FOLL_FORCE) and is_cow_mapping(vma.vm_flags)
    if vma.vm_flags & VM_READ:
        return True
    return bool(gup_flags & FOLL_FORCE and vma.vm_flags & VM_MAYREAD)


def pte_follows(pfn: Field, bits: Field, foll: int) -> Field:
    """follow_page_pte() (4.5): does GUP take the page a PTE maps without a fault? A present
    entry, not a migration entry, not a NUMA hint under FOLL_NUMA, writable for FOLL_WRITE. The
    one statement, of one PTE's values (follow_page_mask) or a run's (arrays: follow_range)."""
    write = PTE_WRITE if foll & FOLL_WRITE else 0
    blocked = PTE_MIGRATION | (PTE_PROTNONE if foll & FOLL_NUMA else 0) | write
    return (pfn >= 0) & ((bits & blocked) == write)


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
    pfn = entry.pfn.item(i)
    bits = entry.bits.item(i)
    if not pte_follows(pfn, bits, gup_flags):
        return None
    if gup_flags & FOLL_TOUCH:
        entry.bits[i] = bits | PTE_YOUNG
        if write:
            k.frames.flags[pfn] |= PG_dirty
    return pfn


def get_user_pages(
    k: Kernel, mm: MmStruct, start: int, nr_pages: int, flags: int, fast: bool = False
) -> Ints:
    """__get_user_pages() (or GUP-fast first): one reference or pin per 4 KiB page, faulting
    as a write when FOLL_WRITE.

    4.5 has no FOLL_COW: after a forced write fault on a read-only VMA returns VM_FAULT_WRITE,
    FOLL_WRITE is dropped and the page now mapped (the COW copy) is looked up as a read. 5.8
    faults every GUP on a COW mapping as a write (17839856fd58); 5.19 unshares a shared
    anonymous page before a read-only FOLL_PIN (FAULT_FLAG_UNSHARE), 6.2 the zero page before a
    read-only long-term one.
    """
    gup_flags = effective_gup_flags(k, flags) | FOLL_TOUCH
    if not gup_flags & FOLL_FORCE:
        gup_flags |= FOLL_NUMA
    pages = np.empty(nr_pages, dtype=np.int64)
    got = 0
    batch = k.range_ops and not must_unshare_any(k, gup_flags)
    # CONFIG_DEBUG_VM's VM_BUG_ONs could stop a run halfway: those runs go page by page
    unshares = k.range_ops and not batch and not k.config.debug_vm
    try:
        while got < nr_pages:
            addr = start + got * PAGE_SIZE
            vma = mm.find_vma(addr)
            if vma is None or not check_vma_flags(vma, gup_flags):
                raise SyscallError("EFAULT", f"get_user_pages: {addr:#x} cannot be accessed so")
            end = min(start + nr_pages * PAGE_SIZE, vma.vm_end)
            if batch:
                run = _gup_run(k, vma, addr, end, gup_flags, fast)
            else:
                run = _ro_pin_run(k, vma, addr, end, gup_flags, fast) if unshares else NO_PAGES
            if run.size:
                try_grab_pages(k, mm, run, gup_flags)
                pages[got : got + run.size] = run
                got += run.size
                continue
            pfn = gup_fast_one(k, vma, addr, gup_flags) if fast else None
            if pfn is None:
                pfn = _faultin_and_follow(k, vma, addr, gup_flags)
            try_grab_page(k, mm, pfn, gup_flags)
            pages[got] = pfn
            got += 1
    except SyscallError:
        release_pages(k, pages[:got], gup_flags)  # ib_umem_get drops a partial result
        raise
    return pages


def _gup_run(k: Kernel, vma: VmArea, addr: int, end: int, gup_flags: int, fast: bool) -> Ints:
    """The pages from addr on that follow without a fault; when addr's page needs one (no
    FOLL_FORCE), faultin_page() for the run it starts, then those pages followed. GUP-fast
    gives up on a page that needs a fault without changing anything and slow GUP faults it
    in, so when both ask for the same entry the run is slow GUP's."""
    slow = _slow_flags(k, vma, gup_flags)
    foll = _fast_flags(k, gup_flags) if fast else slow
    run = follow_range(k, vma, addr, end, foll)
    if run.size or foll != slow or gup_flags & FOLL_FORCE:
        return run
    if fault_in_range(k, vma.mm, addr, end, bool(slow & FOLL_WRITE), small_only=True).size:
        return follow_range(k, vma, addr, end, slow)
    return NO_PAGES


def _ro_pin_run(k: Kernel, vma: VmArea, addr: int, end: int, gup_flags: int, fast: bool) -> Ints:
    """A R/O FOLL_PIN (5.19+): the run of unshare faults addr starts (_unshare_run), else the
    pages from addr on that gup_must_unshare() leaves alone and GUP follows without a fault;
    when addr's PTE is none or swapped out, the read faults of the run it starts first
    (_faults_as_run). Empty when addr's page needs the page-by-page path."""
    run = _unshare_run(k, vma, addr, end, gup_flags)
    if run.size or not _faults_as_run(k, vma, addr, gup_flags, fast):
        return run if run.size else _kept_run(k, vma, addr, end, gup_flags, fast)
    if not fault_in_range(k, vma.mm, addr, end, False, small_only=True).size:
        return NO_PAGES
    run = _unshare_run(k, vma, addr, end, gup_flags)
    return run if run.size else _kept_run(k, vma, addr, end, gup_flags, fast)


def _faults_as_run(k: Kernel, vma: VmArea, addr: int, gup_flags: int, fast: bool) -> bool:
    """May the read faults faultin_page() takes for a R/O pin's pages from addr (a none or swap
    PTE there) be taken as one run before their unshares and grabs? No page's read fault reads
    what another's unshare or pin changes (its own fields and slot; only the copies allocate),
    so only the trace's order would differ: not when tracing. GUP-fast must then find each
    faulted page as slow GUP would, FOLL_FORCE's reach is left to the page-by-page path."""
    if k.tracing or gup_flags & FOLL_FORCE:
        return False
    if fast and _fast_flags(k, gup_flags) != _slow_flags(k, vma, gup_flags):
        return False
    entry = vma.mm.pmds.get(pmd_index(addr))
    return isinstance(entry, PteTable) and entry.pfn.item(pte_index(addr)) < 0


def _kept_run(k: Kernel, vma: VmArea, addr: int, end: int, gup_flags: int, fast: bool) -> Ints:
    """The pages from addr on that gup_must_unshare() leaves alone and GUP-fast or slow GUP
    follows without a fault, as page by page."""
    end = _kept_end(k, vma, addr, end, gup_flags)
    if end == addr:
        return NO_PAGES
    slow = _slow_flags(k, vma, gup_flags)
    if fast:
        fast_flags = _fast_flags(k, gup_flags)
        run = follow_range(k, vma, addr, end, fast_flags)
        # a page GUP-fast misses is followed by slow GUP: the same answer when the flags agree
        if run.size or fast_flags != slow:
            return run
    return follow_range(k, vma, addr, end, slow)


def _kept_end(k: Kernel, vma: VmArea, addr: int, end: int, gup_flags: int) -> int:
    """Where the run of pages from addr (in addr's PMD) that gup_must_unshare() leaves alone
    ends: its one statement (page_unshares) asked of the whole run."""
    entry = vma.mm.pmds.get(pmd_index(addr))
    if isinstance(entry, HugePmd):  # one answer for every page the PMD maps
        return addr if must_unshare(k, vma, addr, gup_flags) else end
    first = pte_index(addr)
    if entry is None or entry.pfn.item(first) < 0:  # none or swap: told without arrays
        return addr
    last = pte_index(min(end, (pmd_index(addr) + 1) << PMD_SHIFT) - 1) + 1
    pfn, bits = entry.pfn[first:last], entry.bits[first:last]
    n = _leading(pfn >= 0)
    writable, anon, exclusive = _unshare_reads(k.frames, pfn[:n], bits[:n])
    non_anon = k.policy.gup_unshares_non_anon(k, vma, gup_flags)[0]
    kept = writable | ~page_unshares(anon, exclusive, non_anon)
    return addr + _leading(kept) * PAGE_SIZE


def _unshare_reads(
    f: PageFrames, pages: Ints, bits: npt.NDArray[np.uint8]
) -> tuple[Bools, Bools, Bools]:
    """What gup_must_unshare() and its caller read of each of a run of present PTEs and their
    pages: the write bit, PageAnon (not special, the head's anon_vma), PageAnonExclusive."""
    anon = ((bits & PTE_SPECIAL) == 0) & (f.mapping[heads_of(f, pages)] != 0)
    return (bits & PTE_WRITE) != 0, anon, (f.flags[pages] & PG_anon_exclusive) != 0


def _unshare_run(k: Kernel, vma: VmArea, addr: int, end: int, gup_flags: int) -> Ints:
    """A R/O FOLL_PIN (5.19+) at an anonymous page mapped read-only and not exclusive: the
    unshare faults of the run of such pages it starts (_unshare_faults), then those pages
    followed; empty otherwise (the page-by-page path). GUP-fast gives up on each of them
    (gup_must_unshare) without changing anything."""
    entry = vma.mm.pmds.get(pmd_index(addr))
    if not isinstance(entry, PteTable):
        return NO_PAGES
    first = pte_index(addr)
    if entry.pfn.item(first) < 0 or entry.bits.item(first) & RUN_BLOCKED:
        return NO_PAGES
    if not must_unshare(k, vma, addr, gup_flags):
        return NO_PAGES  # the common miss, told without arrays
    last = pte_index(min(end, (pmd_index(addr) + 1) << PMD_SHIFT) - 1) + 1
    non_anon = k.policy.gup_unshares_non_anon(k, vma, gup_flags)[0]
    pages = _shared_anon_run(k.frames, entry, first, last, non_anon)
    if not pages.size:
        return NO_PAGES
    foll = _slow_flags(k, vma, gup_flags)
    if foll & FOLL_WRITE:  # a COW break by a write fault: gup_must_unshare does not apply
        return NO_PAGES
    n = _unshare_faults(k, vma, entry, addr, foll, pages)
    return follow_range(k, vma, addr, addr + n * PAGE_SIZE, foll)


def _shared_anon_run(f: PageFrames, table: PteTable, first: int, last: int, non_anon: bool) -> Ints:
    """The pages from PTE ``first`` on that gup_must_unshare() unshares (page_unshares) and
    do_wp_page() hands to wp_reuse: present PTEs, not NUMA-hinting or migrating, of anonymous
    pages outside KSM. non_anon: the policy's gup_unshares_non_anon verdict."""
    pfn, bits = table.pfn[first:last], table.bits[first:last]
    pages = pfn[: _leading((pfn >= 0) & ((bits & RUN_BLOCKED) == 0))]
    bits = bits[: pages.size]
    writable, anon, exclusive = _unshare_reads(f, pages, bits)
    ksm = (f.flags[heads_of(f, pages)] & PG_ksm) != 0
    takes = ~writable & page_unshares(anon, exclusive, non_anon) & anon & ~ksm
    return pages[: _leading(takes)].copy()


def _unshare_faults(
    k: Kernel, vma: VmArea, table: PteTable, addr: int, foll: int, pages: Ints
) -> int:
    """handle_mm_fault(FAULT_FLAG_UNSHARE) -> do_wp_page() (5.19, c89357e27f20) for each page
    in turn, as GUP faults them one after another: wp_reuse decides every page, and a copied
    page loses its mapping and reference before the next is asked (a large folio's counters
    change); 6.15+ untraced, a large folio's pages as range_fault.large_copies_settled decides
    them at once where it can (do_wp_page's verdicts, as for a write). The run ends after a
    reuse of a large folio's page (its pin would count in the next verdict; a small page's
    reads only that page's fields) or after a copy that drops the last reference (the freed
    frame would be the next allocation). The copies are filled and mapped together after;
    returns how many pages were settled."""
    f = k.frames
    wp_reuse = k.policy.wp_reuse
    in_bulk = k.policy.large_reuse_reads_folio and not k.tracing
    heads = heads_of(f, pages)
    offs: list[int] = []
    olds: list[int] = []
    news: list[int] = []
    decisions: list[WpDecision | Decisions] = []  # a page's, or a bulk run's
    last_ref = None
    n = 0
    while n < pages.size:
        pfn, head = pages.item(n), heads.item(n)
        bulk = in_bulk and f.flags.item(head) & PG_head
        settled = large_copies_settled(k, vma, pages[n:], heads[n:]) if bulk else None
        if settled is not None:
            d, values = settled
            anon_vma_prepare(k, vma)
            offs += range(n, n + len(values))
            olds += pages[n : n + len(values)].tolist()
            news += f.alloc_pages(len(values)).tolist()
            decisions.append(Decisions.of_values(d, values))
            n += len(values)
            continue
        at = addr + n * PAGE_SIZE
        n += 1
        if k.tracing:
            _, read, rule = unshare_decision(k, vma, at, foll)
            k.event("gup_must_unshare", "unshare", addr=at, read=read, rule=rule)
            trace_fault(k, vma, at, "unshare")
        d = wp_reuse(k, vma, pfn)
        if d.reuse:
            assert d.set_exclusive  # 5.19+: a reused page that was not exclusive becomes so
            wp_reuse_anon(k, vma, at, pfn, d)
            if reuse_ends_run(f, head):
                break
            continue
        if k.tracing:
            k.event("do_wp_page", "copy", addr=at, pfn=pfn, read=d.read, rule=d.rule)
        anon_vma_prepare(k, vma)
        offs.append(n - 1)
        olds.append(pfn)
        news.append(f.alloc_page())
        decisions.append(d)
        if f._count.item(head) <= 1:  # put_page() frees it: after its bytes are copied
            last_ref = pfn
            break
        page_remove_rmap(k, vma.mm, pfn, compound=False)
        f._count[head] -= 1  # put_page(), not the last reference (alloc_page may grow _count)
        if k.tracing:
            trace_copied(k, at, pfn, news[-1])
    _unshare_copies(k, vma, table, addr, offs, olds, news, decisions)
    if last_ref is not None:
        page_remove_rmap(k, vma.mm, last_ref, compound=False)
        put_page(k, last_ref)
        if k.tracing:
            trace_copied(k, addr + (n - 1) * PAGE_SIZE, last_ref, news[-1])
    k.vmstat["pgfault"] += n
    return n


def reuse_ends_run(f: PageFrames, head: int) -> bool:
    """After an unshare reused a page: does the run stop? For a large folio's page (the pin GUP
    takes on it counts in the folio's next verdict, 5.19 wp_reuse), not for a small page."""
    return bool(f.flags.item(head) & PG_head)


def _unshare_copies(
    k: Kernel,
    vma: VmArea,
    table: PteTable,
    addr: int,
    offs: list[int],
    olds: list[int],
    news: list[int],
    decisions: list[WpDecision | Decisions],
) -> None:
    """wp_page_copy() of an unshare for the pages offs pages from addr, together: each new page
    holds its old page's bytes, mapped from vm_page_prot alone (read-only, clean, soft-dirty
    as the old PTE was), and is logged as the copy the decision made."""
    if not news:
        return
    olds_a, news_a = np.array(olds, dtype=np.int64), np.array(news, dtype=np.int64)
    k.frames.copy_pages(news_a, olds_a)
    offs_a = np.array(offs, dtype=np.int64)
    at = pte_index(addr) + offs_a
    table.pfn[at] = news_a
    table.bits[at] &= PTE_SOFT_DIRTY
    which = np.arange(news_a.size, dtype=np.int64)
    addrs = addr + (offs_a << PAGE_SHIFT)
    pages_add_new_anon_rmap(k, news_a, vma, addrs)
    copies = CowCopies(
        len(k.history),
        k.current_op(),
        "wp_page_copy",
        vma.mm.pid,
        Packed(addrs),
        Packed(olds_a),
        Packed(news_a),
        _logged(decisions),
        Packed(which),
    )
    k.cow_log.extend_copies(copies)


def _logged(decisions: list[WpDecision | Decisions]) -> Decisions:
    """The copies' decisions as the COW log keeps them: a bulk run alone as it came (its
    template and values, made into no WpDecision a row), else every copy's in turn."""
    if len(decisions) == 1 and isinstance(decisions[0], Decisions):
        return decisions[0]
    each = [d for part in decisions for d in (part[:] if isinstance(part, Decisions) else [part])]
    return Decisions(each)


def follow_range(k: Kernel, vma: VmArea, addr: int, end: int, foll: int) -> Ints:
    """follow_page_mask() for the pages from addr (below end, in addr's PMD) that need no
    fault, as the range path takes them; empty when addr's page needs one."""
    mm = vma.mm
    idx = pmd_index(addr)
    first = pte_index(addr)
    last = pte_index(min(end, (idx + 1) << PMD_SHIFT) - 1) + 1
    entry = mm.pmds.get(idx)
    if isinstance(entry, HugePmd):
        return (
            NO_PAGES
            if follow_page_mask(k, mm, addr, foll) is None
            else entry.pfn + np.arange(first, last, dtype=np.int64)
        )
    if entry is None or entry.pfn.item(first) < 0:  # the common miss, told without arrays
        return NO_PAGES
    pfn = entry.pfn[first:last]
    n = _leading(pte_follows(pfn, entry.bits[first:last], foll))
    pages = pfn[:n].copy()
    if foll & FOLL_TOUCH:
        entry.bits[first : first + n] |= PTE_YOUNG
        if foll & FOLL_WRITE:
            k.frames.flags[pages] |= PG_dirty
    return pages


def must_unshare_any(k: Kernel, gup_flags: int) -> bool:
    """Could gup_must_unshare() hold for some page (a R/O FOLL_PIN on 5.19+)?"""
    return bool(
        gup_flags & FOLL_PIN and not gup_flags & FOLL_WRITE and k.policy.gup_unshares_ro_pins
    )


def _fast_flags(k: Kernel, gup_flags: int) -> int:
    """GUP-fast asks for a writable entry where the policy breaks COW in GUP (17839856fd58); x86
    4.9.287-4.9.297 forced it in the slow path only (gup_fast_breaks_cow_on_read). A write
    asks for one anyway: the policy is not read (check.search shares what reads alike)."""
    if gup_flags & FOLL_WRITE:
        return gup_flags
    fast = k.policy.gup_fast_breaks_cow_on_read
    forced = k.policy.gup_breaks_cow_on_read if fast is None else fast
    return gup_flags | (FOLL_WRITE if forced else 0)


def _slow_flags(k: Kernel, vma: VmArea, gup_flags: int) -> int:
    """should_force_cow_break(): a read of a COW mapping faults as a write where the policy
    breaks COW in GUP (a write's flags say so already: the policy is not read)."""
    forced = (
        not gup_flags & FOLL_WRITE
        and is_cow_mapping(vma.vm_flags)
        and k.policy.gup_breaks_cow_on_read
    )
    return gup_flags | (FOLL_WRITE if forced else 0)


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


def try_grab_pages(k: Kernel, mm: MmStruct, pfns: Ints, gup_flags: int) -> None:
    """try_grab_page() of many pages at once."""
    f = k.frames
    heads, nrs, compound = _grabbed(f, pfns)
    if not heads.size:
        return
    if gup_flags & FOLL_PIN:
        mm.has_pinned = True
        f._pincount[heads[compound]] += nrs[compound]
        nrs = np.where(compound, nrs, nrs * GUP_PIN_COUNTING_BIAS)
    f._count[heads] += nrs


def release_pages(k: Kernel, pages: Ints, gup_flags: int) -> None:
    """put_page()/unpin_user_page() on every page GUP returned (zero pages are not counted),
    in order: a page is freed when its last reference in the list goes."""
    f = k.frames
    heads, nrs, compound = _grabbed(f, pages, by_last=True)
    if gup_flags & FOLL_PIN:
        f._pincount[heads[compound]] -= nrs[compound]
        nrs = np.where(compound, nrs, nrs * GUP_PIN_COUNTING_BIAS)
    put_pages(k, heads, nrs)


def _grabbed(
    f: PageFrames, pfns: Ints, by_last: bool = False
) -> tuple[Ints, Ints, npt.NDArray[np.bool_]]:
    """The heads of the non-zero pages among pfns, how many of the pages each has, and which
    are compound; ordered by first (or last) appearance."""
    pfns = pfns[(f.flags[pfns] & PG_reserved) == 0]
    heads = heads_of(f, pfns)
    order = heads[::-1] if by_last else heads
    uniq, at, nrs = np.unique(order, return_index=True, return_counts=True)
    by_seen = np.argsort(-at if by_last else at, kind="stable")
    uniq, nrs = uniq[by_seen], nrs[by_seen]
    return uniq, nrs.astype(np.int64), (f.flags[uniq] & PG_head) != 0


def must_unshare(k: Kernel, vma: VmArea, addr: int, gup_flags: int) -> bool:
    """gup_must_unshare()'s answer, without the values it read."""
    return unshare_decision(k, vma, addr, gup_flags)[0]


def unshare_decision(k: Kernel, vma: VmArea, addr: int, gup_flags: int) -> tuple[bool, Reads, str]:
    """gup_must_unshare() of the page mapped at addr, for a R/O FOLL_PIN on 5.19+
    (must_unshare_any) and, as follow_page_pte() asks it, only of a read-only entry:
    page_unshares() asked of it, with the values it read when it unshares."""
    if not must_unshare_any(k, gup_flags):
        return NO_UNSHARE
    entry = vma.mm.pmds.get(pmd_index(addr))
    if isinstance(entry, HugePmd):
        writable, special, pfn = entry.write, entry.huge_zero, entry.pfn
    elif entry is not None and entry.pfn.item(pte_index(addr)) >= 0:
        i = pte_index(addr)
        bits, pfn = entry.bits.item(i), entry.pfn.item(i)
        writable, special = bool(bits & PTE_WRITE), bool(bits & PTE_SPECIAL)
    else:
        return NO_UNSHARE
    if writable:
        return NO_UNSHARE
    f = k.frames
    if not special and PageAnon(f, pfn):
        exclusive = PageAnonExclusive(f, pfn)
        read: Reads = (("PageAnon", 1), ("PageAnonExclusive", int(exclusive)))
        unshare, rule = page_unshares(True, exclusive, False), ANON_RULE
    else:
        non_anon, read, rule = k.policy.gup_unshares_non_anon(k, vma, gup_flags)
        unshare = page_unshares(False, False, non_anon)
    return (True, read, rule) if unshare else NO_UNSHARE


def page_unshares(anon: Field, exclusive: Field, non_anon: bool) -> Field:
    """gup_must_unshare() (5.19, a7f226604170) for a R/O FOLL_PIN of a page mapped read-only
    (its callers test the write bit first, as follow_page_pte does): an anonymous page unless
    PageAnonExclusive; a page that is not anonymous where the policy says (non_anon:
    gup_unshares_non_anon, 6.2 84209e87c696). The one statement of the rule, of one page's
    values (bools: the page-by-page path) or a run's (bool arrays: the range path); ``== 0``
    negates both alike."""
    return (anon & (exclusive == 0)) | ((anon == 0) & non_anon)


def gup_fast_one(k: Kernel, vma: VmArea, addr: int, gup_flags: int) -> int | None:
    """The lockless GUP-fast walk: the page if no fault is needed, else None (slow GUP)."""
    if must_unshare(k, vma, addr, gup_flags):
        return None
    return follow_page_mask(k, vma.mm, addr, _fast_flags(k, gup_flags))


def _faultin_and_follow(k: Kernel, vma: VmArea, addr: int, gup_flags: int) -> int:
    foll = _slow_flags(k, vma, gup_flags)
    for _ in range(MAX_FAULT_RETRIES):
        unshare, read, rule = unshare_decision(k, vma, addr, foll)  # asked once a round
        pfn = None if unshare else follow_page_mask(k, vma.mm, addr, foll)
        if pfn is not None:
            return pfn
        if unshare:
            k.event("gup_must_unshare", "unshare", addr=addr, read=read, rule=rule)
        write = bool(foll & FOLL_WRITE) and not unshare
        ret = handle_mm_fault(k, vma, addr, write=write, unshare=unshare)  # faultin_page()
        if ret & VM_FAULT_SIGSEGV:
            raise SyscallError("EFAULT", f"get_user_pages: fault at {addr:#x} failed")
        if ret & VM_FAULT_WRITE and not vma.vm_flags & VM_WRITE:
            foll &= ~FOLL_WRITE
    raise SyscallError("EFAULT", f"get_user_pages: {addr:#x} did not settle after retries")
