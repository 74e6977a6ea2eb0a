"""The process under test: a small Python loop that makes system calls on the driver's command.

Run as ``main()`` with a socket fd in argv[1] it is the *zygote*: a child subreaper that forks the
workers (spawn), adopts their orphans and reaps everything at the end. Every worker serves one
socket; ``fork`` forks the worker itself and the child serves a socket the driver passed along.
Only the standard library and ctypes are imported, to keep the worker small.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import pickle
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from cowlab.live import uring

PAGE = 4096
MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x02, 0x10, 0x20
MAP_FAILED = 2**64 - 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_THP_DISABLE = 41
PR_SET_DUMPABLE = 4
F_SETPIPE_SZ = 1031
SPLICE_F_NONBLOCK = 2
HEADER = struct.Struct("<I")
REAP_DEADLINE_S = 5.0

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
libc.mmap.argtypes += [ctypes.c_int, ctypes.c_long]
libc.mremap.restype = ctypes.c_void_p
libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int]
libc.mremap.argtypes += [ctypes.c_void_p]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
for _name in ("mprotect", "madvise"):
    getattr(libc, _name).argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
libc.vmsplice.restype = ctypes.c_ssize_t
libc.vmsplice.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint]
libc.pread.restype = ctypes.c_ssize_t
libc.pread.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long]
libc.pwrite.restype = ctypes.c_ssize_t
libc.pwrite.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long]
libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4


class Segv(Exception):
    """The access takes SIGSEGV at addr after `done` bytes: the worker replies, then dies of it."""

    def __init__(self, addr: int, access: str, done: int) -> None:
        super().__init__(addr, access, done)
        self.addr = addr
        self.access = access
        self.done = done


def _fail(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


# --- framing: 4-byte length + pickle; fds ride SCM_RIGHTS on the header ---------------------


def send_msg(sock: socket.socket, obj: object, fds: list[int] | None = None) -> None:
    """One message; any fds travel with its first bytes."""
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    data = HEADER.pack(len(body)) + body
    if fds:
        sent = socket.send_fds(sock, [data], fds)
        data = data[sent:]
    if data:
        sock.sendall(data)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_msg(sock: socket.socket) -> tuple[Any, list[int]] | None:
    """One message and the fds that came with it, or None at EOF."""
    head, fds, _flags, _addr = socket.recv_fds(sock, HEADER.size, 4)
    if not head:
        return None
    rest = _recv_exact(sock, HEADER.size - len(head))
    if rest is None:
        return None
    body = _recv_exact(sock, HEADER.unpack(head + rest)[0])
    return None if body is None else (pickle.loads(body), list(fds))


# --- the address ranges the test owns (everything else is the worker's own Python) ---------


def _page_up(n: int) -> int:
    return (n + PAGE - 1) & ~(PAGE - 1)


def _ranges_remove(ranges: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    out = []
    for a, b in ranges:
        if b <= start or a >= end:
            out.append((a, b))
            continue
        if a < start:
            out.append((a, start))
        if b > end:
            out.append((end, b))
    return out


def _ranges_add(ranges: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted([*_ranges_remove(ranges, start, end), (start, end)]):
        if out and out[-1][1] == a:  # adjacent pieces are one range (for _covered)
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _self_maps() -> list[tuple[int, int, str]]:
    """(start, end, perms) of every VMA of this process, from /proc/self/maps."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            span, perms = line.split(None, 2)[:2]
            a, b = span.split("-")
            out.append((int(a, 16), int(b, 16), perms))
    return out


