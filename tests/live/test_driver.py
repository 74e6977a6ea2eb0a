"""The driver itself: outcomes and errors come back, and every worker is always reaped."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest

from cowlab.errors import Segfault, SyscallError
from cowlab.live.driver import LiveCleanupError, LiveMachine, _Device
from tests.live.helpers import (
    HPAGE,
    PAGE,
    needs_live_kernel,
    pmd_thp,
    record_local_drains,
    small_pages,
)

pytestmark = needs_live_kernel


def _gone(pids: list[int]) -> bool:
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_a_bad_access_kills_the_worker_after_the_bytes_before_it() -> None:
    """SIGSEGV's default action: the stores before the faulting page happen, then the process
    dies and exit_mmap unmaps everything it mapped (as the model's Process.write)."""
    with LiveMachine() as m:
        p = m.spawn()
        addr = small_pages(p, 2)
        p.write(addr + PAGE, b"shared")
        pin = p.get_user_pages(addr, PAGE)  # io_uring: the pin outlives the process
        c = p.fork()  # the pinned page 0 is copied for the child, page 1 is shared
        assert m.snapshot([(c, addr + PAGE, PAGE)]).regions[str(c.pid)][0].mapcount == 2
        p.mprotect(addr + PAGE, PAGE, "r")
        with pytest.raises(Segfault) as info:
            p.write(addr + PAGE - 2, b"abcd")
        assert (info.value.addr, info.value.done, info.value.killed) == (addr + PAGE, 2, True)
        assert not p.alive and _gone([p.pid])
        assert pin.dma_read(PAGE - 2, 2) == b"ab"  # the stores before the fault happened
        assert m.snapshot([(c, addr + PAGE, PAGE)]).regions[str(c.pid)][0].mapcount == 1
        with pytest.raises(SyscallError) as gone:
            p.read(addr, 1)
        assert gone.value.errno == "ESRCH"
        assert c.read(addr + PAGE, 6) == b"shared"
        pin.unpin()


def test_a_read_of_unmapped_memory_kills_the_worker_too() -> None:
    with LiveMachine() as m:
        p = m.spawn()
        addr = small_pages(p, 1)
        p.munmap(addr, PAGE)
        with pytest.raises(Segfault) as info:
            p.read(addr, 1)
        assert info.value.killed and info.value.access == "read" and not p.alive


def test_errno_comes_back_as_syscall_error() -> None:
    with LiveMachine() as m:
        p = m.spawn()
        with pytest.raises(SyscallError) as info:
            p.munmap(PAGE + 1, PAGE)
        assert info.value.errno == "EINVAL"
        with pytest.raises(SyscallError, match="unknown advice"):
            p.madvise(PAGE, PAGE, "bogus")


def test_mremap_moves_pages() -> None:
    with LiveMachine() as m:
        p = m.spawn()
        addr = small_pages(p, 1)
        p.write(addr, b"move")
        dest = p.mmap(4 * PAGE)
        got = p.mremap(addr, PAGE, PAGE, fixed_addr=dest + PAGE)
        assert got == dest + PAGE and p.read(got, 4) == b"move"
        with pytest.raises(Segfault):
            p.read(addr, 1)


def test_a_crashed_worker_is_reported_and_reaped() -> None:
    with LiveMachine() as m:
        p = m.spawn()
        os.kill(p.pid, signal.SIGSEGV)
        with pytest.raises(Segfault):
            p.read(0x10000, 1)
        assert not p.alive and _gone([p.pid])


def test_workers_are_reaped_on_every_way_out() -> None:
    pids = []
    with pytest.raises(RuntimeError), LiveMachine() as m:
        parent = m.spawn()
        child = parent.fork()
        grandchild = child.fork()
        orphan = grandchild.fork()
        grandchild.exit()  # orphan is adopted by the zygote
        pids += [parent.pid, child.pid, grandchild.pid, orphan.pid]
        assert orphan.read(0x10000, 0) == b""
        assert m._popen is not None
        pids.append(m._popen.pid)
        raise RuntimeError("the driver fails mid-case")
    assert _gone(pids)


def test_exit_tears_the_address_space_down_before_returning() -> None:
    with LiveMachine() as m:
        p = m.spawn()
        addr = small_pages(p, 1)
        p.write(addr, b"x")
        c = p.fork()
        assert m.snapshot([(p, addr, PAGE)]).regions[str(p.pid)][0].mapcount == 2
        c.exit()
        assert m.snapshot([(p, addr, PAGE)]).regions[str(p.pid)][0].mapcount == 1
        with pytest.raises(SyscallError):
            c.read(addr, 1)


class _LeakyDevice(_Device):
    """A device whose release fails, as a leaked io_uring registration would."""

    def release(self) -> None:
        raise OSError(errno.EBADF, "release failed")


def test_a_failed_unpin_is_reported_after_every_worker_is_reaped() -> None:
    with LiveMachine() as m:
        p = m.spawn()
        addr = small_pages(p, 2)
        p.write(addr, b"x" * 2 * PAGE)
        good = p.get_user_pages(addr + PAGE, PAGE)
        bad = p.get_user_pages(addr, PAGE)
        real = bad.device
        bad.device = _LeakyDevice()
        c = p.fork()
        pids = [p.pid, c.pid]
        try:
            with pytest.raises(LiveCleanupError, match=f"pin {bad.id} .*release failed"):
                m.reset()
            assert not good.held and not m.pins  # the other pin was still released
            assert not m.processes and _gone(pids)  # and every worker reaped
        finally:
            real.release()


def _thp_enabled(pid: int) -> str:
    """/proc/PID/status THP_enabled: 0 while MMF_DISABLE_THP is set (PR_SET_THP_DISABLE)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line.split()[1] for line in status.splitlines() if line.startswith("THP_enabled"))


def test_khugepaged_is_fenced_off_between_commands_only() -> None:
    """Idle workers (being observed) are out of khugepaged's reach; commands see THP as set."""
    with LiveMachine() as m:
        p = m.spawn()
        assert _thp_enabled(p.pid) == "0"
        addr = pmd_thp(p)  # a write fault in MADV_HUGEPAGE memory still gets a PMD-mapped THP
        c = p.fork()
        # the child raised its own fence before fork() returned to the driver
        assert (_thp_enabled(p.pid), _thp_enabled(c.pid)) == ("0", "0")
        snap = m.snapshot([(p, addr, HPAGE), (c, addr, HPAGE)])
        assert {pg.level for pages in snap.regions.values() for pg in pages} == {"pmd"}


def test_the_driver_reads_pages_on_the_processes_cpu_and_drains_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A snapshot that reads bytes moves the driver to its processes' CPU for the reads and
    the drain of that CPU's batches (a read may queue the folio there: LiveMachine.reading),
    then gives it back its CPUs; one that reads no bytes stays where it is and drains none.
    By hand: the machine starts while the driver may run on the highest allowed CPU only, so
    its processes take that one; then the driver may run anywhere again."""
    drained_on = record_local_drains(monkeypatch)
    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {max(allowed)})
        with LiveMachine() as m:
            p = m.spawn()
            addr = small_pages(p, 1)
            p.write(addr, b"x")
            assert m.cpu == max(allowed)  # the zygote took the lowest of what the driver had
            os.sched_setaffinity(0, allowed)
            p.snapshot(addr, PAGE)
            m.snapshot([(p, addr, PAGE)])
            m.snapshot([(p, addr, PAGE)], read_bytes=False)
            assert drained_on == [{m.cpu}, {m.cpu}]
            assert os.sched_getaffinity(0) == allowed
    finally:
        os.sched_setaffinity(0, allowed)
