"""Swap areas for live runs, one per kind of the scenario's `config: swap_device`, made and undone.

* `file`: a swap file on this machine's disk (rotational). 6.18 allocates no large swap entries on
  a swap file (cluster_alloc_swap_entry() wants SWP_BLKDEV), so a THP is split before it is
  swapped; writes are asynchronous, so after MADV_PAGEOUT a dirty page stays in the swap cache
  under writeback, then clean, until memory pressure frees it — the model's `until: written` once
  the writes are done (wait_for_writeback). Undone by undo_swapfile(): swapoff, then delete.
* `hdd` and `ssd`: a loop device over a file in /var/tmp, a block device (SWP_BLKDEV: a THP is
  swapped whole). Attached to a file on this rotational disk the loop device is rotational
  itself; `ssd` writes 0 to its queue/rotational before swapon (SWP_SOLIDSTATE is decided
  there), `hdd` writes 1. Undone by undo_loop_swap(): swapoff, detach, the old queue/rotational
  back, delete the file.
* `zram`: /sys/block/zram0 (synchronous: a page is written and freed in the same pass):
  comp_algorithm (through the journal as a knob) and disksize, then the swap header and swapon;
  undone by undo_zram_swap(): swapoff, then `reset`. Only a zram0 nobody uses (disksize 0).

Each is made only through SystemChanges, whose journal records it before it exists. With an area,
the run also sets vm.page-cluster to 0 (PAGE_CLUSTER, journalled): swap readahead off. The model
reads only the faulting slot; with page-cluster 0 so does the kernel (6.18.2 swap_vma_ra_win()
and swapin_nr_pages() return a window of 1), where the default 3 makes a swap-in that cannot skip
the swap cache (zram, a slot shared after fork) bring up to 8 neighbouring slots into the swap
cache, by a window that depends on earlier faults.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import mmap
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

SWAPFILE = "/var/tmp/cowlab-swapfile"
LOOP_FILE = "/var/tmp/cowlab-swap-loop"
ZRAM = Path("/sys/block/zram0")
PAGE_CLUSTER = "/proc/sys/vm/page-cluster"  # log2 of the swap readahead window
ZRAM_ALGORITHM = "lzo-rle"  # the kernel's default (CONFIG_ZRAM_DEF_COMP), set so it is known
LOOP_CTL_GET_FREE, LOOP_SET_FD, LOOP_CLR_FD = 0x4C82, 0x4C00, 0x4C01
DETACH_TIMEOUT_S = 5.0
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
    finally:
        os.close(fd)
    swapon(path, size)


def swapon(path: str, size: int) -> None:
    """Write the swap header at the start of the file or device, then swapon it at the highest
    priority."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, swap_header(size), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    _check(_libc.swapon(path.encode(), SWAP_FLAG_PREFER | 32767), f"swapon {path}")


def swapoff(path: str) -> None:
    """swapoff, if it is swapped on."""
    if path in active_swaps():
        _check(_libc.swapoff(path.encode()), f"swapoff {path}")


