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

import ctypes
import fcntl
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import numpy as np
import numpy.typing as npt

from cowlab.live.pages import (
    FOLIO_HZ,
    FOLIO_Z,
    LEVEL_PMD,
    LEVEL_PTE,
    ZERO_DIGEST_INT,
    FirstSight,
    PageArrays,
    Snapshot,
    digest_int,
)
from cowlab.live.pages import ZERO_DIGEST as ZERO_DIGEST
from cowlab.live.pages import PageObs as PageObs  # re-exported: observe's public names

PAGE = 4096
HPAGE_NR = 512
PM_PFN_MASK = (1 << 55) - 1
PM_SOFT_DIRTY, PM_EXCLUSIVE, PM_FILE, PM_SWAP, PM_PRESENT = 55, 56, 61, 62, 63
KPF_ANON, KPF_HEAD, KPF_TAIL, KPF_KSM, KPF_THP, KPF_ZERO = 12, 15, 16, 21, 22, 24
KPF_SWAPCACHE, KPF_ANON_EXCLUSIVE = 13, 34
PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_IS_PFNZERO, PAGE_IS_HUGE = 1 << 3, 1 << 4, 1 << 5, 1 << 6
PAGEMAP_SCAN = (3 << 30) | (96 << 16) | (ord("f") << 8) | 16  # _IOWR('f', 16, pm_scan_arg)
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]


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
    vec = np.zeros((max(n, 1), 3), np.uint64)  # struct page_region[]: start, end, categories
    arg = PmScanArg(size=ctypes.sizeof(PmScanArg), start=addr, end=addr + n * PAGE)
    arg.vec, arg.vec_len = vec.ctypes.data, n
    arg.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED
    arg.return_mask = PAGE_IS_HUGE | PAGE_IS_PRESENT
    huge = np.zeros(n, dtype=bool)
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        while arg.start < arg.end:
            got = fcntl.ioctl(fd, PAGEMAP_SCAN, arg)
            rows = vec[:got]
            for start, end in rows[(rows[:, 2] & np.uint64(PAGE_IS_HUGE)) != 0, :2].tolist():
                huge[(start - addr) // PAGE : (end - addr) // PAGE] = True
            if arg.walk_end <= arg.start or not got:
                break
            arg.start = arg.walk_end
    except OSError:
        return None
    finally:
        os.close(fd)
    return huge


BLOCK_READ_RUN = 64  # a run of this many consecutive PFNs is read as whole 512-blocks
COMPOUND = np.uint64(1 << KPF_HEAD | 1 << KPF_TAIL)


@dataclass
class _PfnInfo:
    """Per PFN (or per page) what kpageflags/kpagecount say: its flags, its folio head's flags,
    its count, the head PFN (-1 if unknown), its index in the folio and the folio's pages."""

    flags: U64
    head_flags: U64
    counts: U64
    head_pfn: I64
    index: I64
    nr: I64
    FIELDS: ClassVar = ("flags", "head_flags", "counts", "head_pfn", "index", "nr")

    @classmethod
    def empty(cls, n: int) -> _PfnInfo:
        return cls(
            np.zeros(n, np.uint64),
            np.zeros(n, np.uint64),
            np.zeros(n, np.uint64),
            np.full(n, -1, np.int64),
            np.full(n, -1, np.int64),
            np.zeros(n, np.int64),
        )


class PfnTable:
    """kpageflags and kpagecount of the PFNs a snapshot meets.

    A run of consecutive PFNs is one pread per file. A PFN of a compound page needs its folio's
    head and size, so its aligned 512-block is read whole (and cached): tail pages follow their
    head contiguously and anonymous folios are at most PMD-sized and naturally aligned, so a
    512-block holds every folio it intersects whole.
    """

    def __init__(self) -> None:
        self.flags_fd = os.open("/proc/kpageflags", os.O_RDONLY)
        self.count_fd = os.open("/proc/kpagecount", os.O_RDONLY)
        self.blocks: dict[int, tuple[U64, U64, I64, I64]] = {}

    def close(self) -> None:
        os.close(self.flags_fd)
        os.close(self.count_fd)

    def _read(self, fd: int, pfn: int, n: int) -> U64:
        return np.frombuffer(os.pread(fd, n * 8, pfn * 8), dtype=np.uint64)

    def _read_runs(self, fd: int, runs: list[tuple[int, int]], starts: list[int]) -> U64:
        """The entries of several runs, one pread each, end to end."""
        parts = [
            os.pread(fd, (j - i) * 8, pfn * 8) for (i, j), pfn in zip(runs, starts, strict=True)
        ]
        return np.frombuffer(b"".join(parts), dtype=np.uint64)

    def block(self, pfn: int) -> tuple[U64, U64, I64, I64]:
        """(flags, counts, head index, folio pages) for pfn's aligned 512-block."""
        b = pfn // HPAGE_NR
        if b not in self.blocks:
            flags = self._read(self.flags_fd, b * HPAGE_NR, HPAGE_NR)
            counts = self._read(self.count_fd, b * HPAGE_NR, HPAGE_NR)
            self.blocks[b] = (flags, counts, *_heads(flags))
        return self.blocks[b]

    def _small_pages(self, pfns: I64, runs: list[tuple[int, int]], info: _PfnInfo) -> I64:
        """Read the flags of these runs of pfns; fill in info for the runs that hold small pages
        only (each its own head, a folio of one page) and return their indices."""
        starts = pfns[[i for i, _j in runs]].tolist()
        flags = self._read_runs(self.flags_fd, runs, starts)
        offsets = np.cumsum([0] + [j - i for i, j in runs[:-1]]).tolist()
        compound = np.logical_or.reduceat((flags & COMPOUND) != 0, offsets).tolist()
        small = [k for k, c in enumerate(compound) if not c]
        if not small:
            return np.zeros(0, np.int64)
        at = np.concatenate([np.arange(*runs[k]) for k in small])
        mine = np.concatenate([np.arange(offsets[k], offsets[k] + runs[k][1] - runs[k][0])
                               for k in small])  # fmt: skip
        info.flags[at] = info.head_flags[at] = flags[mine]
        kept = [runs[k] for k in small]
        info.counts[at] = self._read_runs(self.count_fd, kept, [starts[k] for k in small])
        info.head_pfn[at], info.index[at], info.nr[at] = pfns[at], 0, 1
        return at

    def lookup(self, pfns: I64) -> _PfnInfo:
        """Every PFN of a sorted array without repeats: runs of consecutive PFNs shorter than
        BLOCK_READ_RUN are read as they are, and kept if they hold small pages only; long runs
        and runs with a compound page go through their 512-blocks."""
        n = len(pfns)
        info = _PfnInfo.empty(n)
        if not n:
            return info
        bounds = [0, *(np.flatnonzero(np.diff(pfns) != 1) + 1).tolist(), n]
        runs = [(i, j) for i, j in itertools.pairwise(bounds) if j - i < BLOCK_READ_RUN]
        whole = np.ones(n, dtype=bool)  # looked up through 512-blocks
        if runs:
            whole[self._small_pages(pfns, runs, info)] = False
        blocks = pfns // HPAGE_NR
        for b in np.unique(blocks[whole]).tolist():
            sel = whole & (blocks == b)
            pos = pfns[sel] % HPAGE_NR
            flags, counts, heads, nrs = self.block(b * HPAGE_NR)
            head = heads[pos]
            info.flags[sel] = flags[pos]
            info.counts[sel] = counts[pos]
            info.head_flags[sel] = np.where(head >= 0, flags[np.maximum(head, 0)], 0)
            # A head outside the block (a folio bigger than PMD size) is left unknown (-1).
            info.head_pfn[sel] = np.where(head >= 0, b * HPAGE_NR + head, -1)
            info.index[sel] = np.where(head >= 0, pos - head, -1)
            info.nr[sel] = nrs[pos]
        return info


_MASKS = [np.uint64(1 << bit) for bit in range(64)]


def _bit(values: U64, bit: int) -> npt.NDArray[np.bool_]:
    return (values & _MASKS[bit]) != 0


def _heads(flags: U64) -> tuple[I64, I64]:
    """Per block position: the index of its folio's head (-1 if before the block), folio size."""
    idx = np.arange(HPAGE_NR, dtype=np.int64)
    starts = np.where(_bit(flags, KPF_TAIL), -1, idx)  # heads and small pages start a folio
    head = np.maximum.accumulate(starts)
    sizes = np.bincount(head[head >= 0], minlength=HPAGE_NR)
    nr = np.where(head >= 0, sizes[np.maximum(head, 0)], 0)
    return head, nr


class _Distinct(NamedTuple):
    """The distinct PFNs of the present pages (sorted), where each page's PFN is among them,
    and the first page that maps each."""

    pfns: I64
    inverse: I64
    first: I64

    @classmethod
    def of(cls, pfns: U64) -> _Distinct:
        uniq, first, inverse = np.unique(
            pfns.astype(np.int64), return_index=True, return_inverse=True
        )
        return cls(uniq, inverse.reshape(-1), first)


def _gather(distinct: _Distinct, table: PfnTable) -> _PfnInfo:
    """kpageflags/kpagecount for each present page, each distinct PFN looked up once."""
    info = table.lookup(distinct.pfns)
    return _PfnInfo(*(getattr(info, name)[distinct.inverse] for name in _PfnInfo.FIELDS))


# --- the canonical observation ----------------------------------------------------------------


@dataclass
class _Labels:
    """First-sight labels for folios and swap entries, shared by every region of a snapshot."""

    folios: FirstSight = field(default_factory=FirstSight)
    swaps: FirstSight = field(default_factory=FirstSight)


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


class _MemBuffer:
    """One buffer for the bytes of a snapshot, kept from snapshot to snapshot: reading into
    fresh memory costs page faults that reading into this does not. A snapshot larger than KEEP
    gets a buffer of its own, so that one large case does not leave the driver holding it."""

    KEEP = 32 << 20

    def __init__(self) -> None:
        self.buf = np.zeros(0, np.uint8)

    def get(self, nbytes: int) -> npt.NDArray[np.uint8]:
        if nbytes > self.KEEP:
            return np.zeros(nbytes, np.uint8)
        if len(self.buf) < nbytes:
            self.buf = np.zeros(nbytes, np.uint8)
        return self.buf[:nbytes]


_MEM = _MemBuffer()


def _read_mem(
    procs: list[tuple[int, int, int]], wanted: npt.NDArray[np.bool_], exact: bool
) -> tuple[npt.NDArray[np.uint8], list[tuple[int, int]]]:
    """The bytes of the wanted (present) pages of regions laid end to end, each region
    (pid, first address, its first page in the layout) through /proc/PID/mem with one preadv
    per run of wanted pages straight into the buffer (never touching a non-present page); and
    those runs. The buffer is reused: only the wanted pages are meaningful, unless exact (then
    the others are zeros)."""
    out = _MEM.get(len(wanted) * PAGE)
    if exact:
        out[:] = 0
    ends = [off for _pid, _addr, off in procs[1:]] + [len(wanted)]
    done: list[tuple[int, int]] = []
    for (pid, addr, off), end in zip(procs, ends, strict=False):  # no regions: ends == [0]
        runs = [(off + i, off + j) for i, j in _runs(wanted[off:end])]
        if not runs:
            continue
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
        try:
            for i, j in runs:
                try:
                    got = os.preadv(fd, [out[i * PAGE : j * PAGE].data], addr + (i - off) * PAGE)
                except OSError:
                    got = 0
                # A failed read (e.g. an unreadable PFN map) leaves zeros; digests say so below.
                out[i * PAGE + got : j * PAGE] = 0
        finally:
            os.close(fd)
        done += runs
    return out, done


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, end) index runs where mask is True."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def _bits(values: U64, *bits: int) -> npt.NDArray[np.bool_]:
    """One row per bit: whether it is set in each value."""
    shifts = np.array(bits, dtype=np.uint64)[:, None]
    return ((values[None, :] >> shifts) & np.uint64(1)).astype(bool)