@dataclass
class Worker:
    """One process under test: its socket, the ranges it mapped and the pin resources it holds."""

    sock: socket.socket
    zygote: bool = False
    owned: list[tuple[int, int]] = field(default_factory=list)
    maps: list[tuple[int, int, str]] | None = None  # /proc/self/maps, until our next change
    pin_fds: dict[int, list[int]] = field(default_factory=dict)

    # --- access checks, so that a bad address is an outcome and not a dead worker -----------

    def _maps(self) -> list[tuple[int, int, str]]:
        """Our VMAs; the test ranges only change through our own commands, which drop the cache."""
        if self.maps is None:
            self.maps = _self_maps()
        return self.maps

    def _covered(self, addr: int, end: int) -> bool:
        return any(a <= addr and end <= b for a, b in self.owned)

    def _allowed_prefix(self, addr: int, n: int, write: bool) -> int:
        """How many bytes from addr the CPU may touch (access_error() of the fault handler)."""
        maps = self._maps()
        pos, end = addr, addr + n
        while pos < end:
            owned = next(((a, b) for a, b in self.owned if a <= pos < b), None)
            vma = next(((a, b, p) for a, b, p in maps if a <= pos < b), None)
            if owned is None or vma is None:
                break
            perms = vma[2]
            ok = "w" in perms if write else any(c in perms for c in "rwx")
            if not ok:
                break
            pos = min(end, owned[1], vma[1])
        return pos - addr

    def _refuse_foreign(self, addr: int, end: int, what: str) -> None:
        """Holes in [addr, end) go to the kernel as they are, but not the worker's own memory
        sitting in one: the call would change it, so it is refused like a MAP_FIXED onto it.
        Read afresh: the worker's own allocations since the last command may sit in a hole."""
        for a, b, _p in _self_maps():
            if a < end and addr < b and not self._covered(max(a, addr), min(b, end)):
                raise OSError(
                    errno.EEXIST, f"{what}: [{addr:#x}, {end:#x}) holds the worker's own memory"
                )

    def _check_fixed_target(self, addr: int, length: int) -> None:
        """MAP_FIXED must not land on the worker's own memory (that would kill the worker)."""
        end = addr + _page_up(length)
        for a, b, _p in self._maps():
            if a < end and addr < b and not self._covered(max(a, addr), min(b, end)):
                raise OSError(
                    errno.EEXIST, f"[{addr:#x}, {end:#x}) overlaps the worker's own memory"
                )

    # --- address space ------------------------------------------------------------------

    def mmap(self, length: int, prot: int, align: int = 0, addr: int | None = None) -> int:
        """mmap(MAP_PRIVATE|MAP_ANONYMOUS): over-map and trim for align; addr means MAP_FIXED."""
        length = _page_up(length)
        flags = MAP_PRIVATE | MAP_ANONYMOUS
        if addr is not None:
            self._check_fixed_target(addr, length)
            flags |= MAP_FIXED
            align = 0
        span = length + (align if align > PAGE else 0)
        got = libc.mmap(addr, span, prot, flags, -1, 0)
        if got is None or got == MAP_FAILED:
            raise _fail("mmap")
        start = got
        if span != length:
            start = (got + align - 1) & ~(align - 1)
            self._raw_munmap(got, start - got)
            self._raw_munmap(start + length, got + span - start - length)
        self.owned = _ranges_add(self.owned, start, start + length)
        return int(start)

    def _raw_munmap(self, addr: int, length: int) -> None:
        if length and libc.munmap(addr, length) != 0:
            raise _fail("munmap")

    def munmap(self, addr: int, length: int) -> None:
        """munmap(); the range stops being the test's."""
        if libc.munmap(addr, length) != 0:
            raise _fail("munmap")
        self.owned = _ranges_remove(self.owned, addr, addr + _page_up(length))

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        """mprotect()."""
        self._refuse_foreign(addr, addr + _page_up(length), "mprotect")
        if libc.mprotect(addr, length, prot) != 0:
            raise _fail("mprotect")

    def mremap(self, addr: int, old: int, new: int, flags: int, fixed: int | None) -> int:
        """mremap(flags MREMAP_MAYMOVE=1 | MREMAP_FIXED=2, new address); holes in the old
        range go to the kernel (a shrink or a 6.17+ move may span them, a grow is EFAULT)."""
        end = addr + _page_up(old)
        self._refuse_foreign(addr, end, "mremap")
        if fixed is not None:
            self._check_fixed_target(fixed, new)
        got = libc.mremap(addr, old, new, flags, fixed)
        if got is None or got == MAP_FAILED:
            raise _fail("mremap")
        kept = min(_page_up(old), _page_up(new))
        moved = [
            (max(a, addr) - addr, min(b, addr + kept) - addr)
            for a, b in self.owned
            if a < addr + kept and addr < b
        ]
        self.owned = _ranges_remove(self.owned, addr, end)
        for a, b in moved:  # only what was ours moves with it: holes stay holes
            self.owned = _ranges_add(self.owned, got + a, got + b)
        if new > old:
            self.owned = _ranges_add(self.owned, got + _page_up(old), got + _page_up(new))
        return int(got)

    def madvise(self, addr: int, length: int, advice: int) -> None:
        """madvise() with a raw MADV_* number."""
        if libc.madvise(addr, length, advice) != 0:
            raise _fail(f"madvise({advice})")

    def mincore(self, addr: int, pages: int) -> bytes:
        """mincore(): per page, bit 0 set if it is resident (for a swap PTE: its slot has an
        up-to-date swap-cache page). Observation only: nothing faults."""
        vec = (ctypes.c_ubyte * pages)()
        if libc.mincore(addr, pages * PAGE, vec) != 0:
            raise _fail("mincore")
        return bytes(vec)

    # --- memory access: the CPU's loads and stores ---------------------------------------

    def read(self, addr: int, n: int) -> bytes:
        """Loads (read faults map the zero page where nothing is mapped yet), in address order
        up to the first address that faults."""
        ok = self._allowed_prefix(addr, n, write=False)
        data = ctypes.string_at(addr, ok) if ok else b""
        if ok < n:
            raise Segv(addr + ok, "read", ok)
        return data

    def write(self, addr: int, data: bytes) -> None:
        """Stores, in address order, up to the first address that faults."""
        ok = self._allowed_prefix(addr, len(data), write=True)
        if ok:
            ctypes.memmove(addr, data, ok)
        if ok < len(data):
            raise Segv(addr + ok, "write", ok)

    # --- pins: resources are handed to the driver with pidfd_getfd, then closed here -------

    def pin_iouring(self, addr: int, length: int) -> tuple[int, dict[str, int]]:
        """A ring with the range registered as fixed buffer 0 (FOLL_WRITE|FOLL_PIN|LONGTERM)."""
        fd, layout = uring.setup()
        try:
            uring.register_buffer(fd, addr, length)
        except OSError:
            os.close(fd)
            raise
        self.pin_fds[fd] = [fd]
        return fd, layout

    def pin_vmsplice(self, addr: int, length: int) -> list[tuple[int, int]]:
        """vmsplice() the range into pipes: page references (FOLL_GET), not pins.

        Without CAP_SYS_RESOURCE a pipe holds at most pipe-max-size, so a long range fills
        several pipes, in order. Returns (read fd, bytes held) per pipe.
        """
        with open("/proc/sys/fs/pipe-max-size") as f:
            pipe_max = int(f.read())
        done, pipes, key = 0, [], None
        try:
            while done < length:
                r, w = os.pipe()
                key = r if key is None else key
                self.pin_fds.setdefault(key, []).extend([r, w])
                fcntl.fcntl(w, F_SETPIPE_SZ, pipe_max)
                held = self._vmsplice_some(w, addr + done, length - done)
                pipes.append((r, held))
                done += held
        except OSError:
            if key is not None:  # as get_user_pages' caller: a partial result is dropped
                self.drop_pin(key)
            raise
        return pipes

    def _vmsplice_some(self, w: int, addr: int, n: int) -> int:
        """vmsplice as much as one pipe takes (non-blocking: a full pipe says EAGAIN)."""
        held = 0
        while held < n:
            iov = uring.Iovec(addr + held, n - held)
            got = libc.vmsplice(w, ctypes.byref(iov), 1, SPLICE_F_NONBLOCK)
            if got < 0:
                if ctypes.get_errno() == errno.EAGAIN and held:
                    return held
                raise _fail("vmsplice")
            held += got
        return held

    def pin_odirect(self, path: str) -> int:
        """An O_DIRECT file for short-term pins taken at each DMA (pin_user_pages_fast)."""
        fd = os.open(path, os.O_RDWR | os.O_DIRECT)
        self.pin_fds[fd] = [fd]
        return fd

    def odirect(self, fd: int, addr: int, n: int, file_off: int, to_memory: bool) -> int:
        """pread (device writes memory) or pwrite (device reads memory) with O_DIRECT."""
        call = libc.pread if to_memory else libc.pwrite
        got = int(call(fd, addr, n, file_off))
        if got < 0:
            raise _fail("O_DIRECT pread" if to_memory else "O_DIRECT pwrite")
        return got

    def drop_pin(self, key: int) -> None:
        """Close this worker's copies of a pin's fds (the driver holds its own)."""
        for fd in self.pin_fds.pop(key, []):
            with contextlib.suppress(OSError):
                os.close(fd)

    # --- processes -----------------------------------------------------------------------

    def reap(self, pid: int) -> tuple[str, int | str]:
        """waitpid(pid): ('exited', code) or ('signaled', 'SIGSEGV')."""
        _pid, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            return "signaled", signal.Signals(os.WTERMSIG(status)).name
        return "exited", os.WEXITSTATUS(status)

    def reap_all(self) -> list[int]:
        """Reap every child (and adopted orphan) until none is left; kill stragglers late."""
        reaped: list[int] = []
        deadline = time.monotonic() + REAP_DEADLINE_S
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return reaped
            if pid:
                reaped.append(pid)
                continue
            if time.monotonic() > deadline:
                _kill_children(os.getpid())
            time.sleep(0.002)

    def ping(self) -> int:
        return os.getpid()

    def open_fence(self) -> None:
        """Nothing to do: serve() leaves the khugepaged fence down after this command, until the
        next one (a forced khugepaged scan runs in between)."""

    def fork_child(self, fds: list[int]) -> int:
        """fork(): the child serves the socket that came with the command."""
        pid = os.fork()
        if pid == 0:
            self._become_child(fds[0])
        os.close(fds[0])
        return pid

    def _become_child(self, fd: int) -> None:
        """In the fork child: drop the parent's socket and pin fds, serve the new socket."""
        try:
            self.sock.close()
            for key in list(self.pin_fds):
                self.drop_pin(key)
            self.sock = socket.socket(fileno=fd)
            self.zygote = False
            serve(self, announce=True)
        finally:
            os._exit(0)