def undo_swapfile(path: str = SWAPFILE) -> None:
    """swapoff (if it is swapped on) and delete the file."""
    swapoff(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# --- hdd, ssd: a loop device ------------------------------------------------------------------


def free_loop_device() -> str:
    """The name of a loop device nobody uses (LOOP_CTL_GET_FREE), e.g. 'loop0'."""
    fd = os.open("/dev/loop-control", os.O_RDWR)
    try:
        return f"loop{fcntl.ioctl(fd, LOOP_CTL_GET_FREE)}"
    finally:
        os.close(fd)


def loop_backing(loop: str) -> str | None:
    """The file a loop device is attached to, or None."""
    try:
        return (Path("/sys/block") / loop / "loop/backing_file").read_text().strip()
    except OSError:
        return None


def rotational_knob(loop: str) -> Path:
    return Path("/sys/block") / loop / "queue/rotational"


def make_loop_swap(
    loop: str, rotational: bool, path: str = LOOP_FILE, size: int = DEFAULT_SIZE
) -> None:
    """A file of `size` bytes (allocated, mode 0600) attached to `loop`, queue/rotational as
    asked, then the swap header and swapon."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
        dev = os.open(f"/dev/{loop}", os.O_RDWR)
        try:
            fcntl.ioctl(dev, LOOP_SET_FD, fd)
        finally:
            os.close(dev)
    finally:
        os.close(fd)
    rotational_knob(loop).write_text("1" if rotational else "0")
    swapon(f"/dev/{loop}", size)


def undo_loop_swap(loop: str, old_rotational: str, path: str = LOOP_FILE) -> None:
    """swapoff, detach the loop device if our file is what it holds, put its old
    queue/rotational back once it is free, delete the file."""
    swapoff(f"/dev/{loop}")
    if loop_backing(loop) == path:
        dev = os.open(f"/dev/{loop}", os.O_RDWR)
        try:
            fcntl.ioctl(dev, LOOP_CLR_FD)
        finally:
            os.close(dev)  # the detach completes on this last close
        _wait_detached(loop)
    if loop_backing(loop) is None:
        rotational_knob(loop).write_text(old_rotational)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _wait_detached(loop: str) -> None:
    deadline = time.monotonic() + DETACH_TIMEOUT_S
    while loop_backing(loop) is not None:
        if time.monotonic() > deadline:
            raise OSError(f"/dev/{loop} was not detached within {DETACH_TIMEOUT_S:.0f} s")
        time.sleep(0.01)


# --- zram -------------------------------------------------------------------------------------


def zram_problem() -> str | None:
    """Why zram0 cannot be our swap device, or None."""
    if not ZRAM.exists():
        return f"{ZRAM} is missing (no zram here)"
    size = int((ZRAM / "disksize").read_text())
    if size:
        return f"zram0 is in use (disksize {size}): cowlab leaves it alone"
    return None


def make_zram_swap(size: int = DEFAULT_SIZE) -> None:
    """disksize (comp_algorithm is set before, through the journal), the header, swapon."""
    (ZRAM / "disksize").write_text(str(size))
    swapon("/dev/zram0", size)


def undo_zram_swap() -> None:
    """swapoff, then reset (disksize 0 again, the compressed pages freed)."""
    swapoff("/dev/zram0")
    (ZRAM / "reset").write_text("1")


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


class LruDrain:
    """lru_add_drain_all() from user space: every CPU's folio batches (lru_add, lru_move_tail,
    activate, ...) put back on the LRU, and the reference each batch holds dropped.

    A batch holds a reference on its folio until it is drained, and reclaim frees a clean
    swap-cache folio only if nothing else holds one (__remove_mapping's refcount freeze):
    MADV_PAGEOUT drains only its own CPU's batches (lru_add_drain), while a write completion
    may have put the folio in another CPU's (folio_rotate_reclaimable), so whether a page
    leaves the swap cache would depend on where an interrupt ran. 6.18 generic_fadvise()
    drains them all when POSIX_FADV_DONTNEED cannot invalidate a page of the range; a page we
    keep mapped never can be (mapping_evict_folio: the mapping's reference)."""

    def __init__(self) -> None:
        self.fd = os.open("/var/tmp", os.O_TMPFILE | os.O_RDWR, 0o600)
        os.pwrite(self.fd, b"x", 0)
        os.ftruncate(self.fd, PAGE)
        os.fsync(self.fd)  # clean: the fadvise below starts no writeback
        self.map = mmap.mmap(self.fd, PAGE, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        assert self.map[0] == ord("x")  # mapped now

    def __call__(self) -> None:
        os.posix_fadvise(self.fd, 0, PAGE, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


class LocalLruDrain:
    """lru_add_drain() from user space: the folio batches of the CPU the caller runs on only.
    6.18 generic_fadvise() drains the local batches before it tries to invalidate the range,
    and every CPU's only if a page of it could not be: an empty file has none, so the caller
    never waits for another CPU's kworker."""

    def __init__(self) -> None:
        self.fd = os.open("/var/tmp", os.O_TMPFILE | os.O_RDWR, 0o600)

    def __call__(self) -> None:
        os.posix_fadvise(self.fd, 0, PAGE, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        os.close(self.fd)
