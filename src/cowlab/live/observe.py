"""Observe real processes from outside: pagemap, kpagecount, kpageflags, PAGEMAP_SCAN, mem.

A snapshot describes every 4 KiB page of some regions as structure, not numbers: folios get labels
in order of first sight (F0, F1 ...), swap entries S0, S1 ...; the shared zero page is "Z", the
huge zero page "HZ". Two runs, or the model and the kernel, compare equal when they behave alike.

Mapping level: PAGEMAP_SCAN's PAGE_IS_HUGE says whether a page is PMD-mapped (plain pagemap does
not). Without PAGEMAP_SCAN (before 6.7) the level is inferred: a 2 MiB-aligned block that maps
subpages 0..511 of one order-9 folio in order counts as "pmd" -- which misreads a PTE-mapped THP
whose PTEs happen to map it whole.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

PAGE = 4096
HPAGE_NR = 512
PM_PFN_MASK = (1 << 55) - 1
PM_SOFT_DIRTY, PM_EXCLUSIVE, PM_FILE, PM_SWAP, PM_PRESENT = 55, 56, 61, 62, 63
KPF_ANON, KPF_HEAD, KPF_TAIL, KPF_KSM, KPF_THP, KPF_ZERO = 12, 15, 16, 21, 22, 24
KPF_SWAPCACHE, KPF_ANON_EXCLUSIVE = 13, 34
PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_IS_PFNZERO, PAGE_IS_HUGE = 1 << 3, 1 << 4, 1 << 5, 1 << 6
PAGEMAP_SCAN = (3 << 30) | (96 << 16) | (ord("f") << 8) | 16  # _IOWR('f', 16, pm_scan_arg)
U64 = npt.NDArray[np.uint64]


class PmScanArg(ctypes.Structure):
    """struct pm_scan_arg of PAGEMAP_SCAN."""

    _fields_ = [
        (n, ctypes.c_uint64)
        for n in [
            "size",
            "flags",
            "start",
            "end",
            "walk_end",
            "vec",
            "vec_len",
            "max_pages",
            "category_inverted",
            "category_mask",
            "category_anyof_mask",
            "return_mask",
        ]
    ]


class PageRegion(ctypes.Structure):
    """struct page_region: [start, end) and the categories every page in it has."""

    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64), ("cat", ctypes.c_uint64)]


class PageObs(NamedTuple):
    """One 4 KiB page of one process, as structure (no PFNs)."""

    folio: str | None  # "F0".., "Z", "HZ", or None when nothing is mapped
    subpage: int | None  # index of this page within its folio
    nr: int | None  # pages in the folio
    level: str | None  # "pmd" | "pte" | None (not present)
    mapcount: int | None  # kpagecount: mappings of this page (not pins, not references)
    anon_exclusive: bool | None  # PG_anon_exclusive where the kernel shows it, else None
    ksm: bool
    zero: bool
    swapped: bool
    swap: str | None  # "S0".. for a swap entry
    swapcache: bool
    pm_exclusive: bool | None  # pagemap bit 56, PTE-mapped pages only (wrong for PMD THPs)
    digest: str | None  # blake2b of the page's bytes (present pages only)
    head: bytes | None  # its first 8 bytes
    data: bytes | None = None  # all 4096 bytes, with exact=True

    def key(self) -> tuple[Any, ...]:
        """The structural fields, for comparing with the model: no bytes."""
        return (
            self.folio,
            self.subpage,
            self.level,
            self.mapcount,
            self.anon_exclusive,
            self.ksm,
            self.zero,
            self.swap,
        )


@dataclass
class Snapshot:
    """Pages of named regions, labelled consistently across them; plus what it cost."""

    regions: dict[str, list[PageObs]]
    pfns: dict[str, int] = field(repr=False)  # folio label -> head PFN (for debugging only)
    elapsed_s: float = 0.0
    pagemap_scan: bool = True
    stable: bool = True  # the page tables did not change while they were read (snapshot())

    def structure(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every page's key(): what two equivalent runs have in common."""
        return {name: [p.key() for p in pages] for name, pages in self.regions.items()}

    def folios(self, name: str) -> list[str | None]:
        """The folio label of every page of one region."""
        return [p.folio for p in self.regions[name]]


# --- raw reads -------------------------------------------------------------------------------


