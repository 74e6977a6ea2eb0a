"""Self-checking: recompute every counter from the page tables and pins, and walk the rmap.

Invariants (must hold on every kernel, or the model — or the modelled kernel — is broken):
  counters  _mapcount, compound_mapcount, PG_double_map and _count agree with the mappings and
            pins in the page tables (4.5: every mapping and every GUP reference holds one _count
            on the head; tails hold none); MM_ANONPAGES agrees with the mapped pages; 5.7+
            _pincount, 5.19+ PG_anon_exclusive, 6.2+ _nr_pages_mapped (not kept under
            CONFIG_NO_PAGE_MAPCOUNT), 6.10+ _large_mapcount and 6.15+ MM-id slots agree with
            them too.
  rmap      every mapping of an anonymous page is reachable from the page's anon_vma, at the
            address its page->index gives (what rmap_walk_anon relies on).
Properties (what a program is owed; some kernels break them on purpose):
  pin coherence   a pinned virtual page still maps the pinned physical page (check/properties.py
                  holds it and the other properties `cowlab check` searches).

Each check is the statement after a `# invariant: NAME` comment. tools/mutation_check.py removes
them one at a time and requires tests/test_checker_breaks.py to fail each time; a new check gets
a marker, an entry in that tool's list and a test that breaks it (docs/model.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cowlab.mm.constants import (
    FOLL_PIN,
    HPAGE_PMD_NR,
    PMD_SHIFT,
    PG_allocated,
    PG_anon_exclusive,
    PG_double_map,
    PG_head,
    PG_ksm,
    PG_reserved,
    PG_swapcache,
    PG_tail,
)
from cowlab.mm.ksm import NULL_STABLE_NODE, walk_reaches
from cowlab.mm.mm import (
    GUP_PIN_COUNTING_BIAS,
    folio_large_mapcount,
    folio_maybe_mapped_shared,
    folio_nr_pages,
    heads_of,
)
from cowlab.mm.mm_types import MmStruct, VmArea
from cowlab.mm.page_alloc import FIELDS, RowField
from cowlab.mm.pgtable import PTE_MIGRATION, PTE_NONE, PTE_SPECIAL, HugePmd, PteTable
from cowlab.mm.rmap import ENTIRELY_MAPPED

if TYPE_CHECKING:
    from cowlab.kernel import Kernel, Pin, Process

Ints = npt.NDArray[np.int64]


def check_invariants(k: Kernel) -> list[str]:
    return check_counters(k) + check_rmap(k)


def _mapped_in(mm: MmStruct, vma: VmArea) -> tuple[Ints, Ints, Ints]:
    """(addresses, pfns, is-PMD) of every normal page vma maps; a PMD is listed once, by head."""
    addrs: list[Ints] = []
    pfns: list[Ints] = []
    pmd: list[Ints] = []
    for idx in range(vma.vm_start >> PMD_SHIFT, ((vma.vm_end - 1) >> PMD_SHIFT) + 1):
        entry = mm.pmds.get(idx)
        base = idx << PMD_SHIFT
        if isinstance(entry, HugePmd):
            if not entry.huge_zero:
                addrs.append(np.array([base]))
                pfns.append(np.array([entry.pfn]))
                pmd.append(np.array([1]))
            continue
        if entry is None:
            continue
        lo = max(0, (vma.vm_start - base) >> 12)
        hi = min(HPAGE_PMD_NR, (vma.vm_end - base) >> 12)
        sel = np.arange(lo, hi)
        sel = sel[(entry.pfn[lo:hi] >= 0) & ((entry.bits[lo:hi] & PTE_SPECIAL) == 0)]
        addrs.append(base + (sel << 12))
        pfns.append(entry.pfn[sel])
        pmd.append(np.zeros(sel.size, dtype=np.int64))
    if not addrs:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return np.concatenate(addrs), np.concatenate(pfns), np.concatenate(pmd)


@dataclass
class Recount:
    """Every mapping and reference the page tables and pins imply, per frame."""

    pte_maps: Ints
    pmd_maps: Ints
    refs: Ints  # FOLL_GET references
    pins: Ints  # FOLL_PIN pins (5.7+)
    pte_by_mm: dict[int, Ints]  # PTE mappings per frame, per mm
    pmd_by_mm: dict[int, Ints]  # PMD mappings per head, per mm
    swapcache: Ints  # 1 for a page the swap cache holds (one reference)
    swap_ptes: Ints  # swap PTEs per swap slot


def recount(k: Kernel, problems: list[str]) -> Recount:
    f = k.frames
    n = f.nr
    zeros = [np.zeros(n, dtype=np.int64) for _ in range(5)]
    swap_ptes = np.zeros(k.swap.nr, dtype=np.int64)
    r = Recount(zeros[0], zeros[1], zeros[2], zeros[3], {}, {}, zeros[4], swap_ptes)
    cached = k.swap.cache[: k.swap.nr]
    r.swapcache[cached[cached >= 0]] = 1
    for mm in k.mms():
        mine_pmd = r.pmd_by_mm[mm.pid] = np.zeros(n, dtype=np.int64)
        rss = 0
        normal: list[Ints] = []  # the PTE tables' normal pages and swap slots, counted at once
        swapped: list[Ints] = []
        for idx, entry in mm.pmds.items():
            if isinstance(entry, HugePmd):
                if not entry.huge_zero:
                    r.pmd_maps[entry.pfn] += 1
                    mine_pmd[entry.pfn] += 1
                    rss += HPAGE_PMD_NR
                continue
            # invariant: counters.migration_entry
            if (entry.bits & PTE_MIGRATION).any():
                problems.append(f"pid {mm.pid}: migration entry left at {idx << PMD_SHIFT:#x}")
            normal.append(entry.pfn[(entry.pfn >= 0) & ((entry.bits & PTE_SPECIAL) == 0)])
            if entry.pfn.min() <= -2:  # a swap PTE (none is -1)
                swapped.append(-2 - entry.pfn[entry.pfn <= -2])
        mine = r.pte_by_mm[mm.pid] = _counts(normal, n)
        r.pte_maps += mine
        rss += int(mine.sum())
        swapents = 0
        if swapped:
            slots = _counts(swapped, k.swap.nr)
            r.swap_ptes += slots
            swapents = int(slots.sum())
        # invariant: counters.anon_rss
        if rss != mm.anon_rss:
            problems.append(f"pid {mm.pid}: MM_ANONPAGES {mm.anon_rss} but {rss} pages mapped")
        # invariant: swap.swapents
        if swapents != mm.swapents:
            problems.append(f"pid {mm.pid}: MM_SWAPENTS {mm.swapents} but {swapents} swap PTEs")
        # invariant: counters.outside_vmas
        problems += _mappings_outside_vmas(mm)
    for pin in k.pins.values():
        counted = r.pins if pin.gup_flags & FOLL_PIN and k.policy.foll_pin else r.refs
        pages = pin.pages[(f.flags[pin.pages] & PG_reserved) == 0]
        np.add.at(counted, pages, 1)
    return r


def _counts(lists: list[Ints], n: int) -> Ints:
    """How many times each of 0..n-1 occurs in the arrays."""
    if not lists:
        return np.zeros(n, dtype=np.int64)
    every = lists[0] if len(lists) == 1 else np.concatenate(lists)
    return np.bincount(every, minlength=n)  # intp: int64 here


def check_counters(k: Kernel) -> list[str]:
    f = k.frames
    n = f.nr
    problems: list[str] = []
    r = recount(k, problems)
    flags = f.flags[:n]
    allocated = (flags & PG_allocated) != 0
    want = r.pte_maps + r.refs + GUP_PIN_COUNTING_BIAS * r.pins + r.swapcache
    used = (want + r.pmd_maps) > 0  # every count is >= 0: a nonzero sum, a nonzero count
    # invariant: counters.free
    for pfn in np.flatnonzero(used & ~allocated)[:5]:
        problems.append(f"pfn {pfn:#x} is mapped or pinned but free")
    small = allocated & ((flags & (PG_head | PG_tail)) == 0)
    # invariant: counters.small_mapcount
    _compare(problems, "_mapcount", small, f._mapcount[:n] + 1, r.pte_maps)
    # invariant: counters.small_count
    _compare(problems, "_count", small, f._count[:n], want)
    for head in np.flatnonzero(allocated & ((flags & PG_head) != 0)).tolist():
        problems += _check_thp(k, head, r)
        if k.nr_pages_mapped:  # not under CONFIG_NO_PAGE_MAPCOUNT
            problems += _check_nr_pages_mapped(k, head, r)
        if k.policy.large_mapcount:
            problems += _check_large_mapcount(k, head, r)
        if k.policy.mm_ids:
            problems += _check_mm_ids(k, head, r)
    if k.policy.anon_exclusive:
        problems += _check_exclusive(k, r)
    return problems + _check_swap(k, r) + _check_frames(k)


def _check_frames(k: Kernel) -> list[str]:
    """The allocator hands out frames as they lie on its free lists (no reset on allocation),
    and each page-content string is held by exactly the frames that show its id."""
    f = k.frames
    out: list[str] = []
    free = [  # every frame of every free block, block by block
        np.add.outer(np.asarray(heads, dtype=np.int64), np.arange(1 << order)).ravel()
        for order, heads in f.free.items()
        if heads
    ]
    pfns = np.concatenate(free) if free else np.zeros(0, dtype=np.int64)
    is_free = np.zeros(f.nr, dtype=bool)
    is_free[pfns] = True
    for name, value in FIELDS.items() if pfns.size else ():  # no free frame: none is dirty
        dirty = _first_set(getattr(f, name), value, pfns, is_free)
        # invariant: frames.free_fields
        if dirty is not None:
            out.append(f"pfn {dirty:#x} is on a free list with {name} set")
    held = np.bincount(f.content[: f.nr], minlength=len(f.blobs.refs))
    held[0] = 0
    wrong = np.flatnonzero(held != np.asarray(f.blobs.refs))
    # invariant: frames.content_refs
    if wrong.size:
        blob = int(wrong[0])
        out.append(f"content {blob}: {f.blobs.refs[blob]} references, {int(held[blob])} frames")
    return out


def _first_set(
    field: npt.NDArray[Any] | RowField, value: int, pfns: Ints, is_free: npt.NDArray[np.bool_]
) -> int | None:
    """The first of the free frames `pfns` (free-list order) whose field is not `value`, the
    free value; a row field's from its rows (few frames hold one)."""
    if isinstance(field, RowField):
        fresh = field.fresh()
        held = [pfn + field.page for pfn, row in field.row.items() if field.data[row] != fresh]
        dirty = [pfn for pfn in held if pfn < is_free.size and is_free[pfn]]
        return min(dirty, key=lambda pfn: int((pfns == pfn).argmax()), default=None)
    differs = field[pfns] != value
    if differs.ndim > 1:
        differs = differs.any(axis=1)
    return int(pfns[differs.argmax()]) if differs.any() else None


