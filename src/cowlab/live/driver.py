"""The live machine: real processes, made by real fork(), driven with cowlab.kernel.Process's API.

``LiveMachine`` starts a zygote (``cowlab.live.worker.main``, a child subreaper); ``spawn()``
forks a worker from it and ``LiveProcess.fork()`` makes the worker fork itself. Every worker waits
on its own socket between commands, so the driver can observe it without perturbing it. Every
worker is killed and reaped on every way out of the ``with LiveMachine()`` block.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, NoReturn

from cowlab.errors import CowlabError, Segfault, SyscallError
from cowlab.kernel import parse_prot
from cowlab.live import observe, uring
from cowlab.live.swapdev import LocalLruDrain, LruDrain
from cowlab.live.system import KernelFacts, kernel_facts
from cowlab.live.worker import F_SETPIPE_SZ, recv_msg, send_msg
from cowlab.mm.madvise import MADV_BY_NAME
from cowlab.mm.mremap import mremap_flags

PAGE = 4096
SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438

PIN_KINDS = ("iouring", "vmsplice", "odirect")
# Not "python -m cowlab.live.worker": the package __init__ imports worker first (runpy warns).
# The zygote imports worker.py (standard library and ctypes only) without running the cowlab and
# cowlab.live package __init__s, which pull in NumPy and the whole model: every worker is a fork
# of the zygote, and a smaller process forks (and exits) faster.
ZYGOTE_MAIN = """
import sys, types
for name, path in (("cowlab", sys.argv[2]), ("cowlab.live", sys.argv[2] + "/live")):
    package = types.ModuleType(name)
    package.__path__ = [path]
    sys.modules[name] = package
from cowlab.live.worker import main
main()
"""
CRASH_SIGNALS = ("SIGSEGV", "SIGBUS")
PACKAGE_DIR = str(Path(__file__).resolve().parents[1])  # src/cowlab

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.tee.restype = ctypes.c_ssize_t
_libc.tee.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]


class LiveWorkerDied(CowlabError):
    """A worker died (or hung) in a way that is not a plain SIGSEGV outcome."""


class LiveWorkerBug(CowlabError):
    """The worker's Python code raised: a bug in cowlab.live, not a kernel outcome."""


class LiveCleanupError(CowlabError):
    """Cleanup finished, but some pin could not be released (a leaked ring or pipe)."""


def parse_advice(advice: str | int) -> int:
    """An MADV_* number from its lower-case name (without MADV_) or the number itself."""
    if isinstance(advice, int):
        return advice
    if advice not in MADV_BY_NAME:
        known = ", ".join(MADV_BY_NAME)
        raise SyscallError("EINVAL", f"madvise: unknown advice {advice!r} ({known})")
    return MADV_BY_NAME[advice]


def _syscall(nr: int, *args: int, what: str) -> int:
    rc = int(_libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args)))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


def grab_fd(pid: int, fd: int) -> int:
    """pidfd_getfd(): a copy of another process's fd (io_uring fds cannot travel SCM_RIGHTS)."""
    pidfd = _syscall(SYS_PIDFD_OPEN, pid, 0, what="pidfd_open")
    try:
        return _syscall(SYS_PIDFD_GETFD, pidfd, fd, 0, what="pidfd_getfd")
    finally:
        os.close(pidfd)


def _tmpfile() -> int:
    """An unnamed file on /var/tmp (ext4: O_DIRECT works there) that vanishes on close."""
    return os.open("/var/tmp", os.O_TMPFILE | os.O_RDWR, 0o600)


# --- the device side of pins -----------------------------------------------------------------


class _Device:
    """What holds a pin's pages and moves data through them: one subclass per pin kind."""

    def dma_read(self, addr: int, n: int) -> bytes:
        raise SyscallError("EOPNOTSUPP", f"{type(self).__name__} cannot read pinned pages")

    def dma_write(self, addr: int, data: bytes) -> None:
        raise SyscallError("EOPNOTSUPP", f"{type(self).__name__} cannot write pinned pages")

    def release(self) -> None:
        """Drop the pin (or reference)."""


