"""A swap device for live runs: a swap file on this machine's disk, made and undone again.

The model's swap device is a swap file on a rotational disk, and so is this one: the kernel splits
a THP before it swaps it (no swap clusters on a swap file) and writes asynchronously, so after
MADV_PAGEOUT a dirty page stays in the swap cache under writeback, then clean, until memory
pressure frees it — the model's `until: written` once the writes are done (wait_for_writeback).
The file is made only through SystemChanges (the journal records it before it exists) and undone
by undo_swapfile(): swapoff, then delete.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

SWAPFILE = "/var/tmp/cowlab-swapfile"
DEFAULT_SIZE = 256 << 20
PAGE = 4096
SWAP_FLAG_PREFER = 0x8000
KPF_WRITEBACK = 8
WRITEBACK_TIMEOUT_S = 10.0

_libc = ctypes.CDLL(None, use_errno=True)


def active_swaps() -> list[str]:
    """The swap areas in use (/proc/swaps)."""
    try:
        lines = Path("/proc/swaps").read_text().splitlines()[1:]
    except OSError:
        return []
    return [line.split()[0] for line in lines if line.strip()]


def swapfile_problem(path: str = SWAPFILE) -> str | None:
    """Why our swap file cannot be made, or None."""
    if os.path.exists(path):
        return f"{path} already exists (another run's?): cowlab leaves it alone"
    return None


def swap_header(size: int) -> bytes:
    """The first page of a version-1 swap area (what mkswap writes): version, last page, no bad
    pages, a UUID and a label, and the SWAPSPACE2 signature at the end of the page."""
    info = (1).to_bytes(4, "little") + (size // PAGE - 1).to_bytes(4, "little")
    info += (0).to_bytes(4, "little") + uuid.uuid4().bytes + b"cowlab".ljust(16, b"\0")
    page = bytearray(PAGE)
    page[1024 : 1024 + len(info)] = info
    page[PAGE - 10 :] = b"SWAPSPACE2"
    return bytes(page)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def make_swapfile(path: str = SWAPFILE, size: int = DEFAULT_SIZE) -> None:
    """Write a swap file without holes (zeros, then the header), mode 0600, and swapon it at the
    highest priority."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        chunk = bytes(1 << 20)
        for offset in range(0, size, len(chunk)):
            os.pwrite(fd, chunk, offset)
        os.pwrite(fd, swap_header(size), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    _check(_libc.swapon(path.encode(), SWAP_FLAG_PREFER | 32767), f"swapon {path}")


def undo_swapfile(path: str = SWAPFILE) -> None:
    """swapoff (if it is swapped on) and delete the file."""
    if path in active_swaps():
        _check(_libc.swapoff(path.encode()), f"swapoff {path}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def wait_for_writeback(pfns: Iterable[int], timeout: float = WRITEBACK_TIMEOUT_S) -> bool:
    """Poll /proc/kpageflags until none of the frames is under writeback; False on timeout."""
    pending = sorted(set(pfns))
    deadline = time.monotonic() + timeout
    with open("/proc/kpageflags", "rb") as f:
        while pending:
            flags = [int.from_bytes(os.pread(f.fileno(), 8, p * 8), "little") for p in pending]
            pending = [p for p, v in zip(pending, flags, strict=True) if v >> KPF_WRITEBACK & 1]
            if pending and time.monotonic() > deadline:
                return False
            if pending:
                time.sleep(0.001)
    return True