def _check_swap(k: Kernel, r: Recount) -> list[str]:
    """swap_map against the swap PTEs, and the swap cache against the pages' PG_swapcache and
    page->private, both ways."""
    f = k.frames
    s = k.swap
    flagged = np.flatnonzero(f.flags[: f.nr] & PG_swapcache)
    if not s.nr:  # no slot ever handed out: no swap count, nothing cached
        return _swapcache_differs(flagged.size) + _check_swap_folios(k, flagged)
    out: list[str] = []
    bad = np.flatnonzero(s.swap_map[: s.nr] != r.swap_ptes)
    # invariant: swap.swap_map
    if bad.size:
        slot = int(bad[0])
        out.append(
            f"swap slot {slot}: swap_map says {int(s.swap_map[slot])}, "
            f"{int(r.swap_ptes[slot])} swap PTEs"
        )
    cached = s.cache[: s.nr]
    slots = np.flatnonzero(cached >= 0)
    # flagged is sorted and unique: the same set as the cached pages' when equal to their unique
    out += _swapcache_differs(not np.array_equal(flagged, np.unique(cached[slots])))
    wrong = slots[f.private[cached[slots]] != slots] if slots.size else slots
    # invariant: swap.cache_private
    if wrong.size:
        slot = int(wrong[0])
        out.append(f"swap slot {slot}: its page's private is {int(f.private[cached[slot]])}")
    return out + _check_swap_folios(k, flagged)