class _IouringDevice(_Device):
    """A ring whose fixed buffer 0 is the pin; fixed I/O to a temp file goes through the pages."""

    def __init__(self, ring_fd: int, layout: dict[str, int]) -> None:
        self.fd = ring_fd
        self.ring = uring.Ring(ring_fd, layout)
        self.file = _tmpfile()

    def _io(self, op: int, addr: int, n: int) -> None:
        res = self.ring.submit_and_wait(op, self.file, 0, addr, n)
        if res < 0:
            raise SyscallError(_errname(-res), f"io_uring fixed I/O: {os.strerror(-res)}")
        if res != n:
            raise SyscallError("EIO", f"io_uring fixed I/O moved {res} of {n} bytes")

    def dma_read(self, addr: int, n: int) -> bytes:
        """IORING_OP_WRITE_FIXED: the kernel reads the pinned pages into the file."""
        self._io(uring.IORING_OP_WRITE_FIXED, addr, n)
        return os.pread(self.file, n, 0)

    def dma_write(self, addr: int, data: bytes) -> None:
        """IORING_OP_READ_FIXED: the kernel writes the file's bytes into the pinned pages."""
        os.pwrite(self.file, data, 0)
        self._io(uring.IORING_OP_READ_FIXED, addr, len(data))

    def release(self) -> None:
        """IORING_UNREGISTER_BUFFERS (unpin_user_pages), then close the ring."""
        try:
            uring.unregister_buffers(self.fd)
        finally:
            self.ring.close()
            os.close(self.fd)
            os.close(self.file)


class _VmspliceDevice(_Device):
    """Pipes holding page references from vmsplice(); tee() reads them without consuming."""

    def __init__(self, pipes: list[tuple[int, int]], start: int) -> None:
        self.pipes = pipes  # (read fd, bytes held), in address order
        self.start = start

    def _tee_read(self, fd: int, held: int) -> bytes:
        """tee() one pipe into a scratch pipe and read that: the referenced pages' bytes."""
        r, w = os.pipe()
        try:
            fcntl.fcntl(w, F_SETPIPE_SZ, int(Path("/proc/sys/fs/pipe-max-size").read_text()))
            got = int(_libc.tee(fd, w, held, 0))
            if got < 0:
                err = ctypes.get_errno()
                raise SyscallError(_errname(err), f"tee: {os.strerror(err)}")
            data = bytearray()
            while len(data) < got:
                data += os.read(r, got - len(data))
            return bytes(data)
        finally:
            os.close(r)
            os.close(w)

    def dma_read(self, addr: int, n: int) -> bytes:
        data = b"".join(self._tee_read(fd, held) for fd, held in self.pipes)
        off = addr - self.start
        return data[off : off + n]

    def release(self) -> None:
        for fd, _held in self.pipes:
            os.close(fd)


class _OdirectDevice(_Device):
    """O_DIRECT I/O done by the worker: a short-term pin of whatever it maps at DMA time."""

    def __init__(self, proc: LiveProcess, worker_fd: int, file_fd: int) -> None:
        self.proc = proc
        self.worker_fd = worker_fd
        self.file = file_fd

    def _require_worker(self) -> None:
        if not self.proc.alive:
            raise SyscallError("ESRCH", f"O_DIRECT pins need their process; {self.proc.pid} exited")

    def _to_file(self, lo: int, hi: int) -> None:
        """The device reads [lo, hi) of memory: pwrite(O_DIRECT) of those blocks to the file."""
        self.proc._call("odirect", self.worker_fd, lo, hi - lo, 0, False)

    def dma_read(self, addr: int, n: int) -> bytes:
        """pwrite(O_DIRECT) of the enclosing 4 KiB blocks, then read the file back."""
        self._require_worker()
        lo, hi = _blocks(addr, n)
        self._to_file(lo, hi)
        return os.pread(self.file, n, addr - lo)

    def dma_write(self, addr: int, data: bytes) -> None:
        """pread(O_DIRECT) of whole 4 KiB blocks; partial blocks are read-modify-written."""
        self._require_worker()
        lo, hi = _blocks(addr, len(data))
        if (lo, hi) != (addr, addr + len(data)):
            self._to_file(lo, hi)
        os.pwrite(self.file, data, addr - lo)
        self.proc._call("odirect", self.worker_fd, lo, hi - lo, 0, True)

    def gup(self, addr: int, n: int, write: bool) -> None:
        """One short-term pin of the blocks, as get_user_pages would take it: out, then back in.

        pwrite(O_DIRECT) pins for reading (unsharing shared anonymous pages); for write, the
        bytes just written out are read back in, so the pages take the write fault while their
        contents stay as they were.
        """
        self._require_worker()
        lo, hi = _blocks(addr, n)
        self._to_file(lo, hi)
        if write:
            self.proc._call("odirect", self.worker_fd, lo, hi - lo, 0, True)

    def release(self) -> None:
        if self.proc.alive:
            self.proc._call("drop_pin", self.worker_fd)
        os.close(self.file)