def _kill_children(ppid: int) -> None:
    """SIGKILL every process whose parent is ppid (scan of /proc/*/stat)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == ppid:
            with contextlib.suppress(OSError):
                os.kill(int(entry), signal.SIGKILL)


CHANGES_MAPS = frozenset({"mmap", "munmap", "mprotect", "mremap", "madvise"})
COMMANDS: dict[str, Callable[..., Any]] = {
    name: getattr(Worker, name)
    for name in [
        "mmap",
        "munmap",
        "mprotect",
        "mremap",
        "madvise",
        "mincore",
        "read",
        "write",
        "pin_iouring",
        "pin_vmsplice",
        "pin_odirect",
        "odirect",
        "drop_pin",
        "reap",
        "reap_all",
        "ping",
        "open_fence",
    ]
}


def _run(worker: Worker, cmd: str, args: tuple[Any, ...], fds: list[int]) -> tuple[Any, ...]:
    """Run one command; errors become replies ('err', errno name, message) or ('segv', ...)."""
    if cmd in CHANGES_MAPS:
        worker.maps = None
    try:
        if cmd == "fork":
            return ("ok", worker.fork_child(fds))
        return ("ok", COMMANDS[cmd](worker, *args))
    except Segv as e:
        return ("segv", e.addr, e.access, e.done)
    except OSError as e:
        name = errno.errorcode.get(e.errno or 0, "EIO")
        return ("err", name, str(e))
    except Exception:
        return ("bug", traceback.format_exc())
    finally:
        if cmd in CHANGES_MAPS:
            worker.maps = None


def khugepaged_fence(up: bool) -> None:
    """prctl(PR_SET_THP_DISABLE): up between commands, down while one runs.

    While it is up, MMF_DISABLE_THP makes khugepaged skip this mm (and drop it from its scan
    list): it cannot collapse the test's pages behind the scenario's back, and in particular not
    while the driver observes them (a collapse in the middle of a snapshot tears it). The prctl
    takes mmap_lock for writing, so a collapse already running has finished when it returns. It
    is down whenever the worker itself runs a command, so every fault, madvise, fork and pin sees
    the THP settings the scenario asked for; between commands nothing in this process faults.
    """
    if libc.prctl(PR_SET_THP_DISABLE, int(up), 0, 0, 0) != 0:
        raise _fail("prctl(PR_SET_THP_DISABLE)")


def serve(worker: Worker, announce: bool = False) -> None:
    """Serve commands until EOF (the driver is gone) or exit.

    A fork child announces itself once its fence is up, so that the driver observes nothing
    before it is (the parent's reply to fork comes before the child has run at all).
    """
    khugepaged_fence(True)
    if announce:
        send_msg(worker.sock, ("ok", "ready"))
    while True:
        msg = recv_msg(worker.sock)
        if msg is None:
            if worker.zygote:
                worker.reap_all()
            return
        (cmd, args), fds = msg
        if cmd == "exit":
            send_msg(worker.sock, ("ok", None))
            if worker.zygote:
                worker.reap_all()
            return
        khugepaged_fence(False)
        reply = _run(worker, cmd, args, fds)
        if cmd != "open_fence":
            khugepaged_fence(True)
        send_msg(worker.sock, reply)
        if reply[0] == "segv":
            die_of_sigsegv()


def die_of_sigsegv() -> NoReturn:
    """What the kernel does to a program without a SIGSEGV handler: the default action kills
    it (do_exit, so exit_mmap tears its address space down). The worker checked the access
    instead of taking the fault (the address may hold its own memory), so it sends itself the
    signal; PR_SET_DUMPABLE 0 first, so no core is dumped."""
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    signal.signal(signal.SIGSEGV, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGSEGV)
    os._exit(128 + signal.SIGSEGV)  # not reached


def one_cpu(index: int) -> int:
    """The index-th CPU (wrapping around) of those this process may run on, in number order."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[index % len(allowed)]


def main() -> None:
    """The zygote: subreaper for every worker, deaf to the terminal's SIGINT, and on one CPU
    with all its workers (argv[3]: which of the allowed CPUs, one_cpu). A page faulted in waits
    in that CPU's folio batches, holding a reference, and the kernel's own drains before a
    decision that counts references are that CPU's alone (6.18 wp_can_reuse_anon_folio,
    madvise_pageout: lru_add_drain()), so a fault on another CPU could make a write copy a page
    the model reuses, or leave it off the LRU and unswappable (docs/live.md, "Several cases at
    a time": why each LiveMachine of `--jobs` may take a CPU of its own)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    os.sched_setaffinity(0, {one_cpu(int(sys.argv[3]))})
    sock = socket.socket(fileno=int(sys.argv[1]))
    try:
        serve(Worker(sock, zygote=True))
    finally:
        os._exit(0)


if __name__ == "__main__":
    main()