def _swapcache_differs(differ: object) -> list[str]:
    """The report when the swap cache's pages and the pages flagged PG_swapcache differ."""
    out: list[str] = []
    # invariant: swap.cache_flag
    if differ:
        out.append("the swap cache and the pages marked PG_swapcache differ")
    return out


def _check_swap_folios(k: Kernel, flagged: Ints) -> list[str]:
    """A large folio is in the swap cache whole: page i holds slot first + i, first a multiple
    of the folio's size (the run get_swap_pages gave it)."""
    f = k.frames
    out: list[str] = []
    heads = flagged[(f.flags[flagged] & PG_head) != 0]
    for head in heads.tolist():
        nr = folio_nr_pages(f, head)
        first = int(f.private[head])
        held = k.swap.cache[first : first + nr]
        # invariant: swap.folio_whole
        if first % nr or held.size != nr or (held != head + np.arange(nr)).any():
            out.append(f"folio {head:#x} in the swap cache: not slots {first}.. + i, aligned")
    return out


def _compare(
    problems: list[str], what: str, sel: np.ndarray, stored: np.ndarray, want: Ints
) -> None:
    bad = np.flatnonzero(sel & (stored != want))
    for pfn in bad[:5].tolist():
        problems.append(
            f"pfn {pfn:#x}: {what} says {int(stored[pfn])}, page tables say {int(want[pfn])}"
        )


