"""io_uring by raw system calls: a ring, fixed-buffer registration (a long-term pin) and fixed I/O.

io_uring_register(IORING_REGISTER_BUFFERS) pins the buffer's pages with
FOLL_WRITE|FOLL_PIN|FOLL_LONGTERM. IORING_OP_READ_FIXED/WRITE_FIXED then copy through the pinned
pages themselves (a bio_vec), whatever the process maps at those addresses now: that is how a
device sees memory. Only the standard library and ctypes are used (the worker imports this).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

SYS_IO_URING_SETUP = 425
SYS_IO_URING_ENTER = 426
SYS_IO_URING_REGISTER = 427
IORING_REGISTER_BUFFERS = 0
IORING_UNREGISTER_BUFFERS = 1
IORING_OP_READ_FIXED = 4
IORING_OP_WRITE_FIXED = 5
IORING_ENTER_GETEVENTS = 1
IORING_FEAT_SINGLE_MMAP = 1
IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000
SQE = struct.Struct("<BBHiQQIIQHHiQQ")  # struct io_uring_sqe, 64 bytes
CQE = struct.Struct("<QiI")  # struct io_uring_cqe: user_data, res, flags
MAP_POPULATE = 0x8000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class SqringOffsets(ctypes.Structure):
    """struct io_sqring_offsets."""

    _fields_ = (
        [(n, ctypes.c_uint32) for n in ("head", "tail", "ring_mask", "ring_entries")]
        + [(n, ctypes.c_uint32) for n in ("flags", "dropped", "array", "resv1")]
        + [("user_addr", ctypes.c_uint64)]
    )


class CqringOffsets(ctypes.Structure):
    """struct io_cqring_offsets."""

    _fields_ = (
        [(n, ctypes.c_uint32) for n in ("head", "tail", "ring_mask", "ring_entries")]
        + [(n, ctypes.c_uint32) for n in ("overflow", "cqes", "flags", "resv1")]
        + [("user_addr", ctypes.c_uint64)]
    )


class UringParams(ctypes.Structure):
    """struct io_uring_params (120 bytes): what io_uring_setup() fills in."""

    _fields_ = [
        ("sq_entries", ctypes.c_uint32),
        ("cq_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("sq_thread_cpu", ctypes.c_uint32),
        ("sq_thread_idle", ctypes.c_uint32),
        ("features", ctypes.c_uint32),
        ("wq_fd", ctypes.c_uint32),
        ("resv", ctypes.c_uint32 * 3),
        ("sq_off", SqringOffsets),
        ("cq_off", CqringOffsets),
    ]


class Iovec(ctypes.Structure):
    """struct iovec."""

    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def _syscall(nr: int, *args: object, what: str) -> int:
    rc = int(_libc.syscall(ctypes.c_long(nr), *args))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


def setup(entries: int = 4) -> tuple[int, dict[str, int]]:
    """io_uring_setup(): a ring fd and the offsets needed to map its rings elsewhere."""
    params = UringParams()
    fd = _syscall(
        SYS_IO_URING_SETUP, ctypes.c_uint(entries), ctypes.byref(params), what="io_uring_setup"
    )
    layout = {"sq_entries": params.sq_entries, "cq_entries": params.cq_entries}
    layout["features"] = params.features
    for prefix, off in (("sq_", params.sq_off), ("cq_", params.cq_off)):
        for name, _ in off._fields_:
            layout[prefix + name] = int(getattr(off, name))
    return fd, layout


def register_buffer(fd: int, addr: int, length: int) -> None:
    """IORING_REGISTER_BUFFERS of one iovec: pin_user_pages(FOLL_WRITE|FOLL_LONGTERM)."""
    iov = Iovec(addr, length)
    _syscall(
        SYS_IO_URING_REGISTER,
        ctypes.c_uint(fd),
        ctypes.c_uint(IORING_REGISTER_BUFFERS),
        ctypes.byref(iov),
        ctypes.c_uint(1),
        what="io_uring_register(REGISTER_BUFFERS)",
    )


def unregister_buffers(fd: int) -> None:
    """IORING_UNREGISTER_BUFFERS: unpin_user_pages() of every registered buffer."""
    _syscall(
        SYS_IO_URING_REGISTER,
        ctypes.c_uint(fd),
        ctypes.c_uint(IORING_UNREGISTER_BUFFERS),
        ctypes.c_void_p(0),
        ctypes.c_uint(0),
        what="io_uring_register(UNREGISTER_BUFFERS)",
    )


class Ring:
    """A ring mapped into *this* process (it may have been set up by another one)."""

    def __init__(self, fd: int, layout: dict[str, int]) -> None:
        self.fd = fd
        self.lay = layout
        sq_size = layout["sq_array"] + layout["sq_entries"] * 4
        cq_size = layout["cq_cqes"] + layout["cq_entries"] * CQE.size
        flags = mmap.MAP_SHARED | MAP_POPULATE
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        if layout["features"] & IORING_FEAT_SINGLE_MMAP:
            self.sq = mmap.mmap(fd, max(sq_size, cq_size), flags, prot, offset=IORING_OFF_SQ_RING)
            self.cq = self.sq
        else:
            self.sq = mmap.mmap(fd, sq_size, flags, prot, offset=IORING_OFF_SQ_RING)
            self.cq = mmap.mmap(fd, cq_size, flags, prot, offset=IORING_OFF_CQ_RING)
        self.sqes = mmap.mmap(
            fd, layout["sq_entries"] * SQE.size, flags, prot, offset=IORING_OFF_SQES
        )

    def _u32(self, buf: mmap.mmap, off: int) -> int:
        return int(struct.unpack_from("<I", buf, off)[0])

    def submit_and_wait(self, op: int, file_fd: int, file_off: int, addr: int, n: int) -> int:
        """One fixed-buffer read/write (buf_index 0), waited for; returns the CQE result."""
        lay = self.lay
        tail = self._u32(self.sq, lay["sq_tail"])
        idx = tail & self._u32(self.sq, lay["sq_ring_mask"])
        SQE.pack_into(
            self.sqes, idx * SQE.size, op, 0, 0, file_fd, file_off, addr, n, 0, 1, 0, 0, 0, 0, 0
        )
        struct.pack_into("<I", self.sq, lay["sq_array"] + idx * 4, idx)
        struct.pack_into("<I", self.sq, lay["sq_tail"], (tail + 1) & 0xFFFFFFFF)
        _syscall(
            SYS_IO_URING_ENTER,
            ctypes.c_uint(self.fd),
            ctypes.c_uint(1),
            ctypes.c_uint(1),
            ctypes.c_uint(IORING_ENTER_GETEVENTS),
            ctypes.c_void_p(0),
            ctypes.c_size_t(0),
            what="io_uring_enter",
        )
        head = self._u32(self.cq, lay["cq_head"])
        slot = head & self._u32(self.cq, lay["cq_ring_mask"])
        _data, res, _flags = CQE.unpack_from(self.cq, lay["cq_cqes"] + slot * CQE.size)
        struct.pack_into("<I", self.cq, lay["cq_head"], (head + 1) & 0xFFFFFFFF)
        return int(res)

    def close(self) -> None:
        """Unmap the rings (the fd is the caller's to close)."""
        for buf in {id(b): b for b in (self.sq, self.cq, self.sqes)}.values():
            buf.close()
