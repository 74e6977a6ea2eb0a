"""The whole state of a Kernel as a value: two snapshots compare with ==, and `diff` names the
first differences by path (``frames._mapcount[0x4a3]``, ``proc[2].pmd[0x3f0000].bits[17]``).

What a snapshot holds (see `snapshot`): every per-frame field of PageFrames up to ``nr`` but the
model's own content ids, the allocator (``nr``, the free lists in order, ``nr_allocated``), the
bytes of every frame that holds a nonzero byte (through ``has_data``/``page_bytes`` only), every
process (alive, page tables entry by entry, VMAs, mm counters), the anon_vmas, the deferred split
queue, vmstat, the COW log, the pins, the swap device, KSM's rmap_items and stable nodes, the
sysfs knobs, the id counters and the operation history as text. Only what the model can observe
counts: a frame written with zeros equals one never written, the swap slots' free heap is
compared as a set (the next slot handed out is its minimum), and zero vmstat counters are absent.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from cowlab.kernel import Kernel
from cowlab.mm.page_alloc import FIELDS
from cowlab.mm.pgtable import HugePmd, PteTable

# per-frame fields that are the model's representation, not struct page: compared through the
# bytes they stand for (component "frames.bytes"), never by value
REPRESENTATION_FIELDS = frozenset({"content"})
PAGE = 4096


def frame_fields() -> list[str]:
    """The struct page fields a snapshot compares (FIELDS without the representation ones)."""
    return [name for name in FIELDS if name not in REPRESENTATION_FIELDS]


class Snapshot:
    """A kernel's state: component name -> plain value (dicts, lists, tuples, NumPy arrays,
    bytes, scalars). Equal snapshots are the same state; `diff` says where they differ."""

    __slots__ = ("parts",)

    def __init__(self, parts: dict[str, Any]) -> None:
        self.parts = parts

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return not diff(self, other, limit=1)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Snapshot({', '.join(self.parts)})"


def snapshot(k: Kernel) -> Snapshot:
    f = k.frames
    nr = f.nr
    # the processes and other high-level state first: a diff lists them before the frames
    parts: dict[str, Any] = {"processes": sorted(k.processes)}
    for pid in sorted(k.processes):
        parts[f"proc[{pid}]"] = _process(k, pid)
    parts["anon_vmas"] = {
        av.id: {
            "root": av.root.id if av.root else None,
            "parent": av.parent.id if av.parent else None,
            "degree": av.degree,
            "vmas": sorted((v.mm.pid, v.vm_start) for v in av.vmas),
        }
        for av in sorted(k.anon_vmas.values(), key=lambda a: a.id)
    }
    if len(k.anon_vmas) != len(parts["anon_vmas"]) or any(
        key != av.id for key, av in k.anon_vmas.items()
    ):
        parts["anon_vmas.keys"] = sorted(k.anon_vmas)  # a key that is not its anon_vma's id
    parts["deferred_split"] = sorted(k.deferred_split)
    parts["vmstat"] = {key: n for key, n in sorted(k.vmstat.items()) if n}
    parts["cow_log"] = [
        (e.seq, e.function, e.pid, e.addr, e.old, e.new, e.nr, e.why, str(e.operation))
        for e in k.cow_log
    ]
    parts["events"] = [
        (e.op, e.function, e.verdict, e.addr, e.pfn, e.read, e.rule, e.policy, e.detail)
        for e in k.events
    ]
    parts["pins"] = {
        pin_id: {
            "id": pin.id,
            "pid": pin.pid,
            "addr": pin.addr,
            "length": pin.length,
            "pages": [int(pfn) for pfn in pin.pages],
            "write": pin.write,
            "flavour": pin.flavour,
            "gup_flags": pin.gup_flags,
        }
        for pin_id, pin in sorted(k.pins.items())
    }
    parts["swap"] = _swap(k)
    parts["ksm"] = _ksm(k)
    parts["knobs"] = {
        "thp_enabled": k.thp_enabled,
        "mthp_enabled": dict(sorted(k.mthp_enabled.items())),
        "thp_use_zero_page": k.thp_use_zero_page,
        "thp_alloc_fail": k.thp_alloc_fail,
        "max_ptes": (k.max_ptes_none, k.max_ptes_swap, k.max_ptes_shared),
        "ksm_max_page_sharing": k.ksm_max_page_sharing,
        "ksm_use_zero_pages": k.ksm_use_zero_pages,
        "numa_misplaced": k.numa_misplaced,
    }
    # the last anon_vma id, pid and pin id handed out
    parts["ids"] = (k._ids.last, k._pids.last, k._pin_ids.last)
    parts["history"] = [str(record) for record in k.history]
    parts["frames.nr"] = nr
    parts["frames.free"] = {order: list(pfns) for order, pfns in f.free.items() if pfns}
    parts["frames.nr_allocated"] = f.nr_allocated
    parts["frames.huge_zero_refcount"] = f.huge_zero_refcount
    parts["frames.bytes"] = _frame_bytes(k)
    for name in frame_fields():
        parts[f"frames.{name}"] = np.array(getattr(f, name)[:nr], copy=True)
    return Snapshot(parts)


def _frame_bytes(k: Kernel) -> dict[int, bytes]:
    """pfn -> the 4 KiB of every frame holding a nonzero byte (the others read as zeros)."""
    f = k.frames
    pfns = np.arange(f.nr, dtype=np.int64)
    out: dict[int, bytes] = {}
    zero = bytes(PAGE)
    for pfn in pfns[f.has_data(pfns)].tolist():
        data = f.page_bytes(pfn)
        if data != zero:
            out[pfn] = data
    return out


def _process(k: Kernel, pid: int) -> dict[str, Any]:
    proc = k.processes[pid]
    mm = proc.mm
    pmds: dict[str, Any] = {}
    for idx in sorted(mm.pmds):
        entry = mm.pmds[idx]
        key = f"pmd[{idx << 21:#x}]"
        if isinstance(entry, HugePmd):
            pmds[key] = {
                "huge": True,
                "pfn": entry.pfn,
                "write": entry.write,
                "dirty": entry.dirty,
                "young": entry.young,
                "soft_dirty": entry.soft_dirty,
                "protnone": entry.protnone,
                "huge_zero": entry.huge_zero,
            }
        elif isinstance(entry, PteTable):
            pmds[key] = {"pfn": entry.pfn.copy(), "bits": entry.bits.copy()}
        else:
            pmds[key] = repr(entry)
    return {
        "pid": proc.pid,
        "alive": proc.alive,
        "mm.pid": mm.pid,
        "anon_rss": mm.anon_rss,
        "swapents": mm.swapents,
        "has_pinned": mm.has_pinned,
        "vmas": [
            {
                "start": v.vm_start,
                "end": v.vm_end,
                "flags": v.vm_flags,
                "pgoff": v.vm_pgoff,
                "mm": v.mm.pid,
                "anon_vma": v.anon_vma.id if v.anon_vma else None,
                "chain": [av.id for av in v.anon_vma_chain],
            }
            for v in mm.vmas
        ],
        **pmds,
    }


def _swap(k: Kernel) -> dict[str, Any]:
    s = k.swap
    n = s.nr
    return {
        "nr": n,
        "swap_map": s.swap_map[:n].copy(),
        "cache": s.cache[:n].copy(),
        # what the device holds for a written slot (trimmed after the last nonzero byte)
        "data": {slot: bytes(data).rstrip(b"\0") for slot, data in sorted(s.data.items())},
        "free": sorted(s._free),
        "beyond_nr": bool(s.swap_map[n:].any() or (s.cache[n:] >= 0).any()),
    }


def _ksm(k: Kernel) -> dict[str, Any]:
    state = k.ksm
    return {
        "items": {
            key: (
                item.pid,
                item.addr,
                item.anon_vma.id if item.anon_vma else None,
                item.oldchecksum,
                item.node,
            )
            for key, item in sorted(state.items.items())
        },
        "nodes": {
            node_id: (node.id, node.kpfn, [(i.pid, i.addr) for i in node.items])
            for node_id, node in sorted(state.nodes.items())
        },
        "unreached": sorted(state.unreached),
        "next_id": state.next_id,
        "full_scans": state.full_scans,
    }


# --- comparing ----------------------------------------------------------------------------


def diff(a: Snapshot, b: Snapshot, limit: int = 24, per_part: int = 4) -> list[str]:
    """The first differences, each a path and the two values: at most `per_part` for each
    component (a frame field, a process, the pins, ...) and `limit` in all."""
    out: list[str] = []
    for key in [*a.parts, *(k for k in b.parts if k not in a.parts)]:
        if key not in b.parts:
            out.append(f"{key}: only in a")
        elif key not in a.parts:
            out.append(f"{key}: only in b")
        else:
            out.extend(itertools.islice(_walk(a.parts[key], b.parts[key], key), per_part))
        if len(out) >= limit:
            return out[:limit]
    return out


def describe(a: Snapshot, b: Snapshot, names: tuple[str, str] = ("a", "b")) -> str:
    lines = diff(a, b)
    if not lines:
        return "no difference"
    head = f"state differs ({names[0]} vs {names[1]}), first {len(lines)} difference(s):"
    return "\n".join([head, *(f"  {line}" for line in lines)])


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 4096:
        return hex(value)
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _walk(a: Any, b: Any, path: str) -> Iterator[str]:
    if isinstance(a, dict | list | tuple) and type(a) is type(b):
        try:  # fast when nothing in them differs (and holds no array)
            if a == b:
                return
        except ValueError:  # an array inside: compared part by part below
            pass
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a:
            sub = _join(path, key)
            if key not in b:
                yield f"{sub}: only in a ({_show(a[key])})"
            else:
                yield from _walk(a[key], b[key], sub)
        for key in b:
            if key not in a:
                yield f"{_join(path, key)}: only in b ({_show(b[key])})"
    elif isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        if a.shape[1:] != b.shape[1:] or not a.ndim:
            yield f"{path}: shape {a.shape} != {b.shape}"
            return
        if np.array_equal(a, b):
            return
        n = min(len(a), len(b))
        rows = np.flatnonzero((a[:n] != b[:n]).reshape(n, -1).any(axis=1) if n else [])
        for i in rows[:3].tolist():
            yield f"{path}[{i:#x}]: {a[i].tolist()} != {b[i].tolist()}"
        if len(rows) > 3:
            yield f"{path}: ... {len(rows) - 3} more differing entries"
        if len(a) != len(b):
            longer, which = (a, "a") if len(a) > len(b) else (b, "b")
            extra = longer[n : n + 4].tolist()
            yield f"{path}: length {len(a):#x} != {len(b):#x} ({which} goes on {extra}...)"
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple) and type(a) is type(b):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            yield from _walk(x, y, f"{path}[{i}]")
        if len(a) != len(b):
            seq, which = (a, "a") if len(a) > len(b) else (b, "b")
            extra = seq[min(len(a), len(b))]
            yield f"{path}: length {len(a)} != {len(b)} (first extra in {which}: {_show(extra)})"
    elif isinstance(a, bytes) and isinstance(b, bytes):
        if a != b:
            at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
            if at is None:
                yield f"{path}: length {len(a)} != {len(b)}"
            else:
                yield (
                    f"{path}: byte {at:#x} {a[at : at + 8].hex()} != {b[at : at + 8].hex()}"
                    f" (lengths {len(a)}, {len(b)})"
                )
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray) or a != b:  # one array: differ
        yield f"{path}: {_show(a)} != {_show(b)}"


def _join(path: str, key: Any) -> str:
    if isinstance(key, str):
        return f"{path}.{key}" if path else key
    shown = f"{key:#x}" if isinstance(key, int) and key >= 4096 else repr(key)
    return f"{path}[{shown}]"


# --- which parts a snapshot has -----------------------------------------------------------

_INDEX = re.compile(r"\[[^\]]*\]")


def normalise(path: str) -> str:
    """A path with its indices dropped: proc[2].pmd[0x7f..].bits[0x11] -> proc[].pmd[].bits[]."""
    return _INDEX.sub("[]", path)


def leaves(snap: Snapshot) -> set[str]:
    """Every comparable part of a snapshot, as a normalised path (`diff` names a difference
    in part L as L or L[...])."""
    out: set[str] = set()

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(sub, _join(path, key))
        elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
            for i, sub in enumerate(value):
                walk(sub, f"{path}[{i}]")
        else:
            out.add(normalise(path))

    walk(snap.parts, "")
    return out


def reported(lines: list[str]) -> set[str]:
    """The normalised paths of `diff` lines."""
    return {normalise(line.split(": ", 1)[0]) for line in lines}


def covers(path: str, leaf: str) -> bool:
    return path == leaf or path.startswith(leaf + "[")
