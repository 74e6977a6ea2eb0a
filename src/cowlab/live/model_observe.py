"""The model's side of a live comparison: the same canonical Snapshot that observe.py reads.

Per 4 KiB page of each named region of a modelled process: folio label (first sight, shared
across the regions in the order given), subpage, folio size, level (pmd/pte/None), mapcount as
/proc/kpagecount reports it (under CONFIG_NO_PAGE_MAPCOUNT a large folio's average),
anon_exclusive where kpageflags shows it, KSM/zero/swap fields and a digest of the bytes. PFNs
never leave this module.

Each region is read as arrays: the PTE tables' pfn/bits slices and the huge PMDs of the range
give one value per page, and the frames' flags and orders are indexed with the mapped PFNs all
at once. Page bytes come only through PageFrames.page_bytes() and has_data(): only pages with
data are read and digested, the others are ZERO_DIGEST.

The mapcount is derived from the page tables of every live modelled mm, not from the model's
struct page counters: kpagecount reports folio_precise_page_mapcount() (this page's PTE maps plus
the folio's PMD maps), which is what the counters *should* say; whether they do is the model's own
self-check (cowlab.checker), and kernel generations keep those counters in different shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from cowlab.kernel import Kernel, Process
from cowlab.live import pages as pg
from cowlab.live.pages import FirstSight, PageArrays, PageObs, Snapshot
from cowlab.mm.constants import (
    HPAGE_PMD_NR,
    PAGE_SIZE,
    PG_anon_exclusive,
    PG_ksm,
    PG_swapcache,
)
from cowlab.mm.mm import average_page_mapcount, heads_of
from cowlab.mm.mm_types import pmd_index, pte_index
from cowlab.mm.pgtable import PTE_MIGRATION, PTE_SPECIAL, HugePmd
from cowlab.policy import resolve

I64 = npt.NDArray[np.int64]
# What maps a page, per page of a region (before the frames are looked at).
NOTHING, BY_PTE, BY_PMD, BY_HUGE_ZERO = 0, 1, 2, 3
# A subpage of the zero page or the huge zero page: kpagecount 0, zeros.
ZERO_PAGE = {"mapcount": 0, "zero": True, "digest": pg.ZERO_DIGEST_INT, "has_head": True}


def models_anon_exclusive(kernel_id: str) -> bool:
    """Whether a kernel generation keeps PG_anon_exclusive, so the model can show it: the
    policy's answer (cowlab.policy), never a version test here."""
    return resolve(kernel_id).policy.anon_exclusive


class _Counts:
    """How many times each key occurs, looked up for many keys at once (0 for absent keys)."""

    def __init__(self, keys: I64) -> None:
        self.keys, self.counts = np.unique(keys, return_counts=True)

    def __getitem__(self, query: I64) -> I64:
        at = np.minimum(np.searchsorted(self.keys, query), max(len(self.keys) - 1, 0))
        if not len(self.keys):
            return np.zeros(len(query), np.int64)
        return np.where(self.keys[at] == query, self.counts[at], 0).astype(np.int64)


def mapcounts(k: Kernel) -> tuple[_Counts, _Counts]:
    """(PTE maps per pfn, PMD maps per head pfn) over every live process's page tables."""
    pte_pfns: list[I64] = []
    pmd_heads: list[int] = []
    for proc in k.processes.values():
        for entry in proc.mm.pmds.values():
            if isinstance(entry, HugePmd):
                if not entry.huge_zero:
                    pmd_heads.append(entry.pfn)
                continue
            # The zero page is mapped special: kpagecount shows 0 for it, as the kernel counts.
            normal = (entry.pfn >= 0) & ((entry.bits & (PTE_SPECIAL | PTE_MIGRATION)) == 0)
            pte_pfns.append(entry.pfn[normal])
    pte = np.concatenate(pte_pfns) if pte_pfns else np.zeros(0, np.int64)
    return _Counts(pte), _Counts(np.array(pmd_heads, dtype=np.int64))