def read_pagemap(pid: int, addr: int, n: int) -> U64:
    """n pagemap entries from addr's page: one pread."""
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        raw = os.pread(fd, n * 8, (addr // PAGE) * 8)
    finally:
        os.close(fd)
    return np.frombuffer(raw, dtype=np.uint64)


def scan_huge(pid: int, addr: int, n: int) -> npt.NDArray[np.bool_] | None:
    """PAGEMAP_SCAN: which pages are PMD-mapped (PAGE_IS_HUGE); None if the ioctl is missing."""
    regions = (PageRegion * max(n, 1))()
    arg = PmScanArg(size=ctypes.sizeof(PmScanArg), start=addr, end=addr + n * PAGE)
    arg.vec, arg.vec_len = ctypes.addressof(regions), n
    arg.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED
    arg.return_mask = PAGE_IS_HUGE | PAGE_IS_PRESENT
    huge = np.zeros(n, dtype=bool)
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        while arg.start < arg.end:
            got = fcntl.ioctl(fd, PAGEMAP_SCAN, arg)
            for r in regions[:got]:
                if r.cat & PAGE_IS_HUGE:
                    huge[(r.start - addr) // PAGE : (r.end - addr) // PAGE] = True
            if arg.walk_end <= arg.start or not got:
                break
            arg.start = arg.walk_end
    except OSError:
        return None
    finally:
        os.close(fd)
    return huge


class PfnTable:
    """kpageflags and kpagecount, read 512 PFNs (one aligned block) at a time and cached."""

    def __init__(self) -> None:
        self.flags_fd = os.open("/proc/kpageflags", os.O_RDONLY)
        self.count_fd = os.open("/proc/kpagecount", os.O_RDONLY)
        self.blocks: dict[int, tuple[U64, U64, npt.NDArray[np.int64], npt.NDArray[np.int64]]] = {}

    def close(self) -> None:
        os.close(self.flags_fd)
        os.close(self.count_fd)

    def block(self, pfn: int) -> tuple[U64, U64, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(flags, counts, head index, folio pages) for pfn's aligned 512-block."""
        b = pfn // HPAGE_NR
        if b not in self.blocks:
            off = b * HPAGE_NR * 8
            flags = np.frombuffer(os.pread(self.flags_fd, HPAGE_NR * 8, off), dtype=np.uint64)
            counts = np.frombuffer(os.pread(self.count_fd, HPAGE_NR * 8, off), dtype=np.uint64)
            self.blocks[b] = (flags, counts, *_heads(flags))
        return self.blocks[b]


def _bit(values: U64, bit: int) -> npt.NDArray[np.bool_]:
    return (values >> np.uint64(bit)) & np.uint64(1) == 1


def _heads(flags: U64) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per block position: the index of its folio's head (-1 if before the block), folio size.

    Tail pages follow their head contiguously and anonymous folios are at most PMD-sized and
    naturally aligned, so a 512-block holds every folio it intersects whole.
    """
    idx = np.arange(HPAGE_NR, dtype=np.int64)
    starts = np.where(_bit(flags, KPF_TAIL), -1, idx)  # heads and small pages start a folio
    head = np.maximum.accumulate(starts)
    sizes = np.bincount(head[head >= 0], minlength=HPAGE_NR)
    nr = np.where(head >= 0, sizes[np.maximum(head, 0)], 0)
    return head, nr


# --- the canonical observation ----------------------------------------------------------------


@dataclass
class _Labels:
    """First-sight labels for folios and swap entries, shared by every region of a snapshot."""

    folios: dict[int, str] = field(default_factory=dict)
    swaps: dict[int, str] = field(default_factory=dict)

    def folio(self, head_pfn: int) -> str:
        return self.folios.setdefault(head_pfn, f"F{len(self.folios)}")

    def swap(self, entry: int) -> str:
        return self.swaps.setdefault(entry, f"S{len(self.swaps)}")


def _infer_huge(pm: U64, addr: int, table: PfnTable) -> npt.NDArray[np.bool_]:
    """Without PAGEMAP_SCAN: aligned blocks mapping a whole order-9 folio in order count as PMD."""
    n = len(pm)
    huge = np.zeros(n, dtype=bool)
    first = (-(addr // PAGE)) % HPAGE_NR
    for i in range(first, n - HPAGE_NR + 1, HPAGE_NR):
        block = pm[i : i + HPAGE_NR]
        if not _bit(block, PM_PRESENT).all():
            continue
        pfns = block & np.uint64(PM_PFN_MASK)
        base = int(pfns[0])
        flags = table.block(base)[0]
        if base % HPAGE_NR == 0 and _bit(flags[:1], KPF_THP)[0]:
            huge[i : i + HPAGE_NR] = np.array_equal(pfns, np.arange(base, base + HPAGE_NR))
    return huge


def _read_mem(pid: int, addr: int, present: npt.NDArray[np.bool_]) -> bytearray:
    """The bytes of present pages via /proc/PID/mem (never touches a non-present page)."""
    out = bytearray(len(present) * PAGE)
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        for i, j in _runs(present):
            # A failed read (e.g. an unreadable PFN map) leaves zeros; digests say so below.
            with contextlib.suppress(OSError):
                out[i * PAGE : j * PAGE] = os.pread(fd, (j - i) * PAGE, addr + i * PAGE)
    finally:
        os.close(fd)
    return out


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, end) index runs where mask is True."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


ZERO_DIGEST = hashlib.blake2b(bytes(PAGE), digest_size=6).hexdigest()


def _digests(raw: bytearray, present: npt.NDArray[np.bool_]) -> list[str | None]:
    """blake2b per present page; all-zero pages (found by numpy) share one precomputed digest."""
    words = np.frombuffer(bytes(raw), dtype=np.uint64).reshape(len(present), PAGE // 8)
    nonzero: list[bool] = np.any(words, axis=1).astype(bool).tolist()
    out: list[str | None] = []
    for i, (p, nz) in enumerate(zip(present.tolist(), nonzero, strict=True)):
        if not p:
            out.append(None)
        elif nz:
            out.append(hashlib.blake2b(raw[i * PAGE : (i + 1) * PAGE], digest_size=6).hexdigest())
        else:
            out.append(ZERO_DIGEST)
    return out


@dataclass
class _PfnInfo:
    """Per-page arrays gathered from kpageflags/kpagecount for the PFNs a region maps."""

    flags: U64
    head_flags: U64
    counts: U64
    head_pfn: npt.NDArray[np.int64]
    index: npt.NDArray[np.int64]
    nr: npt.NDArray[np.int64]


def _gather(pfn: U64, present: npt.NDArray[np.bool_], table: PfnTable) -> _PfnInfo:
    """Look every present PFN up, one cached 512-block at a time."""
    n = len(pfn)
    info = _PfnInfo(
        np.zeros(n, np.uint64),
        np.zeros(n, np.uint64),
        np.zeros(n, np.uint64),
        np.full(n, -1, np.int64),
        np.full(n, -1, np.int64),
        np.zeros(n, np.int64),
    )
    blocks = pfn // np.uint64(HPAGE_NR)
    for b in np.unique(blocks[present]).tolist():
        sel = present & (blocks == b)
        pos = (pfn[sel] % np.uint64(HPAGE_NR)).astype(np.int64)
        flags, counts, heads, nrs = table.block(b * HPAGE_NR)
        head = heads[pos]
        info.flags[sel] = flags[pos]
        info.counts[sel] = counts[pos]
        info.head_flags[sel] = np.where(head >= 0, flags[np.maximum(head, 0)], 0)
        # A head outside the block (a folio bigger than PMD size) is left unknown (-1).
        info.head_pfn[sel] = np.where(head >= 0, b * HPAGE_NR + head, -1)
        info.index[sel] = np.where(head >= 0, pos - head, -1)
        info.nr[sel] = nrs[pos]
    return info


def _labels_for(
    info: _PfnInfo, present: npt.NDArray[np.bool_], labels: _Labels
) -> list[str | None]:
    """Folio labels in first-sight order; the zero pages get Z (4 KiB) and HZ (huge)."""
    zero = _bit(info.flags, KPF_ZERO).tolist()
    compound = (_bit(info.flags, KPF_HEAD) | _bit(info.flags, KPF_TAIL)).tolist()
    out: list[str | None] = []
    for p, z, c, h in zip(present.tolist(), zero, compound, info.head_pfn.tolist(), strict=True):
        if not p:
            out.append(None)
        elif z:
            out.append("HZ" if c else "Z")
        else:
            out.append(labels.folio(h) if h >= 0 else None)
    return out


def _exclusive(info: _PfnInfo, huge: npt.NDArray[np.bool_]) -> list[bool | None]:
    """PG_anon_exclusive: shown on small folios, and on a large folio's head page only.

    A PMD mapping uses the head's flag for every subpage; a PTE-mapped tail's own flag is not
    visible, so it is None.
    """
    anon = _bit(info.head_flags, KPF_ANON) & ~_bit(info.flags, KPF_ZERO)
    visible = anon & ((info.nr == 1) | (info.index == 0) | huge)
    value = _bit(info.head_flags, KPF_ANON_EXCLUSIVE)
    return [v if ok else None for v, ok in zip(value.tolist(), visible.tolist(), strict=True)]


def _swap_labels(pm: U64, labels: _Labels) -> list[str | None]:
    swapped = _bit(pm, PM_SWAP).tolist()
    entries = (pm & np.uint64(PM_PFN_MASK)).tolist()
    return [labels.swap(e) if s else None for s, e in zip(swapped, entries, strict=True)]


def _region_pages(
    pm: U64,
    huge: npt.NDArray[np.bool_],
    table: PfnTable,
    labels: _Labels,
    raw: bytearray | None,
    exact: bool,
) -> list[PageObs]:
    """Every page of one region, field by field as numpy arrays, then zipped into PageObs."""
    n = len(pm)
    present = _bit(pm, PM_PRESENT)
    info = _gather(pm & np.uint64(PM_PFN_MASK), present, table)
    pres = present.tolist()
    level = [
        ("pmd" if h else "pte") if p else None for p, h in zip(pres, huge.tolist(), strict=True)
    ]
    none: list[Any] = [None] * n
    digests = _digests(raw, present) if raw is not None else none
    heads = (
        [raw[i * PAGE : i * PAGE + 8] if d else None for i, d in enumerate(digests)]
        if raw is not None
        else none
    )
    datas = (
        [bytes(raw[i * PAGE : (i + 1) * PAGE]) if d else None for i, d in enumerate(digests)]
        if raw is not None and exact
        else none
    )
    pm_excl = _bit(pm, PM_EXCLUSIVE) & present & ~huge
    columns = (
        _labels_for(info, present, labels),
        [i if p else None for p, i in zip(pres, info.index.tolist(), strict=True)],
        [k if p else None for p, k in zip(pres, info.nr.tolist(), strict=True)],
        level,
        [c if p else None for p, c in zip(pres, info.counts.tolist(), strict=True)],
        _exclusive(info, huge),
        (_bit(info.flags, KPF_KSM) & present).tolist(),
        (_bit(info.flags, KPF_ZERO) & present).tolist(),
        _bit(pm, PM_SWAP).tolist(),
        _swap_labels(pm, labels),
        (_bit(info.head_flags, KPF_SWAPCACHE) & present).tolist(),
        [
            e if p and not h else None
            for p, h, e in zip(pres, huge.tolist(), pm_excl.tolist(), strict=True)
        ],
        digests,
        [bytes(h) if h is not None else None for h in heads],
        datas,
    )
    return [PageObs(*row) for row in zip(*columns, strict=True)]


def _span(addr: int, length: int) -> tuple[int, int]:
    """The first page and the number of pages of [addr, addr+length)."""
    first = addr - addr % PAGE
    return first, (addr + length - first + PAGE - 1) // PAGE


def observe_region(
    pid: int,
    addr: int,
    length: int,
    table: PfnTable,
    labels: _Labels,
    *,
    exact: bool = False,
    read_bytes: bool = True,
) -> tuple[list[PageObs], bool, U64]:
    """Every page of [addr, addr+length) of pid; whether PAGEMAP_SCAN told the levels; and the
    pagemap entries everything else was looked up from."""
    first, n = _span(addr, length)
    pm = read_pagemap(pid, first, n)
    huge = scan_huge(pid, first, n)
    scanned = huge is not None
    if huge is None:
        huge = _infer_huge(pm, first, table)
    raw = _read_mem(pid, first, _bit(pm, PM_PRESENT)) if read_bytes else None
    return _region_pages(pm, huge, table, labels, raw, exact), scanned, pm


STABLE_TRIES = 5


def snapshot(
    regions: list[tuple[str, int, int, int]], *, exact: bool = False, read_bytes: bool = True
) -> Snapshot:
    """Observe (name, pid, addr, length) regions with labels shared in the order given.

    The reads are not atomic: pagemap first, then kpageflags/kpagecount for the PFNs it gave,
    then the bytes. The processes under test are idle, but the kernel's own threads are not
    (kcompactd migrating a page, khugepaged collapsing a range of a process that is not fenced):
    a page freed between the pagemap read and the kpagecount read shows mapcount 0. So every
    region's pagemap is read again at the end; if any entry changed, the whole snapshot is taken
    again (labels span regions), up to STABLE_TRIES times, else it is marked not stable.
    """
    t0 = time.perf_counter()
    for _ in range(STABLE_TRIES):
        out, pfns, all_scanned, entries = _snapshot_once(regions, exact, read_bytes)
        again = [read_pagemap(pid, *_span(addr, length)) for _n, pid, addr, length in regions]
        stable = all(np.array_equal(a, b) for a, b in zip(entries, again, strict=True))
        if stable:
            break
    return Snapshot(out, pfns, time.perf_counter() - t0, all_scanned, stable)


def _snapshot_once(
    regions: list[tuple[str, int, int, int]], exact: bool, read_bytes: bool
) -> tuple[dict[str, list[PageObs]], dict[str, int], bool, list[U64]]:
    table = PfnTable()
    labels = _Labels()
    out: dict[str, list[PageObs]] = {}
    entries: list[U64] = []
    all_scanned = True
    try:
        for name, pid, addr, length in regions:
            pages, scanned, pm = observe_region(
                pid, addr, length, table, labels, exact=exact, read_bytes=read_bytes
            )
            out[name] = pages
            entries.append(pm)
            all_scanned &= scanned
    finally:
        table.close()
    pfns = {label: pfn for pfn, label in labels.folios.items()}
    return out, pfns, all_scanned, entries