def _blocks(addr: int, n: int) -> tuple[int, int]:
    """The 4 KiB-aligned span around [addr, addr+n): O_DIRECT needs aligned I/O."""
    return addr & ~(PAGE - 1), (addr + n + PAGE - 1) & ~(PAGE - 1)


def _errname(err: int) -> str:
    return errno.errorcode.get(err, "EIO")


@dataclass(eq=False)
class LivePin:
    """Pages a device holds after get_user_pages(): dma_read/dma_write go through them."""

    machine: LiveMachine
    id: int
    pid: int
    addr: int
    length: int
    write: bool
    kind: str
    device: _Device = field(repr=False)
    held: bool = True

    def _check(self, offset: int, n: int) -> None:
        if not self.held:
            raise SyscallError("EINVAL", f"pin {self.id} was released")
        if offset < 0 or n < 0 or offset + n > self.length:
            raise SyscallError("EINVAL", f"DMA [{offset}, {offset + n}) outside pin {self.id}")

    def dma_write(self, offset: int, data: bytes) -> None:
        """The device writes into the pinned physical pages."""
        if not self.write:
            raise SyscallError("EFAULT", f"pin {self.id} is read-only: the device cannot write")
        self._check(offset, len(data))
        self.device.dma_write(self.addr + offset, bytes(data))

    def dma_read(self, offset: int, n: int) -> bytes:
        """The device reads the pinned physical pages."""
        self._check(offset, n)
        return self.device.dma_read(self.addr + offset, n)

    def unpin(self) -> None:
        """Release the pin (io_uring unregister, pipe close, ...)."""
        self.machine.unpin(self)


