"""Pins and references on the live kernel: io_uring fixed buffers, vmsplice, O_DIRECT."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cowlab.errors import SyscallError
from cowlab.live.driver import LiveMachine
from tests.live.helpers import HPAGE, PAGE, needs_live_kernel, pmd_thp, small_pages

pytestmark = needs_live_kernel


@pytest.fixture
def machine() -> Iterator[LiveMachine]:
    with LiveMachine() as m:
        yield m


def test_iouring_pinned_page_is_copied_at_fork(machine: LiveMachine) -> None:
    """cow.c case 8 on 6.18: fork() copies a maybe-pinned page for the child right away."""
    p = machine.spawn()
    addr = small_pages(p, 1)
    p.write(addr, b"A")
    pin = p.get_user_pages(addr, PAGE)
    c = p.fork()
    snap = machine.snapshot([(p, addr, PAGE), (c, addr, PAGE)])
    mine, child = snap.regions[str(p.pid)][0], snap.regions[str(c.pid)][0]
    assert mine.folio == "F0" and mine.mapcount == 1 and mine.anon_exclusive is True
    assert child.folio == "F1" and child.mapcount == 1
    pin.dma_write(0, b"D")
    assert (p.read(addr, 1), c.read(addr, 1)) == (b"D", b"A")
    assert pin.dma_read(0, 1) == b"D"
    pin.unpin()


def test_iouring_pin_of_a_thp_then_fork(machine: LiveMachine) -> None:
    p = machine.spawn()
    addr = pmd_thp(p)
    pin = p.get_user_pages(addr, PAGE)
    c = p.fork()
    snap = machine.snapshot([(p, addr, HPAGE), (c, addr, HPAGE)])
    assert {pg.folio for pg in snap.regions[str(p.pid)]} == {"F0"}
    assert "F0" not in {pg.folio for pg in snap.regions[str(c.pid)]}
    pin.unpin()


def test_iouring_pin_outlives_its_process(machine: LiveMachine) -> None:
    p = machine.spawn()
    addr = small_pages(p, 1)
    p.write(addr, b"kept")
    pin = p.get_user_pages(addr, PAGE)
    p.exit()
    assert pin.dma_read(0, 4) == b"kept"
    pin.unpin()
    with pytest.raises(SyscallError):
        pin.dma_read(0, 4)


def test_vmsplice_reference_does_not_stop_sharing(machine: LiveMachine) -> None:
    p = machine.spawn()
    addr = small_pages(p, 1)
    p.write(addr, b"old")
    ref = p.get_user_pages(addr, PAGE, write=False, pin_kind="vmsplice")
    c = p.fork()
    snap = machine.snapshot([(p, addr, PAGE), (c, addr, PAGE)])
    assert snap.regions[str(p.pid)][0].folio == snap.regions[str(c.pid)][0].folio
    p.write(addr, b"new")
    assert ref.dma_read(0, 3) == b"old"  # the pipe keeps the page the parent no longer maps
    with pytest.raises(SyscallError):
        ref.dma_write(0, b"x")
    ref.unpin()


def test_vmsplice_of_a_whole_thp_spans_pipes(machine: LiveMachine) -> None:
    p = machine.spawn()
    addr = pmd_thp(p)
    p.write(addr + HPAGE - 3, b"end")
    ref = p.get_user_pages(addr, HPAGE, write=False, pin_kind="vmsplice")
    assert ref.dma_read(HPAGE - 3, 3) == b"end"
    ref.unpin()


def test_odirect_dma_round_trip(machine: LiveMachine) -> None:
    p = machine.spawn()
    addr = small_pages(p, 2)
    p.write(addr, b"x" * 2 * PAGE)
    pin = p.get_user_pages(addr, 2 * PAGE, pin_kind="odirect")
    pin.dma_write(PAGE + 10, b"device")
    assert p.read(addr + PAGE + 8, 10) == b"xxdevicexx"
    assert pin.dma_read(PAGE + 10, 6) == b"device"
    pin.unpin()


def test_iouring_refuses_read_only_pins(machine: LiveMachine) -> None:
    p = machine.spawn()
    addr = small_pages(p, 1)
    with pytest.raises(SyscallError, match="FOLL_WRITE"):
        p.get_user_pages(addr, PAGE, write=False)