def _check_thp(k: Kernel, head: int, r: Recount) -> list[str]:
    f = k.frames
    nr = folio_nr_pages(f, head)
    sl = slice(head, head + nr)
    out: list[str] = []
    c = int(f.compound_mapcount[head + 1]) + 1
    dm = int(bool(f.flags[head + 1] & PG_double_map))
    # invariant: thp.compound_mapcount
    if c != r.pmd_maps[head]:
        out.append(f"THP {head:#x}: compound_mapcount {c}, {int(r.pmd_maps[head])} PMD maps")
    # invariant: thp.double_map_unmapped
    if dm and c < 1:
        out.append(f"THP {head:#x}: PG_double_map without a PMD mapping")
    # invariant: thp.no_double_map
    if dm and not k.policy.double_map:
        out.append(f"THP {head:#x}: PG_double_map in a kernel without it (6.2+)")
    own = f._mapcount[sl].astype(np.int64) + 1 - dm
    bad = np.flatnonzero(own != r.pte_maps[sl])
    # invariant: thp.subpage_mapcount
    if bad.size:
        i = int(bad[0])
        out.append(
            f"THP {head:#x} subpage {i}: _mapcount says {int(own[i])} PTE maps, "
            f"page tables {int(r.pte_maps[head + i])}"
        )
    pins = int(r.pins[sl].sum())
    refs = int(r.pmd_maps[head] + r.pte_maps[sl].sum() + r.refs[sl].sum()) + pins
    refs += int(r.swapcache[sl].sum())
    # invariant: thp.count
    if int(f._count[head]) != refs:
        out.append(f"THP {head:#x}: _count {int(f._count[head])}, mappings + refs + pins = {refs}")
    # invariant: thp.pincount
    if int(f._pincount[head]) != pins:
        out.append(f"THP {head:#x}: _pincount {int(f._pincount[head])}, FOLL_PIN pins {pins}")
    # invariant: thp.tail_count
    if f._count[head + 1 : head + nr].any():
        out.append(f"THP {head:#x}: a tail page has a nonzero _count")
    return out