class LiveProcess:
    """A real process under test, with cowlab.kernel.Process's system-call API."""

    def __init__(
        self, machine: LiveMachine, pid: int, sock: socket.socket, parent: LiveProcess | None
    ) -> None:
        self.machine = machine
        self.pid = pid
        self.sock = sock
        self.parent = parent
        self.alive = True

    def __repr__(self) -> str:
        return f"LiveProcess(pid={self.pid}{'' if self.alive else ', exited'})"

    # --- the wire ------------------------------------------------------------------------

    def _call(self, cmd: str, *args: Any, fds: list[int] | None = None) -> Any:
        """Send one command and wait for its reply; a dead worker is reaped and reported."""
        if not self.alive:
            raise SyscallError("ESRCH", f"pid {self.pid} has exited")
        reply = self._reply(cmd, args, lambda: send_msg(self.sock, (cmd, args), fds))
        if reply[0] == "segv":
            # the worker dies of it (worker.die_of_sigsegv): wait until its mm is gone
            how, what = self.machine._reap(self)
            if (how, what) != ("signaled", "SIGSEGV"):
                raise LiveWorkerDied(f"pid {self.pid} was to die of SIGSEGV, but {how} {what}")
            raise Segfault(reply[1], reply[2], reply[3], killed=True)
        return _unpack(reply)

    def _died(self, cmd: str, args: tuple[Any, ...]) -> NoReturn:
        """EOF on the socket: reap the worker and say how it died."""
        how, what = self.machine._reap(self)
        if how == "signaled" and what in CRASH_SIGNALS:
            addr = args[0] if args and isinstance(args[0], int) else 0
            raise Segfault(addr, "write" if cmd == "write" else "read", killed=True)
        raise LiveWorkerDied(f"pid {self.pid} died during {cmd}: {how} {what}")

    def _reply(self, cmd: str, args: tuple[Any, ...], send: Callable[[], None]) -> Any:
        """send(), then the worker's reply; a hung worker is killed, a dead one reaped."""
        try:
            send()
            msg = recv_msg(self.sock)
        except TimeoutError:
            self.machine._kill(self)
            raise LiveWorkerDied(f"pid {self.pid} did not answer {cmd} in time") from None
        except (BrokenPipeError, ConnectionResetError):
            msg = None
        if msg is None:
            self._died(cmd, args)
        return msg[0]

    def _ready(self) -> None:
        """Wait for a new worker's first message: its khugepaged fence is up (worker.serve)."""
        _unpack(self._reply("start", (), lambda: None))

    def _require_alive(self) -> None:
        if not self.alive:
            raise SyscallError("ESRCH", f"pid {self.pid} has exited")

    # --- address space -------------------------------------------------------------------

    def mmap(
        self, length: int, prot: str | int = "rw", *, align: int = 0, addr: int | None = None
    ) -> int:
        """mmap(MAP_PRIVATE|MAP_ANONYMOUS); align gives an aligned start, addr means MAP_FIXED."""
        if length <= 0:
            raise SyscallError("EINVAL", "mmap: length must be positive")
        if align and (align & (align - 1) or align % PAGE):
            raise SyscallError(
                "EINVAL", f"mmap: align {align:#x} is not a power-of-two page multiple"
            )
        return int(self._call("mmap", length, parse_prot(prot), align, addr))

    def munmap(self, addr: int, length: int) -> None:
        """munmap()."""
        self._call("munmap", addr, length)

    def mprotect(self, addr: int, length: int, prot: str | int) -> None:
        """mprotect()."""
        self._call("mprotect", addr, length, parse_prot(prot))

    def mremap(
        self,
        addr: int,
        old_length: int,
        new_length: int,
        *,
        may_move: bool = False,
        fixed_addr: int | None = None,
    ) -> int:
        """mremap(); fixed_addr means MREMAP_MAYMOVE|MREMAP_FIXED to that address."""
        flags = mremap_flags(may_move, fixed_addr)
        return int(self._call("mremap", addr, old_length, new_length, flags, fixed_addr))

    def madvise(self, addr: int, length: int, advice: str | int) -> None:
        """madvise(): 'dontneed', 'hugepage', 'collapse', 'pageout', ... or an MADV_* number."""
        self._call("madvise", addr, length, parse_advice(advice))

    def clear_refs(self, value: int = 4) -> None:
        """echo VALUE > /proc/PID/clear_refs (4 = soft-dirty; a no-op without MEM_SOFT_DIRTY)."""
        self._require_alive()
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text(str(value))
        except OSError as e:
            raise SyscallError(_errname(e.errno or 0), f"clear_refs {value}: {e}") from None

    # --- processes -----------------------------------------------------------------------

    def fork(self) -> LiveProcess:
        """fork() in the worker itself; the child serves a fresh socket from the driver."""
        return self.machine._fork_from(self)

    def exit(self) -> None:
        """exit(): the worker leaves, is reaped, so its mm is gone when this returns."""
        self._call("exit")
        self.machine._reap(self)

    # --- memory access -------------------------------------------------------------------

    def write(self, addr: int, data: bytes) -> None:
        """Stores by the worker's CPU. A bad access stores the bytes before the faulting page,
        then SIGSEGV kills the worker (as the model's Process.write): Segfault(killed=True)."""
        self._call("write", addr, bytes(data))

    def read(self, addr: int, n: int) -> bytes:
        """Loads by the worker's CPU (a read of untouched memory maps the zero page); a bad
        access kills the worker, as for write()."""
        return bytes(self._call("read", addr, n))

    # --- the device side -----------------------------------------------------------------

    def get_user_pages(
        self,
        addr: int,
        length: int,
        *,
        write: bool = True,
        force: bool = False,
        pin_kind: str = "iouring",
    ) -> LivePin:
        """A pin of [addr, addr+length): io_uring fixed buffer, vmsplice refs, or O_DIRECT."""
        return self.machine._pin(self, addr, length, write, force, pin_kind)

    # --- khugepaged ----------------------------------------------------------------------

    def open_fence(self) -> None:
        """Let khugepaged scan this process until close_fence() (worker.khugepaged_fence)."""
        self._call("open_fence")

    def close_fence(self) -> None:
        """Any command raises the fence again when it ends; a collapse under way ends first."""
        self._call("ping")

    # --- observation ---------------------------------------------------------------------

    def snapshot(self, addr: int, length: int, *, exact: bool = False) -> observe.Snapshot:
        """observe.snapshot() of one range of this process alone (named by its pid), read on
        the processes' CPU, whose batches are drained after (LiveMachine.reading)."""
        with self.machine.reading():
            return observe.snapshot([(str(self.pid), self.pid, addr, length)], exact=exact)

    def translate(self, addr: int) -> int | None:
        """The PFN addr maps now, without faulting (pagemap), or None."""
        self._require_alive()
        entry = int(observe.read_pagemap(self.pid, addr - addr % PAGE, 1)[0])
        return entry & observe.PM_PFN_MASK if entry >> observe.PM_PRESENT & 1 else None


