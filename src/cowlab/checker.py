"""Self-checking: recompute every counter from the page tables and pins, and walk the rmap.

Invariants (must hold on every kernel, or the model — or the modelled kernel — is broken):
  counters  _mapcount, compound_mapcount, PG_double_map and _count agree with the mappings and
            pins in the page tables (4.5: every mapping and every GUP reference holds one _count
            on the head; tails hold none); MM_ANONPAGES agrees with the mapped pages.
  rmap      every mapping of an anonymous page is reachable from the page's anon_vma, at the
            address its page->index gives (what rmap_walk_anon relies on).
Properties (what a program is owed; some kernels break them on purpose):
  pin coherence   a pinned virtual page still maps the pinned physical page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from cowlab.mm.constants import (
    HPAGE_PMD_NR,
    PMD_SHIFT,
    PG_allocated,
    PG_double_map,
    PG_head,
    PG_tail,
)
from cowlab.mm.mm import is_zero_pfn
from cowlab.mm.mm_types import MmStruct, VmArea
from cowlab.mm.pgtable import PTE_MIGRATION, PTE_SPECIAL, HugePmd

if TYPE_CHECKING:
    from cowlab.kernel import Kernel

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


def check_counters(k: Kernel) -> list[str]:
    f = k.frames
    n = f.nr
    problems: list[str] = []
    pte_maps = np.zeros(n, dtype=np.int64)
    pmd_maps = np.zeros(n, dtype=np.int64)
    pins = np.zeros(n, dtype=np.int64)
    for mm in k.mms():
        rss = 0
        for idx, entry in mm.pmds.items():
            if isinstance(entry, HugePmd):
                if not entry.huge_zero:
                    pmd_maps[entry.pfn] += 1
                    rss += HPAGE_PMD_NR
                continue
            if (entry.bits & PTE_MIGRATION).any():
                problems.append(f"pid {mm.pid}: migration entry left at {idx << PMD_SHIFT:#x}")
            normal = entry.pfn[(entry.pfn >= 0) & ((entry.bits & PTE_SPECIAL) == 0)]
            np.add.at(pte_maps, normal, 1)
            rss += int(normal.size)
        if rss != mm.anon_rss:
            problems.append(f"pid {mm.pid}: MM_ANONPAGES {mm.anon_rss} but {rss} pages mapped")
        problems += _mappings_outside_vmas(mm)
    for pin in k.pins.values():
        for pfn in pin.pages:
            if not is_zero_pfn(f, pfn):
                pins[pfn] += 1
    flags = f.flags[:n]
    allocated = (flags & PG_allocated) != 0
    used = (pte_maps + pmd_maps + pins) > 0
    for pfn in np.flatnonzero(used & ~allocated)[:5]:
        problems.append(f"pfn {pfn:#x} is mapped or pinned but free")
    small = allocated & ((flags & (PG_head | PG_tail)) == 0)
    _compare(problems, "_mapcount", small, f._mapcount[:n] + 1, pte_maps)
    _compare(problems, "_count", small, f._count[:n], pte_maps + pins)
    for head in np.flatnonzero(allocated & ((flags & PG_head) != 0)).tolist():
        problems += _check_thp(k, head, pte_maps, pmd_maps, pins)
    return problems


def _compare(
    problems: list[str], what: str, sel: np.ndarray, stored: np.ndarray, want: Ints
) -> None:
    bad = np.flatnonzero(sel & (stored != want))
    for pfn in bad[:5].tolist():
        problems.append(
            f"pfn {pfn:#x}: {what} says {int(stored[pfn])}, page tables say {int(want[pfn])}"
        )


def _check_thp(k: Kernel, head: int, pte_maps: Ints, pmd_maps: Ints, pins: Ints) -> list[str]:
    f = k.frames
    sl = slice(head, head + HPAGE_PMD_NR)
    out: list[str] = []
    c = int(f.compound_mapcount[head + 1]) + 1
    dm = int(bool(f.flags[head + 1] & PG_double_map))
    if c != pmd_maps[head]:
        out.append(f"THP {head:#x}: compound_mapcount {c}, {int(pmd_maps[head])} PMD maps")
    if dm and c < 1:
        out.append(f"THP {head:#x}: PG_double_map without a PMD mapping")
    own = f._mapcount[sl].astype(np.int64) + 1 - dm
    bad = np.flatnonzero(own != pte_maps[sl])
    if bad.size:
        i = int(bad[0])
        out.append(
            f"THP {head:#x} subpage {i}: _mapcount says {int(own[i])} PTE maps, "
            f"page tables {int(pte_maps[head + i])}"
        )
    refs = int(pmd_maps[head] + pte_maps[sl].sum() + pins[sl].sum())
    if int(f._count[head]) != refs:
        out.append(f"THP {head:#x}: _count {int(f._count[head])}, mappings + pins = {refs}")
    if f._count[head + 1 : head + HPAGE_PMD_NR].any():
        out.append(f"THP {head:#x}: a tail page has a nonzero _count")
    return out


def _mappings_outside_vmas(mm: MmStruct) -> list[str]:
    covered = sum(
        int((e.pfn >= 0).sum() if not isinstance(e, HugePmd) else HPAGE_PMD_NR)
        for e in mm.pmds.values()
    )
    inside = 0
    for vma in mm.vmas:
        for idx in range(vma.vm_start >> PMD_SHIFT, ((vma.vm_end - 1) >> PMD_SHIFT) + 1):
            entry = mm.pmds.get(idx)
            if entry is None:
                continue
            base = idx << PMD_SHIFT
            lo = max(0, (vma.vm_start - base) >> 12)
            hi = min(HPAGE_PMD_NR, (vma.vm_end - base) >> 12)
            if isinstance(entry, HugePmd):
                inside += hi - lo
            else:
                inside += int((entry.pfn[lo:hi] >= 0).sum())
    if covered != inside:
        return [f"pid {mm.pid}: {covered - inside} page-table entries lie outside every VMA"]
    return []


def check_rmap(k: Kernel) -> list[str]:
    """Every mapping must be found by rmap_walk_anon from its page's anon_vma."""
    f = k.frames
    problems: list[str] = []
    for mm in k.mms():
        for vma in mm.vmas:
            addrs, pfns, _ = _mapped_in(mm, vma)
            if not pfns.size:
                continue
            tail = (f.flags[pfns] & PG_tail) != 0
            heads = np.where(tail, pfns & ~(HPAGE_PMD_NR - 1), pfns)
            ids = f.mapping[heads]
            for pfn in pfns[ids == 0][:3].tolist():
                problems.append(f"pid {mm.pid}: pfn {pfn:#x} mapped but not anonymous")
            for av_id in np.unique(ids[ids != 0]).tolist():
                av = k.anon_vmas.get(av_id)
                if av is None or vma not in av.vmas:
                    first = int(pfns[ids == av_id][0])
                    problems.append(
                        f"pid {mm.pid}: {vma} maps pfn {first:#x} (anon_vma#{av_id}) but is not "
                        f"in that anon_vma's tree: rmap_walk_anon misses the mapping"
                    )
            want = vma.vm_pgoff + ((addrs - vma.vm_start) >> 12)
            have = f.index[heads] + (pfns - heads)
            for i in np.flatnonzero(want != have)[:3].tolist():
                problems.append(
                    f"pid {mm.pid}: pfn {int(pfns[i]):#x} at {int(addrs[i]):#x} has index "
                    f"{int(have[i])}, linear_page_index is {int(want[i])}"
                )
    return problems


def check_pin_coherence(k: Kernel) -> list[str]:
    """Every pinned page still mapped by its process maps the pinned physical page."""
    problems: list[str] = []
    for pin in k.pins.values():
        proc = k.processes.get(pin.pid)
        if proc is None:
            continue
        first = pin.addr & ~0xFFF
        for i, pfn in enumerate(pin.pages):
            now = proc.translate(first + i * 4096)
            if now is not None and now != pfn:
                problems.append(
                    f"pin {pin.id}: {first + i * 4096:#x} in pid {pin.pid} maps pfn {now:#x}, "
                    f"the device holds pfn {pfn:#x}"
                )
    return problems