def _check_nr_pages_mapped(k: Kernel, head: int, r: Recount) -> list[str]:
    """_nr_pages_mapped (6.2's subpages_mapcount), recounted from the page tables as
    page_add_anon_rmap (6.2.1) and __folio_add_rmap (6.8.0 .. 6.18.2, CONFIG_PAGE_MAPCOUNT) keep
    it: the pages mapped by at least one PTE, plus ENTIRELY_MAPPED while a PMD maps the folio."""
    f = k.frames
    sl = slice(head, head + folio_nr_pages(f, head))
    mapped = int((r.pte_maps[sl] > 0).sum()) + (ENTIRELY_MAPPED if r.pmd_maps[head] else 0)
    # invariant: folio.nr_pages_mapped
    if int(f._nr_pages_mapped[head]) != mapped:
        return [
            f"folio {head:#x}: _nr_pages_mapped {int(f._nr_pages_mapped[head]):#x}, "
            f"page tables {mapped:#x}"
        ]
    return []


def _check_large_mapcount(k: Kernel, head: int, r: Recount) -> list[str]:
    """_large_mapcount (6.10): every PTE and PMD mapping of the large folio."""
    f = k.frames
    sl = slice(head, head + folio_nr_pages(f, head))
    total = int(r.pmd_maps[head] + r.pte_maps[sl].sum())
    # invariant: folio.large_mapcount
    if folio_large_mapcount(f, head) != total:
        return [f"folio {head:#x}: _large_mapcount {folio_large_mapcount(f, head)}, maps {total}"]
    return []


def _check_mm_ids(k: Kernel, head: int, r: Recount) -> list[str]:
    """The MM ids and the maybe-shared bit (6.15, CONFIG_MM_ID)."""
    f = k.frames
    sl = slice(head, head + folio_nr_pages(f, head))
    out = []
    mappers = {
        pid: int(m[sl].sum() + r.pmd_by_mm[pid][head])
        for pid, m in r.pte_by_mm.items()
        if m[sl].any() or r.pmd_by_mm[pid][head]
    }
    for slot in (0, 1):
        # a slot counts the mappings made since its MM took it: an MM that mapped the folio
        # while both slots were taken is undercounted, never overcounted
        pid = int(f.mm_id[head, slot])
        # invariant: folio.mm_id_slot
        if pid and int(f.mm_id_mapcount[head, slot]) + 1 > mappers.get(pid, 0):
            out.append(f"folio {head:#x}: MM id slot {slot} (pid {pid}) counts too many")
    # invariant: folio.maybe_shared
    if len(mappers) > 1 and not folio_maybe_mapped_shared(f, head):
        out.append(f"folio {head:#x}: mapped by {len(mappers)} MMs but not maybe-shared")
    return out