def _fill_bytes(
    out: PageArrays, raw: npt.NDArray[np.uint8], runs: list[tuple[int, int]], pres: I64, exact: bool
) -> None:
    """digest, head (and data) of the present pages: blake2b of each page read (runs) with a
    nonzero byte (found by numpy), the precomputed ZERO_DIGEST and zeros for the others."""
    words = raw.view(np.uint64).reshape(len(out), PAGE // 8)
    out.digest[pres] = ZERO_DIGEST_INT
    out.head[pres] = 0
    out.has_head[pres] = True
    for i, j in runs:
        nonzero = (i + np.flatnonzero(np.bitwise_or.reduce(words[i:j], axis=1))).tolist()
        out.digest[nonzero] = [digest_int(raw[k * PAGE : (k + 1) * PAGE].data) for k in nonzero]
        out.head[i:j] = words[i:j, 0]
    if exact:
        out.data = raw.tobytes()


def _region_arrays(
    pm: U64,
    huge: npt.NDArray[np.bool_],
    info: _PfnInfo,
    labels: _Labels,
    raw: tuple[npt.NDArray[np.uint8], list[tuple[int, int]]] | None,
    exact: bool,
) -> PageArrays:
    """Every page of one region, field by field, from its pagemap entries and the PFN lookups
    of its present pages (info: one entry per present page, in order)."""
    out = PageArrays.absent(len(pm))
    present, swapped, pm_excl = _bits(pm, PM_PRESENT, PM_SWAP, PM_EXCLUSIVE)
    out.swapped[:] = swapped
    out.swap[swapped] = labels.swaps.label((pm[swapped] & np.uint64(PM_PFN_MASK)).astype(np.int64))
    pres = np.flatnonzero(present)
    if not len(pres):
        return out
    zero, head, tail, ksm = _bits(info.flags, KPF_ZERO, KPF_HEAD, KPF_TAIL, KPF_KSM)
    anon, excl, swapcache = _bits(info.head_flags, KPF_ANON, KPF_ANON_EXCLUSIVE, KPF_SWAPCACHE)
    on_pmd = huge[pres]
    out.folio[pres[zero]] = np.where(head[zero] | tail[zero], FOLIO_HZ, FOLIO_Z)
    named = ~zero & (info.head_pfn >= 0)  # a head outside its block stays None
    out.folio[pres[named]] = labels.folios.label(info.head_pfn[named])
    out.pfn[pres[~zero]] = (pm[pres[~zero]] & np.uint64(PM_PFN_MASK)).astype(np.int64)
    out.subpage[pres] = info.index
    out.nr[pres] = info.nr
    out.level[pres] = np.where(on_pmd, LEVEL_PMD, LEVEL_PTE)
    out.mapcount[pres] = info.counts.astype(np.int64)
    # PG_anon_exclusive: shown on small folios, and on a large folio's head page only. A PMD
    # mapping uses the head's flag for every subpage; a PTE-mapped tail's own flag is not
    # visible, so it is None.
    visible = anon & ~zero & ((info.nr == 1) | (info.index == 0) | on_pmd)
    out.anon_exclusive[pres[visible]] = excl[visible]
    out.ksm[pres] = ksm
    out.zero[pres] = zero
    out.swapcache[pres] = swapcache
    out.pm_exclusive[pres[~on_pmd]] = pm_excl[pres[~on_pmd]]
    if raw is not None:
        _fill_bytes(out, *raw, pres, exact)
    return out


def _span(addr: int, length: int) -> tuple[int, int]:
    """The first page and the number of pages of [addr, addr+length)."""
    first = addr - addr % PAGE
    return first, (addr + length - first + PAGE - 1) // PAGE


STABLE_TRIES = 5
Mincore = Callable[[int, int, int], bytes]  # (pid, addr, pages) -> mincore()'s vector


def snapshot(
    regions: list[tuple[str, int, int, int]],
    *,
    exact: bool = False,
    read_bytes: bool = True,
    mincore: Mincore | None = None,
) -> Snapshot:
    """Observe (name, pid, addr, length) regions with labels shared in the order given; with
    mincore, whether each swap PTE's slot has a swap-cache page (`swapcache`, else False).

    The reads are not atomic: pagemap first, then kpageflags/kpagecount for the PFNs it gave,
    then the bytes. The processes under test are idle, but the kernel's own threads are not
    (kcompactd migrating a page, khugepaged collapsing a range of a process that is not fenced):
    a page freed between the pagemap read and the kpagecount read shows mapcount 0. So every
    region's pagemap is read again at the end; if any entry changed, the whole snapshot is taken
    again (labels span regions), up to STABLE_TRIES times, else it is marked not stable.
    """
    t0 = time.perf_counter()
    for _ in range(STABLE_TRIES):
        out, pfns, all_scanned, entries = _snapshot_once(regions, exact, read_bytes, mincore)
        again = [read_pagemap(pid, *_span(addr, length)) for _n, pid, addr, length in regions]
        stable = all(np.array_equal(a, b) for a, b in zip(entries, again, strict=True))
        if stable:
            break
    return Snapshot(out, pfns, time.perf_counter() - t0, all_scanned, stable)


def _snapshot_once(
    regions: list[tuple[str, int, int, int]], exact: bool, read_bytes: bool, mincore: Mincore | None
) -> tuple[dict[str, PageArrays], dict[str, int], bool, list[U64]]:
    """One attempt: every region's pagemap (one pread); then, for the regions laid end to end,
    kpageflags/kpagecount of each distinct PFN (a pread per run), PAGEMAP_SCAN of each region
    with a PMD-sized folio (_pmd_mapped), and the bytes of each distinct present page but the
    zero pages (a preadv per run; a page that several regions map, as a fork shares them, is
    read once: one physical page has one content, and nothing writes while the processes under
    test are idle); then every field as arrays for all regions at once, cut into one
    PageArrays per region."""
    spans = [_span(addr, length) for _name, _pid, addr, length in regions]
    entries = [
        read_pagemap(pid, first, n)
        for (_name, pid, _a, _l), (first, n) in zip(regions, spans, strict=True)
    ]
    offsets = np.cumsum([0] + [n for _first, n in spans]).tolist()
    table = PfnTable()
    try:
        pm = np.concatenate(entries) if entries else np.zeros(0, np.uint64)
        present = _bit(pm, PM_PRESENT)
        pfns = pm[present] & np.uint64(PM_PFN_MASK)
        distinct = _Distinct.of(pfns)
        info = _gather(distinct, table)
        nr = np.zeros(len(pm), np.int64)
        nr[present] = info.nr
        huge, all_scanned = _pmd_mapped(regions, spans, entries, nr, table)
    finally:
        table.close()
    raw, source = None, None
    if read_bytes:
        read, source = _to_read(distinct, ~_bit(info.flags, KPF_ZERO), exact)
        wanted = np.zeros(len(pm), dtype=bool)
        wanted[np.flatnonzero(present)[read]] = True
        procs = [(pid, first, off) for (_n, pid, _a, _l), (first, _n2), off in
                 zip(regions, spans, offsets, strict=False)]  # fmt: skip
        raw = _read_mem(procs, wanted, exact)
    labels = _Labels()
    pages = _region_arrays(pm, huge, info, labels, raw, exact)
    swapped = _bit(pm, PM_SWAP)
    if mincore is not None and swapped.any():  # no swap PTE, no question for the processes
        pages.swapcache[swapped] = _swap_cached(regions, spans, entries, mincore)[swapped]
    if raw is not None and source is not None:  # pages read once, for every region that maps them
        pres = np.flatnonzero(present)
        pages.digest[pres] = pages.digest[pres[source]]
        pages.head[pres] = pages.head[pres[source]]
    out = {
        name: pages.cut(lo, hi)
        for (name, _pid, _a, _l), lo, hi in zip(regions, offsets, offsets[1:], strict=False)
    }
    return out, labels.folios.by_label("F"), all_scanned, entries


def _pmd_mapped(
    regions: list[tuple[str, int, int, int]],
    spans: list[tuple[int, int]],
    entries: list[U64],
    nr: I64,
    table: PfnTable,
) -> tuple[npt.NDArray[np.bool_], bool]:
    """Per page, regions laid end to end, whether a PMD maps it (PAGEMAP_SCAN, else inferred),
    and whether PAGEMAP_SCAN answered every region asked. Only a PMD-sized folio can be mapped
    by a PMD (a THP, or the huge zero page), so a region with no present page of one (nr: its
    folio's pages, 0 where nothing is present) is not asked."""
    huges = []
    all_scanned = True
    lo = 0
    for (_name, pid, _a, _l), (first, n), pm in zip(regions, spans, entries, strict=True):
        huge: npt.NDArray[np.bool_] | None = np.zeros(n, dtype=bool)
        if (nr[lo : lo + n] >= HPAGE_NR).any():
            huge = scan_huge(pid, first, n)
        if huge is None:
            all_scanned = False
            huge = _infer_huge(pm, first, table)
        huges.append(huge)
        lo += n
    return (np.concatenate(huges) if huges else np.zeros(0, dtype=bool)), all_scanned


def _swap_cached(
    regions: list[tuple[str, int, int, int]],
    spans: list[tuple[int, int]],
    entries: list[U64],
    mincore: Mincore,
) -> npt.NDArray[np.bool_]:
    """Per page, regions laid end to end: a swap PTE whose slot has an up-to-date swap-cache
    folio, as mincore() in the process tells it (6.18 mincore_pte_range -> mincore_swap), asked
    once per run of swap PTEs."""
    out = []
    for (_name, pid, _a, _l), (first, n), pm in zip(regions, spans, entries, strict=True):
        cached = np.zeros(n, dtype=bool)
        for i, j in _runs(_bit(pm, PM_SWAP)):
            cached[i:j] = np.frombuffer(mincore(pid, first + i * PAGE, j - i), np.uint8) & 1
        out.append(cached)
    return np.concatenate(out) if out else np.zeros(0, dtype=bool)


def _to_read(
    distinct: _Distinct, readable: npt.NDArray[np.bool_], exact: bool
) -> tuple[npt.NDArray[np.bool_], I64 | None]:
    """Which present pages to read (readable ones; the first of each PFN unless exact, where
    every page keeps its own bytes), and for each present page the one whose bytes it has."""
    if exact:
        return readable, None
    source = distinct.first[distinct.inverse]
    read = readable & (source == np.arange(len(source)))
    return read, source
