"""The canonical observation as arrays: one NumPy array per field, one element per 4 KiB page.

observe.py (the live kernel) and model_observe.py (the model) both build a `PageArrays` per
region; compare.py compares them field by field as arrays. `PageObs`, one page as a tuple of
Python values, is made only on demand: for a report's differing pages, for rendering, and for
callers that walk `Snapshot.regions`.

Encodings (a value outside a field's range stands for None):
- folio: F<k> is k, the zero page "Z" is -2, the huge zero page "HZ" is -3;
- swap: S<k> is k;
- level: 0 not present, 1 "pte", 2 "pmd"; anon_exclusive and pm_exclusive: -1, 0, 1;
- digest: blake2b-48 of the bytes as an integer (the hex digest read as a big-endian number);
- head: the first 8 bytes as a little-endian uint64, with has_head saying whether there are any;
- data: the region's bytes (exact=True), a page's 4096 of them shown where it has a digest;
- pfn: the page's own frame number (NA for the zero pages), never shown or compared as a value,
  only as "the same page as at the last observation or not" (compare.diff_identity).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

PAGE = 4096
NA = np.iinfo(np.int64).min  # None in the int64 fields
NO_DIGEST = np.uint64(np.iinfo(np.uint64).max)  # None in digest (a digest has 48 bits)
FOLIO_Z, FOLIO_HZ = -2, -3
LEVELS: tuple[str | None, ...] = (None, "pte", "pmd")
LEVEL_PTE, LEVEL_PMD = 1, 2
ZERO_DIGEST = hashlib.blake2b(bytes(PAGE), digest_size=6).hexdigest()
ZERO_DIGEST_INT = int(ZERO_DIGEST, 16)

I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
U64 = npt.NDArray[np.uint64]
Bools = npt.NDArray[np.bool_]


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


def digest_int(page: bytes | memoryview) -> int:
    """blake2b-48 of one page, as the integer the digest field holds."""
    return int.from_bytes(hashlib.blake2b(page, digest_size=6).digest(), "big")


@dataclass
class PageArrays:
    """Every field of PageObs for the pages of one region, as arrays (module docstring)."""

    folio: I64
    subpage: I64
    nr: I64
    level: I8
    mapcount: I64
    anon_exclusive: I8
    ksm: Bools
    zero: Bools
    swapped: Bools
    swap: I64
    swapcache: Bools
    pm_exclusive: I8
    digest: U64
    head: U64
    has_head: Bools
    pfn: I64
    data: bytes | None = None

    @classmethod
    def absent(cls, n: int) -> PageArrays:
        """n pages nothing maps (pagemap entry 0); fields are filled in by slices."""
        return cls(
            np.full(n, NA, np.int64),
            np.full(n, NA, np.int64),
            np.full(n, NA, np.int64),
            np.zeros(n, np.int8),
            np.full(n, NA, np.int64),
            np.full(n, -1, np.int8),
            np.zeros(n, bool),
            np.zeros(n, bool),
            np.zeros(n, bool),
            np.full(n, NA, np.int64),
            np.zeros(n, bool),
            np.full(n, -1, np.int8),
            np.full(n, NO_DIGEST, np.uint64),
            np.zeros(n, np.uint64),
            np.zeros(n, bool),
            np.full(n, NA, np.int64),
        )

    def __len__(self) -> int:
        return len(self.folio)

    def page(self, i: int) -> PageObs:
        """Page i as a PageObs."""
        d = self.digest[i]
        data = None
        if self.data is not None and d != NO_DIGEST:
            data = self.data[i * PAGE : (i + 1) * PAGE]
        return PageObs(
            _folio_label(int(self.folio[i])),
            _opt(self.subpage[i]),
            _opt(self.nr[i]),
            LEVELS[int(self.level[i])],
            _opt(self.mapcount[i]),
            _opt_bool(self.anon_exclusive[i]),
            bool(self.ksm[i]),
            bool(self.zero[i]),
            bool(self.swapped[i]),
            None if self.swap[i] == NA else f"S{int(self.swap[i])}",
            bool(self.swapcache[i]),
            _opt_bool(self.pm_exclusive[i]),
            None if d == NO_DIGEST else f"{int(d):012x}",
            int(self.head[i]).to_bytes(8, "little") if self.has_head[i] else None,
            data,
        )

    def pages(self) -> list[PageObs]:
        return [self.page(i) for i in range(len(self))]

    @classmethod
    def from_pages(cls, pages: list[PageObs]) -> PageArrays:
        """The arrays of PageObs values (which must use the labels the encodings know)."""
        out = cls.absent(len(pages))
        for i, o in enumerate(pages):
            out.folio[i] = _folio_code(o.folio)
            out.subpage[i] = NA if o.subpage is None else o.subpage
            out.nr[i] = NA if o.nr is None else o.nr
            out.level[i] = LEVELS.index(o.level)
            out.mapcount[i] = NA if o.mapcount is None else o.mapcount
            out.anon_exclusive[i] = -1 if o.anon_exclusive is None else int(o.anon_exclusive)
            out.ksm[i], out.zero[i], out.swapped[i] = o.ksm, o.zero, o.swapped
            out.swap[i] = NA if o.swap is None else _label_number(o.swap, "S")
            out.swapcache[i] = o.swapcache
            out.pm_exclusive[i] = -1 if o.pm_exclusive is None else int(o.pm_exclusive)
            out.digest[i] = NO_DIGEST if o.digest is None else np.uint64(int(o.digest, 16))
            if o.head is not None:
                out.head[i] = int.from_bytes(o.head[:8].ljust(8, b"\0"), "little")
                out.has_head[i] = True
        if any(o.data is not None for o in pages):
            out.data = b"".join(o.data or bytes(PAGE) for o in pages)
        return out

    def cut(self, lo: int, hi: int) -> PageArrays:
        """Pages lo..hi-1 (views of these arrays)."""
        out = PageArrays(*(getattr(self, name)[lo:hi] for name in ARRAY_FIELDS))
        if self.data is not None:
            out.data = self.data[lo * PAGE : hi * PAGE]
        return out

    def fill(self, sel: slice | Bools | I64, **values: Any) -> None:
        """Set fields of the selected pages (a value is a scalar or one per selected page)."""
        for name, value in values.items():
            getattr(self, name)[sel] = value


ARRAY_FIELDS = tuple(f.name for f in fields(PageArrays) if f.name != "data")


def _opt(v: np.int64) -> int | None:
    return None if v == NA else int(v)


def _opt_bool(v: np.int8) -> bool | None:
    return None if v < 0 else bool(v)


def _folio_label(code: int) -> str | None:
    if code >= 0:
        return f"F{code}"
    return {FOLIO_Z: "Z", FOLIO_HZ: "HZ"}.get(code)


def _folio_code(label: str | None) -> int:
    if label is None:
        return int(NA)
    return {"Z": FOLIO_Z, "HZ": FOLIO_HZ}.get(label) or _label_number(label, "F")


def _label_number(label: str, prefix: str) -> int:
    if not (label.startswith(prefix) and label[len(prefix) :].isdigit()):
        raise ValueError(f"not a {prefix}<n> label: {label!r}")
    return int(label[len(prefix) :])


class FirstSight:
    """Labels F0, F1 ... (or S0 ...) numbered in order of first sight, shared across regions."""

    SMALL = 32

    def __init__(self) -> None:
        self.numbers: dict[int, int] = {}

    def label(self, keys: I64) -> I64:
        """The number of each key, giving new numbers to new keys in the order they come."""
        if len(keys) <= self.SMALL:  # a dict is quicker than np.unique for a few keys
            seen = self.numbers
            return np.array([seen.setdefault(k, len(seen)) for k in keys.tolist()], np.int64)
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        for key in uniq[np.argsort(first, kind="stable")].tolist():
            self.numbers.setdefault(key, len(self.numbers))
        numbers = np.fromiter((self.numbers[k] for k in uniq.tolist()), np.int64, len(uniq))
        return numbers[inverse.reshape(-1)]

    def by_label(self, prefix: str = "F") -> dict[str, int]:
        """label -> key (for debugging: folio label -> head PFN)."""
        return {f"{prefix}{n}": key for key, n in self.numbers.items()}


class _PageLists(Mapping[str, list[PageObs]]):
    """A snapshot's regions as lists of PageObs, made (and kept) only when asked for."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def __getitem__(self, name: str) -> list[PageObs]:
        arrays = self.snap.arrays[name]
        cached = self.snap._lists.get(name)
        if cached is None or cached[0] is not arrays:
            cached = (arrays, arrays.pages())
            self.snap._lists[name] = cached
        return cached[1]

    def __iter__(self) -> Iterator[str]:
        return iter(self.snap.arrays)

    def __len__(self) -> int:
        return len(self.snap.arrays)