def _check_exclusive(k: Kernel, r: Recount) -> list[str]:
    """PG_anon_exclusive: an exclusive page (or THP, by its head) is mapped by one MM only.

    All exclusive pages at once: an MM maps a page's span (the page, or all of a PMD-mapped
    THP whose head carries the bit) when its PTE counts over the span are nonzero, or when it
    maps the large folio by PMD; the first page with two such MMs is reported."""
    f = k.frames
    n = f.nr
    if len(r.pte_by_mm) < 2:  # one MM cannot share a page with another
        return []
    exclusive = np.flatnonzero(f.flags[:n] & PG_anon_exclusive)
    if not exclusive.size:
        return []
    heads = heads_of(f, exclusive)
    nr = np.left_shift(1, f.order[heads].astype(np.int64))
    # a PMD-mapped THP's bit lives on its head and speaks for all of it
    whole = (exclusive == heads) & (r.pmd_maps[heads] > 0)
    pids = list(r.pte_by_mm)
    ptes = [r.pte_by_mm[pid][:n] > 0 for pid in pids]
    if whole.any():
        end = np.where(whole, heads + nr, exclusive + 1)
        spans = [np.concatenate(([0], np.cumsum(m))) for m in ptes]
        mapped = np.stack([c[end] - c[exclusive] > 0 for c in spans])
    else:
        mapped = np.stack([m[exclusive] for m in ptes])
    mapped |= np.stack([r.pmd_by_mm[pid][heads] > 0 for pid in pids]) & (nr > 1)
    shared = np.flatnonzero(mapped.sum(axis=0) > 1)
    # invariant: exclusive.anon_exclusive
    if shared.size:
        i = int(shared[0])
        owners = [pid for pid, mine in zip(pids, mapped[:, i].tolist(), strict=True) if mine]
        return [f"pfn {int(exclusive[i]):#x} is PG_anon_exclusive but mapped by pids {owners}"]
    return []


def _mappings_outside_vmas(mm: MmStruct) -> list[str]:
    filled = {idx: _entries_before(entry) for idx, entry in mm.pmds.items()}
    covered = sum(int(c[-1]) for c in filled.values())
    inside = 0
    for vma in mm.vmas:
        for idx in range(vma.vm_start >> PMD_SHIFT, ((vma.vm_end - 1) >> PMD_SHIFT) + 1):
            c = filled.get(idx)
            if c is None:
                continue
            base = idx << PMD_SHIFT
            lo = max(0, (vma.vm_start - base) >> 12)
            hi = min(HPAGE_PMD_NR, (vma.vm_end - base) >> 12)
            inside += int(c[hi] - c[lo])
    if covered != inside:
        return [f"pid {mm.pid}: {covered - inside} page-table entries lie outside every VMA"]
    return []


def _entries_before(entry: HugePmd | PteTable) -> Ints:
    """For i in 0..512, how many of the first i entries a PMD maps are not none (a huge PMD
    maps all 512): a range's count is then two lookups."""
    if isinstance(entry, HugePmd):
        return _EVERY_ENTRY
    c = np.zeros(HPAGE_PMD_NR + 1, dtype=np.int64)
    np.cumsum(entry.pfn != PTE_NONE, out=c[1:])
    return c


_EVERY_ENTRY = np.arange(HPAGE_PMD_NR + 1, dtype=np.int64)


def check_rmap(k: Kernel) -> list[str]:
    """Every mapping must be found by rmap_walk_anon from its page's anon_vma."""
    f = k.frames
    problems: list[str] = []
    for mm in k.mms():
        for vma in mm.vmas:
            addrs, pfns, _ = _mapped_in(mm, vma)
            if not pfns.size:
                continue
            heads = heads_of(f, pfns)
            ids = f.mapping[heads]
            # invariant: rmap.not_anonymous
            for pfn in pfns[ids == 0][:3].tolist():
                problems.append(f"pid {mm.pid}: pfn {pfn:#x} mapped but not anonymous")
            ksm = ids < 0
            problems += _check_ksm_rmap(k, mm, vma, addrs[ksm], pfns[ksm])
            for av_id in np.unique(ids[ids > 0]).tolist():
                av = k.anon_vmas.get(av_id)
                # invariant: rmap.anon_vma_tree
                if av is None or vma not in av.vmas:
                    first = int(pfns[ids == av_id][0])
                    problems.append(
                        f"pid {mm.pid}: {vma} maps pfn {first:#x} (anon_vma#{av_id}) but is not "
                        f"in that anon_vma's tree: rmap_walk_anon misses the mapping"
                    )
            want = vma.vm_pgoff + ((addrs - vma.vm_start) >> 12)
            have = f.index[heads] + (pfns - heads)
            # invariant: rmap.page_index
            for i in np.flatnonzero((want != have) & ~ksm)[:3].tolist():
                problems.append(
                    f"pid {mm.pid}: pfn {int(pfns[i]):#x} at {int(addrs[i]):#x} has index "
                    f"{int(have[i])}, linear_page_index is {int(want[i])}"
                )
    return problems


