"""What a step did to the struct page counters, as old -> new lines (for `cowlab explain`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cowlab.mm.constants import (
    PG_allocated,
    PG_dirty,
    PG_double_map,
    PG_head,
    PG_swapcache,
    PG_tail,
    PG_writeback,
)

SHOWN_FLAGS = {PG_swapcache: "swapcache", PG_writeback: "writeback", PG_dirty: "dirty"}

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


def counters_snapshot(k: Kernel) -> dict[str, np.ndarray]:
    f = k.frames
    n = f.nr
    return {
        "_mapcount": f._mapcount[:n].copy(),
        "_count": f._count[:n].copy(),
        "compound_mapcount": f.compound_mapcount[:n].copy(),
        "flags": f.flags[:n].copy(),
        "mapping": f.mapping[:n].copy(),
        "order": f.order[:n].copy(),
        "swap_map": k.swap.swap_map[: k.swap.nr].copy(),
        "swap_cache": k.swap.cache[: k.swap.nr].copy(),
    }


def counter_changes(k: Kernel, before: dict[str, np.ndarray]) -> list[str]:
    """The step's effect on struct page counters, per page or THP, as old -> new."""
    f = k.frames
    n = len(before["_count"])
    now = {name: getattr(f, name)[:n] for name in before if not name.startswith("swap")}
    lines = _allocation_changes(k, before)
    changed = np.zeros(n, dtype=bool)
    for name in ("_mapcount", "_count", "compound_mapcount", "mapping"):
        changed |= before[name] != now[name]
    changed |= ((before["flags"] ^ now["flags"]) & sum(SHOWN_FLAGS)) != 0
    compound = ((before["flags"] | now["flags"]) & (PG_head | PG_tail)) != 0
    order = np.maximum(before["order"], now["order"]).astype(np.int64)
    pfns = np.arange(n)
    heads = np.unique(np.where(compound, pfns & ~((1 << order) - 1), pfns)[changed])
    for head in heads.tolist():
        if compound[head] and order[head]:
            change = _thp_change(head, 1 << int(order[head]), before, now, k.page_mapcount)
            lines.append(change)
        else:
            lines.append(f"page {head:#x}: " + ", ".join(_field_changes(head, before, now)))
    return lines + _swap_changes(k, before)


def _swap_changes(k: Kernel, before: dict[str, np.ndarray]) -> list[str]:
    """Each swap slot whose swap PTE count or swap-cache page changed."""
    out = []
    for slot in range(k.swap.nr):
        parts = []
        for name, now, free in (("swap_map", k.swap.swap_map, 0), ("swap cache", k.swap.cache, -1)):
            was = before[name.replace(" ", "_")]
            old = int(was[slot]) if slot < was.size else free
            new = int(now[slot])
            if old != new:
                shown = [str(v) if name == "swap_map" or v < 0 else hex(v) for v in (old, new)]
                parts.append(f"{name} {shown[0]}->{shown[1]}")
        if parts:
            out.append(f"swap slot {slot}: " + ", ".join(parts))
    return out


def _field_changes(
    pfn: int, before: dict[str, np.ndarray], now: dict[str, np.ndarray]
) -> list[str]:
    out = []
    for name in ("_mapcount", "_count", "mapping"):
        old, new = int(before[name][pfn]), int(now[name][pfn])
        if old != new:
            shown = (_mapping(old), _mapping(new)) if name == "mapping" else (old, new)
            out.append(f"{name} {shown[0]}->{shown[1]}")
    for bit, name in SHOWN_FLAGS.items():
        old_set, new_set = bool(before["flags"][pfn] & bit), bool(now["flags"][pfn] & bit)
        if old_set != new_set:
            out.append(f"PG_{name} {int(old_set)}->{int(new_set)}")
    return out


def _mapping(value: int) -> str:
    """page->mapping: an anon_vma, or (negative) a KSM page's stable node."""
    return f"anon_vma#{value}" if value >= 0 else f"KSM stable node {-value}"


def _allocation_changes(k: Kernel, before: dict[str, np.ndarray]) -> list[str]:
    f = k.frames
    n = len(before["_count"])
    was = np.zeros(f.nr, dtype=bool)
    was[:n] = (before["flags"] & PG_allocated) != 0
    now = (f.flags[: f.nr] & PG_allocated) != 0
    out = []
    for label, sel in (("allocated", now & ~was), ("freed", was & ~now)):
        pfns = np.flatnonzero(sel)
        if pfns.size:
            shown = ", ".join(hex(p) for p in pfns[:4].tolist())
            more = f" (+{pfns.size - 4} more)" if pfns.size > 4 else ""
            out.append(f"{label} {pfns.size} frames: {shown}{more}")
    return out


def _thp_change(
    head: int,
    nr: int,
    before: dict[str, np.ndarray],
    now: dict[str, np.ndarray],
    page_mapcount: bool,
) -> str:
    """A large folio's changes; under CONFIG_NO_PAGE_MAPCOUNT (not page_mapcount) its mappings
    as the build counts them, _large_mapcount, instead of the pages' _mapcount it does not keep
    (the model's tally of PTE maps plus the PMD maps: the same sum)."""
    sl = slice(head, head + nr)
    parts = []
    c_old = int(before["compound_mapcount"][head + 1]) + 1
    c_new = int(now["compound_mapcount"][head + 1]) + 1
    if c_old != c_new:
        parts.append(f"compound_mapcount {c_old}->{c_new}")
    dm_old = bool(before["flags"][head + 1] & PG_double_map)
    dm_new = bool(now["flags"][head + 1] & PG_double_map)
    if dm_old != dm_new:
        parts.append(f"DoubleMap {int(dm_old)}->{int(dm_new)}")
    parts += [p for p in _field_changes(head, before, now) if not p.startswith("_mapcount")]
    old_mc, new_mc = before["_mapcount"][sl], now["_mapcount"][sl]
    if not page_mapcount:
        large_old = int(old_mc.sum()) + nr + c_old - 1
        large_new = int(new_mc.sum()) + nr + c_new - 1
        shown = f"{large_old}->{large_new}" if large_old != large_new else f"{large_new} (same)"
        parts.append(f"_large_mapcount {shown}")
        return f"THP {head:#x}: " + ", ".join(parts)
    diff = np.flatnonzero(old_mc != new_mc)
    pairs: dict[tuple[int, int], int] = {}
    for i in diff.tolist():
        key = (int(old_mc[i]), int(new_mc[i]))
        pairs[key] = pairs.get(key, 0) + 1
    for (a, b), count in sorted(pairs.items()):
        which = f"subpage {int(diff[0])}" if count == 1 else f"{count} subpages"
        parts.append(f"{which} _mapcount {a}->{b}")
    return f"THP {head:#x}: " + ", ".join(parts)