def _unpack(reply: tuple[Any, ...]) -> Any:
    """A worker reply as a value or the exception the model would raise."""
    kind = reply[0]
    if kind == "ok":
        return reply[1]
    if kind == "err":
        raise SyscallError(reply[1], reply[2])
    raise LiveWorkerBug(reply[1])


class LiveMachine:
    """Real processes on the running kernel; use as ``with LiveMachine() as m: p = m.spawn()``."""

    def __init__(
        self, *, timeout: float = 30.0, handle_sigterm: bool = True, cpu_index: int = 0
    ) -> None:
        """cpu_index: the zygote and every process it forks run on the cpu_index-th CPU this
        process may run on (counting round, worker.one_cpu); 0 is the lowest."""
        self.timeout = timeout
        self.cpu_index = cpu_index
        self.handle_sigterm = handle_sigterm
        self.processes: dict[int, LiveProcess] = {}
        self.pins: dict[int, LivePin] = {}
        self._pin_ids = itertools.count(1)
        self._zygote: LiveProcess | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._old_sigterm: Any = None
        self.facts: KernelFacts | None = None
        self._drain: LruDrain | None = None
        self._drain_here: LocalLruDrain | None = None
        self.cpu: int | None = None  # the CPU of the zygote and every process it forks

    def drain_lru(self) -> None:
        """Every CPU's per-CPU folio batches drained (swapdev.LruDrain), so that no reference
        they hold decides what reclaim does next."""
        if self._drain is None:
            self._drain = LruDrain()
        self._drain()

    # --- lifetime ------------------------------------------------------------------------

    def __enter__(self) -> LiveMachine:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the zygote (a fresh interpreter: small, no inherited fds or threads)."""
        if self._zygote is not None:
            return
        self.facts = kernel_facts()
        mine, theirs = socket.socketpair()
        src = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
        try:
            self._popen = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    ZYGOTE_MAIN,
                    str(theirs.fileno()),
                    PACKAGE_DIR,
                    str(self.cpu_index),
                ],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            theirs.close()
        mine.settimeout(self.timeout)
        self._zygote = LiveProcess(self, self._popen.pid, mine, None)
        self._zygote._call("ping")  # it has taken its CPU (worker.main) before it answers
        self.cpu = min(os.sched_getaffinity(self._popen.pid))
        self._install_sigterm()

    def close(self) -> None:
        """Kill every worker, release every pin, reap everything, stop the zygote. Idempotent.

        Cleanup runs to the end whatever fails; a pin that could not be released is reported
        afterwards (LiveCleanupError)."""
        try:
            failures = self._release_pins()
            for proc in list(self.processes.values()):
                self._kill(proc, reap=False)
            self._stop_zygote()
        finally:
            self._remove_sigterm()
            for drain in (self._drain, self._drain_here):
                if drain is not None:
                    drain.close()
            self._drain = self._drain_here = None
        _raise_failures(failures)

    def reset(self) -> None:
        """Release every pin and kill and reap every worker; the zygote stays for the next case.

        As close(): every worker is reaped even if a pin fails to release, then that is raised."""
        failures = self._release_pins()
        for proc in list(self.processes.values()):
            self._kill(proc)
        _raise_failures(failures)

    def _release_pins(self) -> list[str]:
        """Release every held pin; the failures, one line each (the rest are still released)."""
        failures = []
        for pin in list(self.pins.values()):
            try:
                self.unpin(pin)
            except Exception as e:  # collected, raised once everything is cleaned up
                failures.append(f"pin {pin.id} ({pin.kind}, pid {pin.pid}): {e!r}")
        return failures

    def _stop_zygote(self) -> None:
        zygote, popen = self._zygote, self._popen
        self._zygote = self._popen = None
        if zygote is None or popen is None:
            return
        try:
            if zygote.alive:
                zygote._call("reap_all")
                zygote._call("exit")
        except (CowlabError, OSError):
            popen.kill()
        finally:
            zygote.sock.close()
            try:
                popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()

    def _install_sigterm(self) -> None:
        """SIGTERM becomes SystemExit so that the with-block's cleanup runs."""
        if not self.handle_sigterm:
            return
        with contextlib.suppress(ValueError):  # not the main thread
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                self._old_sigterm = signal.signal(signal.SIGTERM, _sigterm_to_exit)

    def _remove_sigterm(self) -> None:
        if self._old_sigterm is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    # --- processes -----------------------------------------------------------------------

    def spawn(self) -> LiveProcess:
        """A new worker with a (nearly) empty test address space, forked by the zygote."""
        if self._zygote is None:
            self.start()
        assert self._zygote is not None
        return self._fork_from(self._zygote)

    def _fork_from(self, proc: LiveProcess) -> LiveProcess:
        proc._require_alive()
        mine, theirs = socket.socketpair()
        try:
            pid = int(proc._call("fork", fds=[theirs.fileno()]))
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        mine.settimeout(self.timeout)
        parent = None if proc is self._zygote else proc
        child = LiveProcess(self, pid, mine, parent)
        self.processes[pid] = child
        child._ready()
        return child

    def _reap(self, proc: LiveProcess) -> tuple[str, Any]:
        """waitpid() by whoever is the parent now: the parent worker, else the zygote."""
        proc.alive = False
        proc.sock.close()
        self.processes.pop(proc.pid, None)
        reaper = proc.parent if proc.parent is not None and proc.parent.alive else self._zygote
        if reaper is None:
            return "unknown", None
        how, what = reaper._call("reap", proc.pid)
        return str(how), what

    def _kill(self, proc: LiveProcess, *, reap: bool = True) -> None:
        """SIGKILL by pid (safe: nothing reaps a worker behind the driver's back)."""
        if proc.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            if reap:
                with contextlib.suppress(CowlabError, OSError):
                    self._reap(proc)
            else:
                proc.alive = False
                proc.sock.close()
                self.processes.pop(proc.pid, None)

    # --- pins ----------------------------------------------------------------------------

    def _pin(
        self, proc: LiveProcess, addr: int, length: int, write: bool, force: bool, kind: str
    ) -> LivePin:
        proc._require_alive()
        if length <= 0:
            raise SyscallError("EINVAL", "get_user_pages: length must be positive")
        if kind not in PIN_KINDS:
            raise SyscallError("EINVAL", f"pin_kind {kind!r} (expected one of {PIN_KINDS})")
        if kind == "iouring" and (not write or force):
            raise SyscallError(
                "EINVAL",
                "io_uring registers buffers with FOLL_WRITE and without FOLL_FORCE only; "
                "use pin_kind='vmsplice' for read-only page references",
            )
        device = _make_device(proc, kind, addr, length)
        write = write and kind != "vmsplice"  # pipe references are read-only for the device
        pin = LivePin(self, next(self._pin_ids), proc.pid, addr, length, write, kind, device)
        self.pins[pin.id] = pin
        return pin

    def unpin(self, pin: LivePin) -> None:
        """Release a pin (put the pages back)."""
        if not pin.held or self.pins.pop(pin.id, None) is None:
            raise SyscallError("EINVAL", f"pin {pin.id} is not held")
        pin.held = False
        pin.device.release()

    # --- observation ---------------------------------------------------------------------

    def snapshot(
        self,
        regions: Sequence[tuple[LiveProcess, int, int]]
        | Mapping[str, tuple[LiveProcess, int, int]],
        *,
        exact: bool = False,
        read_bytes: bool = True,
    ) -> observe.Snapshot:
        """observe.snapshot() of (process, addr, length) regions, named by pid or by dict key;
        each process tells by mincore() which of its swap PTEs have a swap-cache page. Bytes
        are read on the processes' CPU, whose batches are drained after (reading)."""
        named = list(
            regions.items()
            if isinstance(regions, Mapping)
            else ((str(r[0].pid), r) for r in regions)
        )
        spec = [(name, p.pid, a, n) for name, (p, a, n) in named]
        procs = {p.pid: p for _name, (p, _a, _n) in named}

        def mincore(pid: int, addr: int, pages: int) -> bytes:
            return bytes(procs[pid]._call("mincore", addr, pages))

        with self.reading() if read_bytes else contextlib.nullcontext():
            return observe.snapshot(spec, exact=exact, read_bytes=read_bytes, mincore=mincore)

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """The driver on the processes' CPU while it reads their pages' bytes, and until it has
        drained that CPU's folio batches (after_reading); its own CPUs back afterwards."""
        mask = os.sched_getaffinity(0)
        here = {self.cpu} if self.cpu is not None else mask
        if here != mask:
            os.sched_setaffinity(0, here)  # returns once this thread runs there
        try:
            yield
            self.after_reading()
        finally:
            if here != mask:
                os.sched_setaffinity(0, mask)

    def after_reading(self) -> None:
        """lru_add_drain() on the CPU the driver read page bytes on, through /proc/PID/mem
        (6.18.2, gfunkmonk/linux-6.18.2@062668f4d006): each read is a GUP with FOLL_TOUCH,
        which marks the folio accessed (folio_mark_accessed); the second time, folio_activate
        queues it in the lru_activate batch of the CPU the read runs on, with a reference of
        its own. A write fault then sees that reference and copies (wp_can_reuse_anon_folio:
        the folio is still on the LRU, so not even the local batches are drained). A batch is
        filled only by its own CPU (__folio_batch_add_and_move: this_cpu_ptr), and the driver
        stays on one CPU from the reads to here (reading), so draining that CPU's batches
        (lru_add_drain_cpu -> folio_activate_drain: swapdev.LocalLruDrain) drops every such
        reference, without waiting for any other CPU."""
        if self._drain_here is None:
            self._drain_here = LocalLruDrain()
        self._drain_here()


def _make_device(proc: LiveProcess, kind: str, addr: int, length: int) -> _Device:
    """Have the worker take the pin, then move its fds into the driver."""
    if kind == "iouring":
        fd, layout = proc._call("pin_iouring", addr, length)
        try:
            return _IouringDevice(grab_fd(proc.pid, fd), layout)
        finally:
            proc._call("drop_pin", fd)
    if kind == "vmsplice":
        pipes = proc._call("pin_vmsplice", addr, length)
        try:
            return _VmspliceDevice([(grab_fd(proc.pid, fd), n) for fd, n in pipes], addr)
        finally:
            proc._call("drop_pin", pipes[0][0])
    file_fd = _tmpfile()
    worker_fd = proc._call("pin_odirect", f"/proc/{os.getpid()}/fd/{file_fd}")
    return _OdirectDevice(proc, worker_fd, file_fd)


def _raise_failures(failures: list[str]) -> None:
    if failures:
        raise LiveCleanupError("could not release: " + "; ".join(failures))


def _sigterm_to_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
