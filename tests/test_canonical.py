"""The canonical state (check/canonical.py) holds everything a later letter reads: two machines
that differ in one such piece get different keys, two that differ only in the names of things
(pids kept in order, stable node ids) the same key."""

from __future__ import annotations

import numpy as np

from cowlab.check.alphabet import REGION, letters, roots
from cowlab.check.canonical import state_key
from cowlab.check.search import Program, _live, clone, run_program
from cowlab.mm.constants import PAGE_SIZE
from cowlab.mm.ksm import RmapItem, checksum, ksm_do_scan
from cowlab.mm.mm import PageKsm
from cowlab.scenario.runner import Runner

KERNEL = "v6.18"


def program(*names: str) -> Program:
    """The root named names[0], then the full alphabet's letters named by the rest."""
    out = Program((), ()).then(next(r for r in roots() if r.name == names[0]))
    for name in names[1:]:
        runner = run_program(KERNEL, out)
        offered = letters(_live(runner), list(out.pins), "full")
        out = out.then(next(x for x in offered if x.name == name))
    return out


def key(runner: Runner) -> bytes:
    return state_key(runner, runner.regions[REGION])


def mergeable() -> Runner:
    """P maps 4 KiB pages, stores 1s to pages 0 and 1 (the same bytes) and marks them
    mergeable: ksmd has not looked at them yet."""
    return run_program(KERNEL, program("map 4K, write pages 0-1", "P marks mergeable"))


def _item(runner: Runner, page: int) -> RmapItem:
    pid = runner.procs["P"].pid
    addr = runner.regions[REGION] + page * PAGE_SIZE
    return RmapItem(pid, addr)


def _pfn(runner: Runner, page: int) -> int:
    pfn = runner.procs["P"].translate(runner.regions[REGION] + page * PAGE_SIZE)
    assert pfn is not None
    return pfn


def test_an_rmap_item_and_its_checksum_are_in_the_key() -> None:
    """An item with the page's checksum, one with another checksum, none: three states. One
    pass of ksmd tells them apart (6.11+ cmp_and_merge_page, d58a361b0350: a page merges only
    once its checksum is unchanged for a pass): with both items' checksums current, page 0
    goes into the unstable tree and page 1, the same bytes, merges with it; without items the
    pass only records the checksums."""
    plain = mergeable()
    current, stale = clone(plain), clone(plain)
    for page in (0, 1):
        item = _item(current, page)
        item.oldchecksum = checksum(current.k, _pfn(current, page))
        current.k.ksm.items[(item.pid, item.addr)] = item
        other = _item(stale, page)
        other.oldchecksum = b"\xff" * 8
        stale.k.ksm.items[(other.pid, other.addr)] = other
    assert len({key(plain), key(current), key(stale)}) == 3
    for runner, merges in ((plain, 0), (current, 2), (stale, 0)):
        assert ksm_do_scan(runner.k, scans=1) == merges
        assert PageKsm(runner.k.frames, _pfn(runner, 0)) == bool(merges)


def test_stable_node_ids_and_pids_in_order_are_names() -> None:
    """The same machine with its stable nodes numbered afresh and its pids moved up (their
    order kept) has the same key."""
    runner = run_program(KERNEL, program("map 4K, write pages 0-1", "P marks mergeable", "ksmd"))
    assert runner.k.ksm.nodes, "two pages of the same bytes merged into one KSM page"
    renamed = clone(runner)
    _renumber_nodes(renamed, 100)
    _renumber_pids(renamed, lambda pid: pid + 10)
    assert key(renamed) == key(runner)


def test_stable_node_chains_and_unreached_pairs_are_in_the_key() -> None:
    """After ksmd merged pages 0 and 1, the stable node lists both rmap_items (rmap_walk_ksm
    finds the mappings through them): the node without page 1's item, or page 1 recorded as
    a mapping no item reaches (KsmState.unreached), are other states."""
    runner = run_program(KERNEL, program("map 4K, write pages 0-1", "P marks mergeable", "ksmd"))
    (node,) = runner.k.ksm.nodes.values()
    assert len(node.items) == 2
    shorter, unreached = clone(runner), clone(runner)
    (short,) = shorter.k.ksm.nodes.values()
    short.items.pop()
    item = _item(unreached, 1)
    unreached.k.ksm.unreached.add((item.pid, item.addr))
    assert len({key(runner), key(shorter), key(unreached)}) == 3


def test_the_order_ksmd_visits_processes_is_in_the_key() -> None:
    """P and its child swapped in pid order (everything else the same): ksm_do_scan and
    khugepaged_scan visit processes by pid, and which of two equal pages ksmd scans second
    becomes the KSM page."""
    runner = run_program(KERNEL, program("map 4K, write pages 0-1, fork", "P marks mergeable"))
    swapped = clone(runner)
    pids = sorted(swapped.k.processes)
    _renumber_pids(swapped, lambda pid: pids[1 - pids.index(pid)])
    assert key(swapped) != key(runner)