def _check_ksm_rmap(k: Kernel, mm: MmStruct, vma: VmArea, addrs: Ints, pfns: Ints) -> list[str]:
    """rmap_walk_ksm(): a KSM page's stable node must have an rmap_item at this address whose
    anon_vma tree holds this VMA (the item's own, or a forked child's). Except where the KSM
    page came back from the swap cache (do_swap_page, ksm_might_need_to_copy keeps it) after
    ksmd dropped the address's rmap_item (get_next_rmap_item, remove_trailing_rmap_items), and
    in a child forked from such a mapping before ksmd visits it again: the walk misses those in
    the kernel too (4.5.0 and 6.18.2 mm/ksm.c, mm/memory.c; live 6.18 keeps the page KSM). The
    model lists them in k.ksm.unreached (mm/ksm.py swapped_in, ksm_fork). A KSM page whose
    stable node is NULL (a fork's sharer of the page a failed try_to_merge_two_pages left) is
    one the walk leaves at once in the kernel (page_stable_node NULL: 4.5.0 .. 6.18.2)."""
    out = []
    for addr, pfn in zip(addrs.tolist(), pfns.tolist(), strict=True):
        mapping = int(k.frames.mapping[pfn])
        if mapping == NULL_STABLE_NODE and k.frames.flags[pfn] & PG_ksm:
            continue
        node = k.ksm.nodes.get(-mapping)
        # invariant: ksm.stable_node
        if node is None or node.kpfn != pfn or not k.frames.flags[pfn] & PG_ksm:
            out.append(f"pid {mm.pid}: KSM page {pfn:#x} at {addr:#x} has no stable node")
            continue
        # invariant: ksm.rmap
        if not walk_reaches(node, vma, addr) and (mm.pid, addr) not in k.ksm.unreached:
            out.append(f"pid {mm.pid}: KSM page {pfn:#x} at {addr:#x}: rmap_walk_ksm misses it")
    return out


def check_pin_coherence(k: Kernel) -> list[str]:
    """Every pinned page still mapped by its process maps the pinned physical page, where the
    pin is owed that (Pin.coherence_owed)."""
    problems: list[str] = []
    for pin in k.pins.values():
        proc = k.processes.get(pin.pid)
        if proc is not None:
            first = pin.addr & ~0xFFF
            targets = first + 4096 * np.arange(len(pin.pages), dtype=np.int64)
            problems += pin_incoherence(k, proc, pin, targets, f"pid {pin.pid}", f"{pin.id}")
    return problems


def pin_incoherence(
    k: Kernel, proc: Process, pin: Pin, targets: Ints, who: str, name: str
) -> list[str]:
    """The pages of `pin` whose address (targets[i], -1: none) in proc maps another page than
    the pinned one; two zero pages (the 4 KiB one, a page of the huge one) are the same bytes
    for ever, so a split of the huge zero PMD that pinned one is no loss."""
    f = k.frames
    problems = []
    for i, target in enumerate(targets.tolist()):
        now = proc.translate(target) if target >= 0 else None
        pinned = int(pin.pages[i])
        both_zero = now is not None and f.flags[now] & f.flags[pinned] & PG_reserved
        # invariant: pin_coherence
        if now is not None and now != pinned and not both_zero and pin.coherence_owed(pinned):
            problems.append(
                f"pin {name}: {target:#x} in {who} maps pfn {now:#x}, "
                f"the device holds pfn {pinned:#x}"
            )
    return problems
