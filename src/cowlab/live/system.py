"""What the live kernel offers here: a preflight check and the facts to record with every result."""

from __future__ import annotations

import ctypes
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

from cowlab.live.uring import SYS_IO_URING_SETUP

THP_DIR = Path("/sys/kernel/mm/transparent_hugepage")
KSM_RUN = Path("/sys/kernel/mm/ksm/run")
IO_URING_DISABLED = Path("/proc/sys/kernel/io_uring_disabled")


def read_knob(path: str | Path) -> str:
    """A sysfs/procfs value as it can be written back: the [selected] word of a choice list."""
    text = Path(path).read_text().strip()
    chosen = re.search(r"\[([^\]]+)\]", text)
    return chosen.group(1) if chosen else text


def _read_or_none(path: str | Path) -> str | None:
    try:
        return read_knob(path)
    except OSError:
        return None


def _pagemap_shows_pfns() -> bool:
    """Whether /proc/self/pagemap gives PFNs (zeroed without CAP_SYS_ADMIN)."""
    buf = ctypes.create_string_buffer(64)
    ctypes.memset(buf, 1, 1)  # the page holding buf is now certainly present
    page = ctypes.addressof(buf) // 4096
    try:
        with open("/proc/self/pagemap", "rb") as f:
            entry = int.from_bytes(os.pread(f.fileno(), 8, page * 8), "little")
    except OSError:
        return False
    return bool(entry >> 63) and bool(entry & ((1 << 55) - 1))


def _io_uring_problem() -> str | None:
    """Why io_uring cannot be used here, or None (io_uring_setup with a bad pointer probes it)."""
    value = _read_or_none(IO_URING_DISABLED)
    if value is not None and value != "0":
        return f"io_uring is disabled (kernel.io_uring_disabled={value}), so pins cannot be made."
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    # A NULL params pointer fails with EFAULT when io_uring exists, ENOSYS when it does not.
    rc = libc.syscall(ctypes.c_long(SYS_IO_URING_SETUP), ctypes.c_uint(1), ctypes.c_void_p(0))
    err = ctypes.get_errno()
    if rc < 0 and err in (38, 1):  # ENOSYS, EPERM
        return f"io_uring_setup() fails with {os.strerror(err)}, so pins cannot be made."
    if rc >= 0:
        os.close(rc)
    return None


def preflight() -> list[str]:
    """Everything missing for live runs, one sentence each; empty when all is there."""
    if platform.system() != "Linux":
        return [f"This is {platform.system()}, not Linux: there is no live kernel to observe."]
    missing = []
    if os.geteuid() != 0:
        missing.append("Not running as root: /proc/kpageflags and pagemap PFNs need root.")
    for name in ("/proc/kpageflags", "/proc/kpagecount"):
        if not os.access(name, os.R_OK):
            missing.append(f"{name} is missing or unreadable.")
    if not _pagemap_shows_pfns():
        missing.append("/proc/PID/pagemap does not show PFNs (needs CAP_SYS_ADMIN).")
    if not (THP_DIR / "enabled").exists():
        missing.append(f"{THP_DIR}/enabled is missing: the kernel has no transparent hugepages.")
    problem = _io_uring_problem()
    if problem:
        missing.append(problem)
    return missing


@dataclass(frozen=True)
class KernelFacts:
    """The settings that change behaviour, recorded with every live result."""

    release: str
    thp_enabled: str | None
    thp_defrag: str | None
    thp_use_zero_page: str | None
    khugepaged_scan_sleep_ms: str | None
    mthp: dict[str, str] = field(default_factory=dict)
    ksm_run: str | None = None
    io_uring_disabled: str | None = None
    swap_active: bool = False


def mthp_settings() -> dict[str, str]:
    """hugepages-<size>kB/enabled for every mTHP size, e.g. {'64kB': 'never'}."""
    out = {}
    for d in sorted(THP_DIR.glob("hugepages-*kB"), key=lambda p: int(p.name[10:-2])):
        value = _read_or_none(d / "enabled")
        if value is not None:
            out[d.name.removeprefix("hugepages-")] = value
    return out


def _swap_active() -> bool:
    try:
        return len(Path("/proc/swaps").read_text().splitlines()) > 1
    except OSError:
        return False


def kernel_facts() -> KernelFacts:
    """uname release, THP/mTHP modes, KSM and io_uring state, swap: as they are right now."""
    return KernelFacts(
        release=platform.release(),
        thp_enabled=_read_or_none(THP_DIR / "enabled"),
        thp_defrag=_read_or_none(THP_DIR / "defrag"),
        thp_use_zero_page=_read_or_none(THP_DIR / "use_zero_page"),
        khugepaged_scan_sleep_ms=_read_or_none(THP_DIR / "khugepaged/scan_sleep_millisecs"),
        mthp=mthp_settings(),
        ksm_run=_read_or_none(KSM_RUN),
        io_uring_disabled=_read_or_none(IO_URING_DISABLED),
        swap_active=_swap_active(),
    )
