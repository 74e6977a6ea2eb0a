"""Canonical states for the exhaustive search: two runs whose machines differ only in the names
of things — which pfn, swap slot, anon_vma or content id the allocator happened to hand out,
which process was created first — hash the same, so the search visits each state once.

Pfns are renamed by where the page tables, pins and swap cache first reach them (processes in a
pid-free order); the subpages of a folio keep their order, so a THP is one run of 512 names and
512 subpages in the same situation cost what one does. Page contents are renamed by the bytes
they hold, so the byte a write stores only matters where two stores meet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from cowlab.mm.constants import PG_swapcache
from cowlab.mm.ksm import RmapItem, checksum_of
from cowlab.mm.mm import heads_of
from cowlab.mm.mm_types import AnonVma, MmStruct
from cowlab.mm.page_alloc import FIELDS, PageFrames, RowField
from cowlab.mm.pgtable import HugePmd, PteTable

if TYPE_CHECKING:
    from cowlab.kernel import Process
    from cowlab.scenario.runner import Runner

Ints = npt.NDArray[np.int64]
RENAMED = ("mapping", "private", "content")  # frame fields holding names, renamed below


class Names:
    """First-appearance numbering of one kind of name (anon_vmas, contents)."""

    def __init__(self) -> None:
        self.ids: dict[object, int] = {}

    def __call__(self, key: object) -> int:
        return self.ids.setdefault(key, len(self.ids) + 1)


def state_key(runner: Runner, base: int, scans: bool = True) -> bytes:
    """The canonical form of the runner's machine and its oracle, as a 16-byte digest
    (addresses relative to `base`, the start of the searched region); with `scans`, the order
    ksmd and khugepaged visit the processes in too (alphabet.scans_by_pid)."""
    h = hashlib.sha256()  # 2x blake2b on this machine (its CPU has the SHA extensions)
    procs = _ordered(runner)
    order = _frame_order(runner, procs)
    rename = np.full(runner.k.frames.nr, -1, dtype=np.int64)
    rename[order] = np.arange(order.size)
    slots = _slot_order(runner, procs)
    contents = Names()
    anon_vmas = Names()
    nodes = Names()  # KSM stable nodes, in the stable tree's order (stable_tree_search's)
    for node_id in runner.k.ksm.nodes:
        nodes(node_id)
    for _name, proc in procs:
        h.update(_process(proc, base, rename, slots, anon_vmas))
    h.update(_frames(runner, order, rename, slots, contents, anon_vmas, nodes))
    h.update(_pins(runner, procs, rename, base))
    h.update(_oracle(runner, procs, base, contents))
    h.update(_swap(runner, slots, contents))
    h.update(_ksm(runner, procs, base, rename, anon_vmas, nodes, contents))
    if scans:
        h.update(repr(_scan_order(procs)).encode())
    h.update(repr(sorted(runner.broken)).encode())
    h.update(repr(runner.crashed_at is None).encode())
    return h.digest()[:16]


def _ordered(runner: Runner) -> list[tuple[str, Process]]:
    """The live processes, in an order that does not depend on pids or creation order."""
    live = [(name, p) for name, p in runner.procs.items() if p.alive]
    if len(live) < 2:  # one order only: no shape to tell it by
        return live
    return sorted(live, key=lambda item: _shape(item[1].mm))


def _shape(mm: MmStruct) -> bytes:
    """What a process maps, without the names of the pages (ties keep creation order)."""
    h = hashlib.blake2b(digest_size=8)
    for vma in mm.vmas:
        h.update(repr((vma.vm_start, vma.vm_end, vma.vm_flags)).encode())
    for idx in sorted(mm.pmds):
        entry = mm.pmds[idx]
        if isinstance(entry, HugePmd):
            h.update(repr((idx, entry.write, entry.dirty, entry.huge_zero)).encode())
        else:
            h.update(idx.to_bytes(8, "little"))
            h.update((entry.pfn >= 0).tobytes() + (entry.pfn <= -2).tobytes())
            h.update(entry.bits.tobytes())
    return h.digest()


def _reached(runner: Runner, procs: list[tuple[str, Process]]) -> Ints:
    """Every pfn the page tables, pins and swap cache reach, in traversal order (repeats kept)."""
    parts: list[Ints] = []
    for _name, proc in procs:
        for idx in sorted(proc.mm.pmds):
            entry = proc.mm.pmds[idx]
            if isinstance(entry, HugePmd):
                parts.append(np.array([entry.pfn], dtype=np.int64))
            else:
                parts.append(entry.pfn[entry.pfn >= 0])
    parts += [np.asarray(pin.pages, dtype=np.int64) for pin in runner.pins.values()]
    swap = runner.k.swap
    if swap.nr:  # a slot was handed out: the swap cache may hold a page
        cached = swap.cache[: swap.nr]
        parts.append(cached[cached >= 0])
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _runs(values: npt.NDArray[Any]) -> tuple[list[int], Ints]:
    """values as runs of one value: (each run's value, its length). A THP's 512 frames are
    mostly one run, so what is done per run costs what a few pages do."""
    if not values.size:
        return [], np.zeros(0, np.int64)
    bounds = np.concatenate(([0], (values[1:] != values[:-1]).nonzero()[0] + 1, [values.size]))
    return values[bounds[:-1]].tolist(), bounds[1:] - bounds[:-1]


def _first_seen(values: Ints) -> Ints:
    """The distinct values, in the order they first appear."""
    return np.array(list(dict.fromkeys(_runs(values)[0])), dtype=np.int64)


def _frame_order(runner: Runner, procs: list[tuple[str, Process]]) -> Ints:
    """Every frame the state holds, whole folios, in canonical order: the folios reached
    first come first, then the allocated frames nothing reaches (a leak), by pfn. One
    compound_head lookup for both: the allocated pfns ascend, so do their heads."""
    f = runner.k.frames
    heads = _first_seen(heads_of(f, np.concatenate((_reached(runner, procs), f.allocated()))))
    sizes = 1 << f.order[heads].astype(np.int64)
    if sizes.size and sizes.max() == 1:  # small pages only: each folio is its head
        return heads
    starts = np.repeat(heads, sizes)
    offsets = np.arange(starts.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return (starts + offsets).astype(np.int64)


def _slot_order(runner: Runner, procs: list[tuple[str, Process]]) -> dict[int, int]:
    """Swap slots renamed by where the swap PTEs, then the swap cache, first reach them. None
    before the first slot is handed out (SwapInfo.nr): a swap PTE or a swap-cache page names
    a slot get_swap_page gave."""
    swap = runner.k.swap
    if not swap.nr:
        return {}
    parts: list[Ints] = []
    for _name, proc in procs:
        for idx in sorted(proc.mm.pmds):
            entry = proc.mm.pmds[idx]
            if isinstance(entry, PteTable):
                parts.append(-2 - entry.pfn[entry.pfn <= -2])
    parts.append(np.flatnonzero(swap.cache[: swap.nr] >= 0))
    slots = _first_seen(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    return {int(s): i for i, s in enumerate(slots.tolist())}


def _process(
    proc: Process, base: int, rename: Ints, slots: dict[int, int], anon_vmas: Names
) -> bytes:
    mm = proc.mm
    out = [repr((mm.anon_rss, mm.swapents, mm.has_pinned)).encode()]
    for vma in mm.vmas:
        chain = tuple(_anon_vma(a, anon_vmas) for a in vma.anon_vma_chain)
        av = None if vma.anon_vma is None else _anon_vma(vma.anon_vma, anon_vmas)
        out.append(repr((vma.vm_start - base, vma.vm_end - base, vma.vm_flags)).encode())
        out.append(repr((av, chain)).encode())
    for idx in sorted(mm.pmds):
        entry = mm.pmds[idx]
        if isinstance(entry, HugePmd):
            fields = (entry.write, entry.dirty, entry.young, entry.soft_dirty, entry.protnone)
            head = -1 if entry.huge_zero else int(rename[entry.pfn])
            out.append(repr((idx - (base >> 21), "pmd", head, entry.huge_zero, fields)).encode())
            continue
        pfns = entry.pfn.copy()
        present = pfns >= 0
        pfns[present] = rename[pfns[present]]
        swapped = pfns <= -2
        if slots:  # no swap PTE without a slot
            pfns[swapped] = [-2 - slots[int(-2 - v)] for v in pfns[swapped].tolist()]
        out.append(repr(idx - (base >> 21)).encode() + pfns.tobytes() + entry.bits.tobytes())
    return b"".join(out)


def _anon_vma(av: AnonVma, names: Names) -> tuple[int, int, int, int]:
    root = av.root if av.root is not None else av
    parent = av.parent if av.parent is not None else av
    return names(av.id), names(root.id), names(parent.id), av.degree


def _frames(
    runner: Runner,
    order: Ints,
    rename: Ints,
    slots: dict[int, int],
    contents: Names,
    anon_vmas: Names,
    nodes: Names,
) -> bytes:
    """Every field of every held frame, in canonical order, names renamed (page->mapping: an
    anon_vma, or minus a KSM page's stable node). A row field (page_alloc.RowField) as the
    held frames whose row holds other than the free value: what its array over them says,
    without an array of free values."""
    f = runner.k.frames
    out, rows = [], []
    for name in FIELDS:
        if name in RENAMED:
            continue
        field = getattr(f, name)
        if isinstance(field, RowField):
            rows.append(_row_values(field, rename))
        else:
            out.append(field[order].tobytes())
    known = runner.k.anon_vmas
    mapping = _renamed(
        f.mapping[order], lambda m: anon_vmas(m) if m in known else -nodes(-m) if m < 0 else m
    )
    blobs = _renamed(f.content[order], lambda c: contents(f.blobs.data[c]))
    deferred = sorted(int(rename[p]) for p in runner.k.deferred_split)
    out += [mapping.tobytes(), blobs.tobytes()]
    swap_private = _private(f, order, rename, slots)
    out.append(repr((rows, swap_private, deferred, f.huge_zero_refcount)).encode())
    return b"".join(out)


def _row_values(field: RowField, rename: Ints) -> list[tuple[int, object]]:
    """(canonical place, value) of each held frame whose row holds other than the free value,
    by place: the same as field.scattered(rename, n), the free value everywhere else. Values as
    Python ints: a row keeps what it was given, a NumPy integer or an int, and the key is the
    repr of these lists."""
    held = []
    for pfn, row in field.row.items():
        at = pfn + field.page
        if at < rename.size and rename[at] >= 0:
            data = field.data[row]
            value = int(data) if field.width == 1 else tuple(map(int, data))
            if value != field.free_value:
                held.append((int(rename[at]), value))
    return sorted(held)


def _private(f: PageFrames, order: Ints, rename: Ints, slots: dict[int, int]) -> list[object]:
    """page->private where it is not 0: a swap-cache page's slot, renamed (a row field, so
    0 at every frame without a row)."""
    cached = (f.flags[order] & PG_swapcache) != 0
    if not (f.private.row or cached.any()):
        return []
    private = f.private.scattered(rename, order.size)
    if cached.any():
        private[cached] = _renamed(private[cached], lambda p: slots.get(p, -1))
    at = private.nonzero()[0]
    return list(zip(at.tolist(), private[at].tolist(), strict=True))


def _renamed(values: npt.NDArray[Any], name_of: Callable[[int], int]) -> Ints:
    """values with each distinct value v replaced by name_of(v), called in the order the
    values first appear (so first-appearance names come out canonical)."""
    runs, lengths = _runs(values)
    names: dict[int, int] = {}
    for v in runs:
        if v not in names:
            names[v] = name_of(v)
    return np.repeat(np.array([names[v] for v in runs], dtype=np.int64), lengths)


def _pins(runner: Runner, procs: list[tuple[str, Process]], rename: Ints, base: int) -> bytes:
    rank = {p.pid: i for i, (_name, p) in enumerate(procs)}
    out = []
    for pin in runner.pins.values():
        held = pin.id in runner.k.pins
        pages = rename[np.asarray(pin.pages, dtype=np.int64)].tolist() if held else []
        who = (rank.get(pin.pid, -1), pin.flavour, pin.write, pin.gup_flags)
        out.append(repr((who, pin.addr - base, pin.length, held, pages)).encode())
    return b"".join(out)


def _oracle(runner: Runner, procs: list[tuple[str, Process]], base: int, contents: Names) -> bytes:
    """What each process and pin is owed, contents renamed as the frames' are."""
    logical = runner.logical
    detached = Names()  # which detached pin pages are one page: a name per identity
    out = []
    for name, _proc in procs:
        owed = logical.pages.get(name, {})
        out.append(repr([(va - base, contents(_trim(owed[va]))) for va in sorted(owed)]).encode())
    for name in runner.pins:
        view = logical.pins.get(name)
        mirror = logical.pin_pages.get(name, {})
        target = (
            [] if view is None else [(t - base if t >= 0 else -1) for t in view.target.tolist()]
        )
        pages = [(i, contents(_trim(mirror[i]))) for i in sorted(mirror)]
        lags = logical.lagging.get(name, {})
        lagging = [(i, sorted(contents(b) for b in lags[i])) for i in sorted(lags)]
        aliases = [(i, detached(same)) for (pin, i), same in logical.aliases.items() if pin == name]
        out.append(repr((target, pages, lagging, sorted(aliases))).encode())
    return b"".join(out)


def _trim(page: bytes) -> bytes:
    """A page as the content store keeps it: without its trailing zeros."""
    return page.rstrip(b"\0")


def _scan_order(procs: list[tuple[str, Process]]) -> list[int]:
    """The order ksmd and khugepaged visit the processes (by pid: ksm_do_scan, khugepaged_scan),
    as places in the canonical order: who is scanned first decides which page of two becomes
    the KSM page, and whether a failed second merge copies the first (break_cow)."""
    return sorted(range(len(procs)), key=lambda i: procs[i][1].pid)


def _swap(runner: Runner, slots: dict[int, int], contents: Names) -> bytes:
    """Each named slot's swap count (swap_map: do_swap_page reuses a page whose count is 1)
    and what the device holds there (a swap-in reads it once the swap cache has let go).
    Slots no swap PTE or swap-cache page reaches are free: swap_entry_free dropped their
    bytes. Which free slot get_swap_page hands out next only names it."""
    swap = runner.k.swap
    out = []
    for slot, name in sorted(slots.items(), key=lambda item: item[1]):
        data = swap.data.get(slot)
        owed = 0 if data is None else contents(_trim(data))
        out.append((name, int(swap.swap_map[slot]), owed))
    return repr(out).encode()


def _ksm(
    runner: Runner,
    procs: list[tuple[str, Process]],
    base: int,
    rename: Ints,
    anon_vmas: Names,
    nodes: Names,
    contents: Names,
) -> bytes:
    """ksmd's state (mm/ksm.c, ksm.py): every rmap_item by (process, address) with its last
    checksum (6.11+ merges only a page unchanged for a pass, d58a361b0350) and stable node,
    each stable node's page and items in order, and the `unreached` pairs. A checksum is
    named by the bytes it digests where the state holds them, else -1: bytes no page holds
    now come back only from a later store, whose tag (search.Program.then) differs from every
    earlier one's in a program of up to 26 letters. The unstable tree is emptied at every
    pass; next_id and full_scans only name or count."""
    ksm = runner.k.ksm
    if not (ksm.items or ksm.nodes or ksm.unreached):
        return b""
    rank = {p.pid: i for i, (_name, p) in enumerate(procs)}
    sums = {
        checksum_of(page): name for page, name in contents.ids.items() if isinstance(page, bytes)
    }

    def item_key(item: RmapItem) -> tuple[int, int]:
        return rank.get(item.pid, -1), item.addr - base

    items = []
    for item in sorted(ksm.items.values(), key=item_key):
        digest = 0 if item.oldchecksum is None else sums.get(item.oldchecksum, -1)
        av = None if item.anon_vma is None else _anon_vma(item.anon_vma, anon_vmas)
        node = nodes(item.node) if item.node else 0
        items.append((item_key(item), digest, av, node))
    stable = [
        (nodes(node.id), int(rename[node.kpfn]), [item_key(i) for i in node.items])
        for node in ksm.nodes.values()
    ]
    unreached = sorted((rank.get(pid, -1), addr - base) for pid, addr in ksm.unreached)
    return repr((items, stable, unreached)).encode()