class Snapshot:
    """Pages of named regions, labelled consistently across them; plus what it cost."""

    def __init__(
        self,
        regions: Mapping[str, PageArrays | list[PageObs]],
        pfns: dict[str, int],
        elapsed_s: float = 0.0,
        pagemap_scan: bool = True,
        stable: bool = True,  # the page tables did not change while they were read
    ) -> None:
        self.arrays: dict[str, PageArrays] = {
            name: pages if isinstance(pages, PageArrays) else PageArrays.from_pages(pages)
            for name, pages in regions.items()
        }
        self.pfns = pfns  # folio label -> head PFN (for debugging only)
        self.elapsed_s = elapsed_s
        self.pagemap_scan = pagemap_scan
        self.stable = stable
        self._lists: dict[str, tuple[PageArrays, list[PageObs]]] = {}

    def __repr__(self) -> str:
        sizes = {name: len(a) for name, a in self.arrays.items()}
        return f"Snapshot(regions={sizes}, stable={self.stable}, elapsed_s={self.elapsed_s:.4f})"

    @property
    def regions(self) -> Mapping[str, list[PageObs]]:
        """Every region as a list of PageObs (made on first access)."""
        return _PageLists(self)

    def structure(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every page's key(): what two equivalent runs have in common."""
        return {name: [p.key() for p in pages] for name, pages in self.regions.items()}

    def folios(self, name: str) -> list[str | None]:
        """The folio label of every page of one region."""
        return [p.folio for p in self.regions[name]]
