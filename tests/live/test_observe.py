"""What the kernel shows for THPs and small pages, observed from outside the workers."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from cowlab.live import observe
from cowlab.live.compare import noise
from cowlab.live.driver import LiveMachine
from cowlab.live.system import kernel_facts
from tests.live.helpers import HPAGE, PAGE, needs_live_kernel, pmd_thp, small_pages

pytestmark = needs_live_kernel


@pytest.fixture
def machine() -> Iterator[LiveMachine]:
    with LiveMachine() as m:
        yield m


def test_pmd_thp_is_one_folio_of_512_subpages(machine: LiveMachine) -> None:
    p = machine.spawn()
    addr = pmd_thp(p)
    pages = p.snapshot(addr, HPAGE).regions[str(p.pid)]
    assert [pg.folio for pg in pages] == ["F0"] * 512
    assert [pg.subpage for pg in pages] == list(range(512))
    assert {(pg.level, pg.mapcount, pg.anon_exclusive) for pg in pages} == {("pmd", 1, True)}
    assert pages[0].head == b"x" + bytes(7)


def test_fork_shares_the_thp_with_mapcount_2(machine: LiveMachine) -> None:
    p = machine.spawn()
    addr = pmd_thp(p)
    c = p.fork()
    snap = machine.snapshot([(p, addr, HPAGE), (c, addr, HPAGE)])
    for pages in snap.regions.values():
        assert {(pg.folio, pg.level, pg.mapcount) for pg in pages} == {("F0", "pmd", 2)}
        assert pages[0].anon_exclusive is False


def test_parent_write_after_fork_maps_a_new_folio(machine: LiveMachine) -> None:
    p = machine.spawn()
    addr = pmd_thp(p)
    c = p.fork()
    p.write(addr + PAGE, b"parent")
    snap = machine.snapshot([(p, addr, HPAGE), (c, addr, HPAGE)])
    mine, child = snap.regions[str(p.pid)], snap.regions[str(c.pid)]
    assert mine[1].folio not in (None, "F0") and mine[1].mapcount == 1
    assert mine[1].anon_exclusive is True
    assert child[1].folio == "F0" and child[1].head == bytes(8)
    assert c.read(addr + PAGE, 6) == bytes(6) and p.read(addr + PAGE, 6) == b"parent"


def test_read_fault_maps_the_huge_zero_page(machine: LiveMachine) -> None:
    if kernel_facts().thp_use_zero_page != "1":
        pytest.skip("transparent_hugepage/use_zero_page is off")
    p = machine.spawn()
    addr = p.mmap(HPAGE, align=HPAGE)
    p.madvise(addr, HPAGE, "hugepage")
    assert p.read(addr, 1) == b"\0"
    pages = p.snapshot(addr, HPAGE).regions[str(p.pid)]
    if pages[0].folio != "HZ":
        pytest.skip("no huge zero page was mapped (allocation failed)")
    assert {(pg.folio, pg.level, pg.zero) for pg in pages} == {("HZ", "pmd", True)}


def test_small_pages_zero_page_then_private_copies(machine: LiveMachine) -> None:
    p = machine.spawn()
    addr = small_pages(p, 3)
    p.read(addr, 1)
    p.write(addr + PAGE, b"a")
    pages = p.snapshot(addr, 3 * PAGE).regions[str(p.pid)]
    assert [pg.folio for pg in pages] == ["Z", "F0", None]
    assert pages[1].key() == ("F0", 0, "pte", 1, True, False, False, None)
    assert pages[1].pm_exclusive is True


def test_labels_follow_first_sight_and_exact_bytes(machine: LiveMachine) -> None:
    p = machine.spawn()
    addr = small_pages(p, 2)
    p.write(addr + PAGE, b"b")
    p.write(addr, b"a")
    snap = p.snapshot(addr, 2 * PAGE, exact=True)
    pages = snap.regions[str(p.pid)]
    assert [pg.folio for pg in pages] == ["F0", "F1"]
    assert pages[0].data == b"a" + bytes(PAGE - 1)
    assert snap.pfns["F0"] != snap.pfns["F1"]


def _moving_pagemap(monkeypatch: pytest.MonkeyPatch, changed_reads: set[int]) -> list[int]:
    """read_pagemap whose Nth reads (1-based) return entries that differ from the real ones."""
    real = observe.read_pagemap
    calls: list[int] = []

    def read(pid: int, at: int, n: int) -> observe.U64:
        calls.append(len(calls) + 1)
        entries = real(pid, at, n)
        return entries ^ np.uint64(1) if len(calls) in changed_reads else entries

    monkeypatch.setattr(observe, "read_pagemap", read)
    return calls


def test_a_snapshot_torn_by_a_page_table_change_is_taken_again(
    machine: LiveMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page freed between the pagemap and the kpagecount read would show mapcount 0: the
    pagemap is read again at the end, and a change means the whole snapshot is taken again."""
    p = machine.spawn()
    addr = small_pages(p, 1)
    p.write(addr, b"a")
    calls = _moving_pagemap(monkeypatch, {2})  # read 2 is the check after the first attempt
    snap = p.snapshot(addr, PAGE)
    assert snap.stable and len(calls) == 4  # two attempts, each read and checked
    assert snap.regions[str(p.pid)][0].key() == ("F0", 0, "pte", 1, True, False, False, None)


def test_pages_that_never_hold_still_make_the_case_inconclusive(
    machine: LiveMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = machine.spawn()
    addr = small_pages(p, 1)
    p.write(addr, b"a")
    _moving_pagemap(monkeypatch, set(range(2, 2 * observe.STABLE_TRIES + 1, 2)))
    snap = p.snapshot(addr, PAGE)
    assert not snap.stable
    assert "kept changing" in noise(snap, snap, {}, {})