def test_swap_counts_and_swapped_bytes_are_in_the_key() -> None:
    """After P swaps out, each slot's swap count and the bytes the device holds there are
    what a swap-in reads (do_swap_page: the count decides reuse; the bytes are the page)."""
    runner = run_program(KERNEL, program("map 4K, write pages 0-1", "P swaps out"))
    swap = runner.k.swap
    slot = min(swap.data)
    counted, written = clone(runner), clone(runner)
    counted.k.swap.swap_map[slot] += 1
    written.k.swap.data[slot] = b"\x02"
    assert len({key(runner), key(counted), key(written)}) == 3


def _renumber_nodes(runner: Runner, offset: int) -> None:
    ksm, f = runner.k.ksm, runner.k.frames
    nodes = list(ksm.nodes.values())
    ksm.nodes.clear()
    for node in nodes:
        node.id += offset
        ksm.nodes[node.id] = node
        f.mapping[node.kpfn] = -node.id
        for item in node.items:
            item.node = node.id


def _renumber_pids(runner: Runner, new: object) -> None:
    assert callable(new)
    k = runner.k
    procs = list(k.processes.values())
    k.processes.clear()
    for proc in procs:
        proc.pid = proc.mm.pid = new(proc.pid)
        k.processes[proc.pid] = proc
    for pin in k.pins.values():
        pin.pid = new(pin.pid)
    items = list(k.ksm.items.values())
    k.ksm.items.clear()
    for item in items:
        item.pid = new(item.pid)
        k.ksm.items[(item.pid, item.addr)] = item
    k.ksm.unreached = {(new(pid), addr) for pid, addr in k.ksm.unreached}


def test_each_row_field_of_a_held_folio_is_in_the_key() -> None:
    """A row field (page_alloc.RowField) at a THP that P maps is keyed by its value: every
    folio field, the one in page[1] (compound_mapcount) and the two-slot ones included, moved
    off its value gives another state, and moved back the same. A row holding the free value
    is keyed as no row: the field reads the same at that frame either way."""
    runner = run_program(KERNEL, program("map THP, write pages 0-1"))
    f = runner.k.frames
    head = int(f.folios.sorted()[0][0])
    before = key(runner)
    for field in f.folios.fields:
        pfn = head + field.page
        changed = clone(runner)
        moved = changed.k.frames.folios.fields[f.folios.fields.index(field)]
        value = moved[pfn] if moved.width == 1 else list(moved[pfn])
        if moved.width == 1:
            moved[pfn] = value + 1
        else:
            moved[pfn, 1] = value[1] + 1
        assert key(changed) != before, f"a row field at page[{field.page}] of the THP"
        moved[pfn] = value
        assert key(changed) == before
    small = run_program(KERNEL, program("map 4K, write pages 0-1"))
    rows = clone(small)
    rows.k.frames.folios.add(_pfn(rows, 0))  # rows of free values at a held frame
    rows.k.frames.swapcache.add(_pfn(rows, 1))
    assert key(rows) == key(small)


def test_a_row_field_is_keyed_by_its_value_not_its_type() -> None:
    """A row may hold a NumPy integer where another run stored a Python int of the same value
    (RowField keeps what it is given; a value computed from a frame array is np.int64): the
    same state, the same key - for the one-slot fields and the two-slot ones alike."""
    runner = run_program(KERNEL, program("map THP, write pages 0-1"))
    f = runner.k.frames
    head = int(f.folios.sorted()[0][0])
    before = key(runner)
    for i, field in enumerate(f.folios.fields):
        numpy = clone(runner)
        moved = numpy.k.frames.folios.fields[i]
        value = moved[head + field.page]
        moved[head + field.page] = np.asarray(value, dtype=np.int64)[()]
        assert key(numpy) == before, f"a row field at page[{field.page}] holding np.int64"


def test_a_swap_cache_page_s_slot_is_in_the_key() -> None:
    """page->private of a page in the swap cache names its slot (renamed as the slots are):
    another slot is another state."""
    runner = run_program(KERNEL, program("map 4K, write pages 0-1"))
    runner.procs["P"].swapout(runner.regions[REGION], 2 * PAGE_SIZE, until="swapcache")
    swap, f = runner.k.swap, runner.k.frames
    cached = int(np.flatnonzero(swap.cache[: swap.nr] >= 0)[0])
    pfn = int(swap.cache[cached])
    other = clone(runner)
    other.k.frames.private[pfn] = cached + 100
    assert key(other) != key(runner)
    assert f.private[pfn] == cached