class _Observer:
    """Labels, mapcounts and digests shared by every region of one model snapshot."""

    def __init__(self, k: Kernel, show_exclusive: bool) -> None:
        self.f = k.frames
        self.swap_cache = k.swap.cache  # slot -> its swap-cache page, -1 for none
        self.show_exclusive = show_exclusive
        self.folios = FirstSight()
        self.swaps = FirstSight()  # swap slot -> S<n>, first sight, as observe.py labels
        self.pte_maps, self.pmd_maps = mapcounts(k)
        # CONFIG_NO_PAGE_MAPCOUNT: kpagecount gives a large folio's pages its average mapcount,
        # from its PTE maps in all (per head) and its PMD maps
        self.folio_ptes = None if k.page_mapcount else self._folio_ptes()
        self.bytes: dict[int, tuple[int, int]] = {}  # pfn -> (digest, head) in this snapshot

    def _folio_ptes(self) -> _Counts:
        keys, counts = self.pte_maps.keys, self.pte_maps.counts
        return _Counts(np.repeat(heads_of(self.f, keys), counts))

    def regions(self, regions: Sequence[tuple[str, Process, int, int]]) -> dict[str, PageArrays]:
        """(name, process, addr, length) regions: their entries laid end to end, every field
        computed for all of them at once, then cut into one PageArrays per region."""
        spans = [_span(addr, length) for _name, _proc, addr, length in regions]
        offsets = np.cumsum([0] + [n for _first, n in spans]).tolist()
        total = offsets[-1]
        kind = np.zeros(total, np.int8)
        value = np.full(total, -1, np.int64)
        bits = np.zeros(total, np.uint8)
        for (_name, proc, _a, _l), (first, n), off in zip(regions, spans, offsets, strict=False):
            if proc.alive:  # a dead process maps nothing
                self._entries(proc, first, n, kind[off:], value[off:], bits[off:])
        out = PageArrays.absent(total)
        normal = np.zeros(total, dtype=bool)
        pte = kind == BY_PTE
        if pte.any():
            swapped = pte & (value <= -2)  # is_swap_pte(): the value encodes the slot
            if swapped.any():
                slots = -2 - value[swapped]
                out.swapped[:] = swapped
                out.swap[swapped] = self.swaps.label(slots)
                # what mincore() says of a swap PTE: its slot has a swap-cache page
                out.swapcache[swapped] = self.swap_cache[slots] >= 0
            normal = pte & (value >= 0) & ((bits & PTE_MIGRATION) == 0)  # migrating: absent
            special = normal & ((bits & PTE_SPECIAL) != 0)  # the shared zero page
            if special.any():
                out.fill(special, folio=pg.FOLIO_Z, subpage=0, nr=1, level=pg.LEVEL_PTE)
                out.fill(special, **ZERO_PAGE)
                normal &= ~special
        hz = kind == BY_HUGE_ZERO
        if hz.any():
            out.fill(hz, folio=pg.FOLIO_HZ, subpage=value[hz], nr=HPAGE_PMD_NR, level=pg.LEVEL_PMD)
            out.fill(hz, **ZERO_PAGE)
        by_pmd = kind == BY_PMD
        normal |= by_pmd
        if normal.any():
            self._mapped(out, normal, by_pmd, value)
        return {
            name: out.cut(lo, hi)
            for (name, _p, _a, _l), lo, hi in zip(regions, offsets, offsets[1:], strict=False)
        }

    def _entries(
        self,
        proc: Process,
        first: int,
        n: int,
        kind: npt.NDArray[np.int8],
        value: I64,
        bits: npt.NDArray[np.uint8],
    ) -> None:
        """Per page of [first, first + n pages): what maps it (NOTHING, BY_PTE ...), the PTE's
        pfn value or the PMD-mapped subpage's pfn (the huge zero page: the subpage's index), and
        the PTE's bits, written to the start of kind, value and bits; a slice per PMD slot."""
        pmds = proc.mm.pmds
        i = 0
        while i < n:
            va = first + i * PAGE_SIZE
            s = pte_index(va)
            take = min(HPAGE_PMD_NR - s, n - i)
            entry = pmds.get(pmd_index(va))
            if isinstance(entry, HugePmd):
                kind[i : i + take] = BY_HUGE_ZERO if entry.huge_zero else BY_PMD
                # a subpage's pfn; for the huge zero page, the subpage's index
                value[i : i + take] = np.arange(s, s + take) + (0 if entry.huge_zero else entry.pfn)
            elif entry is not None:
                kind[i : i + take] = BY_PTE
                value[i : i + take] = entry.pfn[s : s + take]
                bits[i : i + take] = entry.bits[s : s + take]
            i += take

    def _mapped(
        self, out: PageArrays, sel: npt.NDArray[np.bool_], by_pmd: npt.NDArray[np.bool_], value: I64
    ) -> None:
        """The selected pages: normal anonymous pages (subpages of a THP or an mTHP, or small
        pages), PMD-mapped where by_pmd says so, else PTE-mapped."""
        pfns = value[sel]
        flags = self.f.flags
        head = heads_of(self.f, pfns)
        nr = np.left_shift(1, self.f.order[head].astype(np.int64))
        sub = pfns - head
        pmd = by_pmd[sel]
        out.folio[sel] = self.folios.label(head)
        out.pfn[sel] = pfns
        out.subpage[sel] = sub
        out.nr[sel] = nr
        out.level[sel] = np.where(pmd, pg.LEVEL_PMD, pg.LEVEL_PTE)
        out.mapcount[sel] = self.pte_maps[pfns] + self.pmd_maps[head]
        if self.folio_ptes is not None:
            entire = self.pmd_maps[head]
            total = self.folio_ptes[head] + entire
            average = average_page_mapcount(total, entire, self.f.order[head].astype(np.int64))
            out.mapcount[sel] = np.where(nr > 1, average, out.mapcount[sel])
        if self.show_exclusive:
            # kpageflags shows PG_anon_exclusive on a large folio's head only; a PMD mapping
            # makes observe.py use the head's flag for every subpage (see observe.py).
            visible = (nr == 1) | (sub == 0) | pmd
            excl = (flags[head] & PG_anon_exclusive) != 0
            out.anon_exclusive[np.flatnonzero(sel)[visible]] = excl[visible]
        out.ksm[sel] = (flags[head] & PG_ksm) != 0
        out.swapcache[sel] = (flags[pfns] & PG_swapcache) != 0
        out.digest[sel], out.head[sel] = self._bytes(pfns)
        out.has_head[sel] = True

    def _bytes(self, pfns: I64) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
        """(digest, first 8 bytes) of each page: only frames with data are read, each once."""
        digest = np.full(len(pfns), pg.ZERO_DIGEST_INT, np.uint64)
        head = np.zeros(len(pfns), np.uint64)
        with_data = np.flatnonzero(self.f.has_data(pfns))
        for i, pfn in zip(with_data.tolist(), pfns[with_data].tolist(), strict=True):
            got = self.bytes.get(pfn)
            if got is None:
                data = self.f.page_bytes(pfn)
                got = self.bytes[pfn] = (pg.digest_int(data), int.from_bytes(data[:8], "little"))
            digest[i], head[i] = got
        return digest, head


def absent() -> PageObs:
    """A page nothing maps (pagemap entry 0)."""
    return PageObs(
        None, None, None, None, None, None, False, False, False, None, False, None, None, None
    )


def model_snapshot(
    k: Kernel,
    regions: Sequence[tuple[str, Process, int, int]],
    *,
    show_exclusive: bool | None = None,
) -> Snapshot:
    """Observe (name, process, addr, length) regions of the model with labels shared in order."""
    if show_exclusive is None:
        show_exclusive = k.policy.anon_exclusive
    obs = _Observer(k, show_exclusive)
    out = obs.regions(regions)
    return Snapshot(out, obs.folios.by_label("F"), 0.0, True)


def _span(addr: int, length: int) -> tuple[int, int]:
    """The first page and the number of pages of [addr, addr+length)."""
    first = addr - addr % PAGE_SIZE
    return first, (addr + length - first + PAGE_SIZE - 1) // PAGE_SIZE
