"""Physical frames: the mem_map of struct page fields as NumPy arrays, and the page allocator.

4.5's fields for anonymous memory, one array element per 4 KiB frame (pfn):
``flags``, ``_mapcount`` (every page, starts at -1), ``_count`` (meaningful on heads and small
pages; tails stay 0), ``mapping`` (the anon_vma id, 0 for none), ``index`` (page->index) and
``private`` (swap entry).

The fields only some frames use are addressed by pfn in the same way but stored in a row per
such frame (``RowField``), so the others pay nothing for them: those of a large folio — 4.5's
``compound_mapcount`` (in page[1]: ``f.compound_mapcount[head + 1]``), 5.7's ``_pincount`` and
6.x's ``_large_mapcount``, ``_nr_pages_mapped``, ``mm_id`` and ``mm_id_mapcount`` (at the head)
— and a swap-cache page's ``private`` (its swap slot).

Page contents are the model's, not struct page's: ``content`` holds, per frame, the id of an
interned, reference-counted byte string (trimmed after its last nonzero byte; id 0 is all
zeros). Frames with equal bytes share one string, so a fill pattern or a forked page costs
4 bytes per frame, not 4 KiB.

pfn 0 is the shared zero page and pfns 512..1023 the huge zero page, as reserved frames.
"""

from __future__ import annotations

import copyreg
from collections.abc import Iterator
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

from cowlab.mm.constants import (
    HPAGE_PMD_NR,
    HPAGE_PMD_ORDER,
    PAGE_SIZE,
    PG_allocated,
    PG_head,
    PG_reserved,
    PG_swapbacked,
    PG_tail,
    PG_uptodate,
)

ZERO_PFN = 0
HUGE_ZERO_PFN = HPAGE_PMD_NR
FIRST_FREE_PFN = 2 * HPAGE_PMD_NR

IntArray = npt.NDArray[np.int64]


FRAME_FIELDS = {  # every per-frame field and the value a free frame holds
    "flags": 0,
    "_mapcount": -1,
    "_count": 0,
    "mapping": 0,
    "index": 0,
    "order": 0,
    "content": 0,
}
# the fields of a row (RowField): (the free value, its page of the folio, values per row)
FOLIO_FIELDS = {
    "compound_mapcount": (-1, 1, 1),
    "_pincount": (0, 0, 1),
    "_large_mapcount": (-1, 0, 1),
    "_nr_pages_mapped": (0, 0, 1),
    "mm_id": (0, 0, 2),
    "mm_id_mapcount": (-1, 0, 2),
}
SWAPCACHE_FIELDS = {"private": (0, 0, 1)}
# every struct page field and the value it reads as on a free frame
FIELDS = {
    **FRAME_FIELDS,
    **{name: fill for name, (fill, _, _) in (FOLIO_FIELDS | SWAPCACHE_FIELDS).items()},
}


@cache
def flags_without(mask: int) -> np.uint32:
    """The complement of page flags as a uint32 (NumPy refuses negative Python ints); made
    once per mask (a NumPy scalar costs more to make than to use)."""
    return np.uint32(~mask & 0xFFFFFFFF)


def _view_of(view: memoryview) -> tuple[type[memoryview], tuple[object]]:
    """How copy and pickle make a view again: a view of the copy of its array (copy.deepcopy's
    memo holds that copy once, so the view and the array's attribute stay one buffer). The
    registration is process-wide: any view but a whole NumPy array's (a slice or a cast of one,
    a read-only one, a view of bytes) is refused with the TypeError every memoryview's copy and
    pickle raised before, not copied as its whole object."""
    array = view.obj
    if type(array) is not np.ndarray or _layout(view) != _layout(array.data):
        raise TypeError(f"cannot pickle a memoryview other than a whole array's: {view!r}")
    return memoryview, (array,)


def _layout(view: memoryview) -> tuple[object, ...]:
    # same array, same format, shape and strides: the same elements (a memoryview slices
    # only its one dimension, so a part differs in its shape or strides)
    return view.format, view.shape, view.strides, view.readonly


copyreg.pickle(memoryview, _view_of)


class PageFrames:
    """struct page for every frame, plus the allocator's free lists (order 0 and order 9).

    Each per-frame array has a memoryview of the same buffer, ``flags_at`` for ``flags`` and
    so on: one frame's field read or written through it costs a third to a half of
    ``ndarray.item()`` or a NumPy scalar store (15-40 against 35-90 ns, timeit), and a page's
    fault makes 15 to 25 of them. Runs of frames use the arrays."""

    flags_at: memoryview
    _mapcount_at: memoryview
    _count_at: memoryview
    mapping_at: memoryview
    index_at: memoryview
    order_at: memoryview
    content_at: memoryview

    def __init__(self, capacity: int = 4 * HPAGE_PMD_NR) -> None:
        self.nr = 0
        self.flags = np.zeros(0, dtype=np.uint32)
        self._mapcount = np.zeros(0, dtype=np.int32)
        self._count = np.zeros(0, dtype=np.int32)
        self.mapping = np.zeros(0, dtype=np.int32)
        self.index = np.zeros(0, dtype=np.int64)
        self.swapcache = Rows(SWAPCACHE_FIELDS)  # a row per swap-cache page
        self.private = self.swapcache.field("private")  # its swap slot
        self.folios = Rows(FOLIO_FIELDS)  # a row per large folio, by head
        # 4.5: PMD mappings of a THP, in page[1]; 6.x's _entire_mapcount is kept here
        self.compound_mapcount = self.folios.field("compound_mapcount")
        # 5.7+: the exact pin count of a compound page (hpage_pincount, later folio->_pincount)
        self._pincount = self.folios.field("_pincount")
        # 6.x, at the head: total mappings, PTE-mapped pages, the two tracked MMs and their
        # mapcounts (CONFIG_MM_ID)
        self._large_mapcount = self.folios.field("_large_mapcount")
        self._nr_pages_mapped = self.folios.field("_nr_pages_mapped")
        self.mm_id = self.folios.field("mm_id")
        self.mm_id_mapcount = self.folios.field("mm_id_mapcount")
        self.order = np.zeros(0, dtype=np.int8)  # folio order, on every page of the folio
        self.content = np.zeros(0, dtype=np.int32)  # the model's: id of the frame's bytes
        self._grow(max(capacity, FIRST_FREE_PFN))
        self.nr = FIRST_FREE_PFN
        self.free = {o: FreeList() for o in range(HPAGE_PMD_ORDER + 1)}
        self.blobs = ContentStore()
        self.nr_allocated = 0
        self.flags[ZERO_PFN] = PG_reserved
        self.flags[HUGE_ZERO_PFN] = PG_reserved | PG_head
        self.flags[HUGE_ZERO_PFN + 1 : HUGE_ZERO_PFN + HPAGE_PMD_NR] = PG_reserved | PG_tail
        self.order[HUGE_ZERO_PFN : HUGE_ZERO_PFN + HPAGE_PMD_NR] = HPAGE_PMD_ORDER
        self.huge_zero_refcount = 0

    def _grow(self, need: int) -> None:
        old = len(self.flags)
        if need <= old:
            return
        # a sixteenth more: the arrays are most of the model, and grow in place (realloc moves
        # no bytes), so small steps cost little
        size = max(need, old + old // 16)
        for name, fill in FRAME_FIELDS.items():
            view = getattr(self, name + "_at", None)
            if view is not None:  # a view holds its array: released, it can grow in place
                view.release()
            try:  # in place (realloc: no copy, no second array) when no view of it is held
                getattr(self, name).resize(size, refcheck=True)
            except ValueError:
                arr = getattr(self, name)
                new = np.empty(size, dtype=arr.dtype)
                new[:old] = arr
                setattr(self, name, new)
            getattr(self, name)[old:] = fill
            setattr(self, name + "_at", getattr(self, name).data)

    # --- allocation (mm/page_alloc.c) ------------------------------------------------------

    def _reset(self, first: int, nr: int) -> None:
        self._reset_at(slice(first, first + nr))

    def _reset_at(self, where: int | slice | IntArray) -> None:
        for name, fill in FRAME_FIELDS.items():
            getattr(self, name)[where] = fill

    def _block(self) -> int:
        """A free 2 MiB-aligned block of 512 frames (a free THP, or new memory)."""
        if self.free[HPAGE_PMD_ORDER]:
            return self.free[HPAGE_PMD_ORDER].pop()
        head = -(-self.nr // HPAGE_PMD_NR) * HPAGE_PMD_NR
        self._grow(head + HPAGE_PMD_NR)
        self.free[0].extend(np.arange(head - 1, self.nr - 1, -1))
        self.nr = head + HPAGE_PMD_NR
        return head

    def alloc_page(self) -> int:
        """alloc_page(GFP_HIGHUSER_MOVABLE|__GFP_ZERO): a zeroed small page with _count 1.
        (One per fault: the free lists' lengths are read as fields, not through len().)"""
        small = self.free[0]
        if small._nr:
            pfn = small.pop()
        elif self.free[HPAGE_PMD_ORDER]._nr:
            block = self.free[HPAGE_PMD_ORDER].pop()
            small.extend(np.arange(block + HPAGE_PMD_NR - 1, block, -1))
            pfn = block
        else:
            pfn = self.nr
            if pfn >= len(self.flags):
                self._grow(pfn + 1)
            self.nr += 1
        self.flags_at[pfn] = PG_allocated | PG_uptodate | PG_swapbacked
        self._count_at[pfn] = 1
        self.nr_allocated += 1
        return pfn

    def alloc_pages(self, n: int) -> IntArray:
        """n alloc_page() calls at once: the same frames, in the order they would come."""
        out = np.empty(n, dtype=np.int64)
        got = 0
        small = self.free[0]
        while got < n:
            if small:
                take = min(n - got, len(small))
                out[got : got + take] = small.take(take)
            elif self.free[HPAGE_PMD_ORDER]:
                block = self.free[HPAGE_PMD_ORDER].pop()
                small.extend(np.arange(block + HPAGE_PMD_NR - 1, block, -1))
                out[got], take = block, 1
            else:
                take = n - got
                self._grow(self.nr + take)
                out[got:] = np.arange(self.nr, self.nr + take)
                self.nr += take
            got += take
        self.flags[out] = PG_allocated | PG_uptodate | PG_swapbacked
        self._count[out] = 1
        self.nr_allocated += n
        return out

    def alloc_folio(self, order: int) -> int:
        """folio_alloc(): a compound page of 2**order frames (order 1..9), head _count 1.

        No buddy merging: smaller orders are carved out of 2 MiB blocks and freed to their own list.
        """
        nr = 1 << order
        if self.free[order]:
            head = self.free[order].pop()
        else:
            head = self._block()
            self.free[order].extend(np.arange(head + HPAGE_PMD_NR - nr, head, -nr))
        base = PG_allocated | PG_uptodate | PG_swapbacked
        self.flags[head] = base | PG_head
        self.flags[head + 1 : head + nr] = base | PG_tail
        self.order[head : head + nr] = order
        self._count[head] = 1
        self.folios.add(head)
        self.nr_allocated += nr
        return head

    def alloc_hugepage(self) -> int:
        """alloc_hugepage_vma + prep_transhuge_page: an order-9 compound page, head _count 1."""
        return self.alloc_folio(HPAGE_PMD_ORDER)

    def reset_folio_fields(self, head: int) -> None:
        """The large-folio fields of a compound page that stops being one (split)."""
        self.folios.remove(head)

    def free_page(self, pfn: int) -> None:
        """__free_pages of an order-0 page whose _count reached zero: its fields go back to
        the free values, so allocation need not reset them."""
        self.blobs.put(self.content_at[pfn])
        self._reset_at(pfn)  # a scalar store per field: a one-frame slice's costs 8x more
        self.free[0].append(pfn)
        self.nr_allocated -= 1

    def free_pages(self, pfns: IntArray) -> None:
        """free_page() of many order-0 pages, in order."""
        self.blobs.put_many(self.content[pfns])
        self._reset_at(pfns)
        self.free[0].extend(pfns)
        self.nr_allocated -= int(pfns.size)

    def free_folio(self, head: int) -> None:
        """free_transhuge_page()/folio_put(): the caller took it off the deferred split queue."""
        order = self.order.item(head)
        nr = 1 << order
        self.blobs.put_many(self.content[head : head + nr])
        self._reset(head, nr)
        self.folios.remove(head)
        self.free[order].append(head)
        self.nr_allocated -= nr

    # --- contents ------------------------------------------------------------------------

    def page_data(self, pfn: int) -> bytes:
        """The frame's bytes trimmed after the last nonzero one (b"" for a zero-filled frame)."""
        return self.blobs.data[self.content_at[pfn]]

    def read(self, pfn: int, offset: int, n: int) -> bytes:
        chunk = self.page_data(pfn)[offset : offset + n]
        return chunk if len(chunk) == n else chunk + bytes(n - len(chunk))

    def write(self, pfn: int, offset: int, payload: bytes) -> None:
        """Store payload at offset in the frame: the new contents interned before the old
        are dropped (as copy_page). A single access's path: the frame's content id read once."""
        blobs = self.blobs
        old = self.content_at[pfn]
        data = blobs.data[old]
        end = offset + len(payload)
        if not offset and end >= len(data):  # the store covers every byte the page held
            new = blobs.get(bytes(payload))
        else:
            buf = bytearray(data)
            if len(buf) < end:
                buf.extend(bytes(end - len(buf)))
            buf[offset:end] = payload
            new = blobs.get(bytes(buf))
        if old:  # a fresh frame's is 0, which holds nothing to drop (no put() call)
            blobs.put(old)
        self.content_at[pfn] = new

    def write_pages(self, pfns: list[int], page: bytes) -> None:
        """write() of one whole page's bytes to each frame in turn, as array operations: the
        string is interned before any frame's old contents are dropped, and those are dropped
        in frame order (the content ids freed, and so reused later, are the loop's)."""
        if len(pfns) == 1:
            self.write(pfns[0], 0, page)
            return
        blob = self.blobs.get(page)
        self.blobs.hold(blob, len(pfns) - 1)
        old = self.content[pfns]
        self.content[pfns] = blob
        self.blobs.put_in_order(old)

    def copy_page(self, dst: int, src: int) -> None:
        """copy_user_highpage: dst gets src's bytes (held before dst's old ones are dropped, as
        write(); a new frame, every COW fault's, holds none and drops nothing: no put() call)."""
        blob = self.blobs.hold(self.content_at[src])
        old = self.content_at[dst]
        if old:
            self.blobs.put(old)
        self.content_at[dst] = blob

    def copy_pages(self, dst: IntArray, src: IntArray) -> None:
        """copy_user_highpage for many pages (dst frames hold nothing yet)."""
        ids = self.content[src]
        self.blobs.hold_many(ids)
        self.content[dst] = ids

    def fill_pages(self, pfns: IntArray, value: int) -> None:
        """memset of whole frames to one byte: all of them share one string."""
        if not pfns.size:
            return
        self.blobs.put_many(self.content[pfns])
        blob = self.blobs.get(bytes([value]) * PAGE_SIZE if value else b"")
        self.blobs.hold(blob, pfns.size - 1)
        self.content[pfns] = blob

    def page_bytes(self, pfn: int) -> bytes:
        return self.read(pfn, 0, PAGE_SIZE)

    def has_data(self, pfns: IntArray) -> npt.NDArray[np.bool_]:
        """Which of these frames hold a nonzero byte (the others read as zeros)."""
        return self.content[pfns] != 0

    def allocated(self) -> IntArray:
        """Every frame handed out by the allocator and not freed since."""
        return (self.flags[: self.nr] & PG_allocated).nonzero()[0].astype(np.int64, copy=False)


class FreeList:
    """One order's free list, a stack of pfns (the last freed is the next allocated) in a
    NumPy array: 4 bytes a frame, where a Python list of ints took 40."""

    def __init__(self) -> None:
        self._pfns = np.zeros(0, dtype=np.int32)
        self._nr = 0

    def pfns(self) -> npt.NDArray[np.int32]:
        """The free pfns, the next one to be allocated last (a view)."""
        return self._pfns[: self._nr]

    def __len__(self) -> int:
        return self._nr

    def __iter__(self) -> Iterator[int]:
        return iter(self.pfns().tolist())

    def __contains__(self, pfn: object) -> bool:
        return bool((self.pfns() == pfn).any())

    def __getitem__(self, i: int) -> int:
        return int(self.pfns()[i])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> npt.NDArray[Any]:
        return np.array(self.pfns(), dtype=dtype, copy=copy)

    def append(self, pfn: int) -> None:
        self._room(1)
        self._pfns[self._nr] = pfn
        self._nr += 1

    def extend(self, pfns: IntArray) -> None:
        self._room(pfns.size)
        self._pfns[self._nr : self._nr + pfns.size] = pfns
        self._nr += pfns.size

    def pop(self) -> int:
        if not self._nr:
            raise IndexError("pop from an empty free list")
        self._nr -= 1
        return self._pfns.item(self._nr)

    def take(self, n: int) -> IntArray:
        """n pop()s at once, in the order they would come."""
        assert n <= self._nr
        self._nr -= n
        return self._pfns[self._nr : self._nr + n][::-1].astype(np.int64)

    def _room(self, n: int) -> None:
        if self._nr + n > self._pfns.size:  # doubling; the unused part is never touched
            grown = np.empty(max(2 * self._pfns.size, self._nr + n, 64), dtype=np.int32)
            grown[: self._nr] = self.pfns()
            self._pfns = grown


class Rows:
    """The frames that hold fields few frames use (large folios by head, swap-cache pages):
    a row each (``row[pfn]``), rows reused once the frame gives them up."""

    def __init__(self, spec: dict[str, tuple[int, int, int]]) -> None:
        self.spec = spec
        self.row: dict[int, int] = {}
        self.fields: list[RowField] = []
        self._spare: list[int] = []
        self._by_pfn: tuple[IntArray, IntArray] | None = None  # (pfns, rows), sorted by pfn

    def field(self, name: str) -> RowField:
        fill, page, width = self.spec[name]
        field = RowField(self, fill, page, width)
        self.fields.append(field)
        return field

    def add(self, pfn: int) -> None:
        """A row for pfn, holding the free values."""
        row = self._spare.pop() if self._spare else len(self.row)
        for field in self.fields:
            field.hold(row)
        self.row[pfn] = row
        self._by_pfn = None

    def remove(self, pfn: int) -> None:
        """pfn gives its row up (freed, split, out of the swap cache): back to the free values."""
        row = self.row.pop(pfn)
        for field in self.fields:
            field.data[row] = field.fresh()
        self._spare.append(row)
        self._by_pfn = None

    def sorted(self) -> tuple[IntArray, IntArray]:
        """(pfns, rows) sorted by pfn, for looking many pfns up at once."""
        if self._by_pfn is None:
            pfns = np.fromiter(self.row, dtype=np.int64, count=len(self.row))
            rows = np.fromiter(self.row.values(), dtype=np.int64, count=len(self.row))
            order = np.argsort(pfns)
            self._by_pfn = pfns[order], rows[order]
        return self._by_pfn

    def rows(self, pfns: IntArray) -> IntArray:
        """The row of each of pfns, -1 where it has none."""
        if not self.row:
            return np.full(pfns.shape, -1, dtype=np.int64)
        keys, rows = self.sorted()
        at = np.minimum(np.searchsorted(keys, pfns), keys.size - 1)
        return np.where(keys[at] == pfns, rows[at], -1)


class RowField:
    """A struct page field few frames use, read and written by pfn as the per-frame arrays
    are — ``f._pincount[head]``, ``f.mm_id[head, slot]``, ``f._pincount[heads]``,
    ``f.compound_mapcount[head + 1]`` (4.5 keeps it in page[1]) — but stored in the frame's
    row. Any other pfn reads as the free value; writing there is a bug (KeyError). The rows are
    a Python list (of ints, or of lists for the two-slot fields): a fault reads and writes one
    at a time, which a list does several times faster than an array."""

    def __init__(self, rows: Rows, fill: int, page: int, width: int) -> None:
        self.rows = rows
        self.row = rows.row  # the same dict: one lookup less on the fault paths
        self.fill = fill
        self.page = page  # page[page]'s field: a row's pfn + page addresses it
        self.width = width
        self.data: list[Any] = []
        # what other pfns read; a tuple for two slots, so that writing to it fails
        self.free_value: Any = fill if width == 1 else (fill,) * width

    def fresh(self) -> Any:
        """A row's value before anything is written to it."""
        return self.fill if self.width == 1 else [self.fill] * self.width

    def hold(self, row: int) -> None:
        """Room for row (a new row is the next one)."""
        if row == len(self.data):
            self.data.append(self.fresh())

    def __getitem__(self, key: RowKey) -> Any:
        if isinstance(key, int):  # one pfn, what the fault paths ask: no more than a lookup
            row = self.row.get(key - self.page)
            return self.free_value if row is None else self.data[row]
        pfn, rest = _split_key(key)
        if isinstance(pfn, slice):
            return self._dense(pfn)[(slice(None), *rest)]
        if isinstance(pfn, np.ndarray):
            return self._many(pfn)[(slice(None), *rest)]
        row = self.row.get(int(pfn) - self.page)
        value = self.free_value if row is None else self.data[row]
        return value[rest[0]] if rest else value

    def __setitem__(self, key: RowKey, value: Any) -> None:
        if isinstance(key, int) and self.width == 1 and key - self.page in self.row:
            self.data[self.row[key - self.page]] = value
            return
        pfn, rest = _split_key(key)
        assert not isinstance(pfn, slice), "a slice of a row field is read-only"
        if not isinstance(pfn, np.ndarray):
            row = self._row(int(pfn))
            if rest:
                self.data[row][rest[0]] = int(value)
            else:
                self.data[row] = int(value) if self.width == 1 else list(value)
            return
        assert self.width == 1, "many pfns at once: one-slot fields only"
        rows = self.rows.rows(pfn - self.page)
        if (rows < 0).any():
            self._row(int(pfn[np.argmin(rows)]))  # raises
        values = np.broadcast_to(value, rows.shape).tolist()
        for row, one in zip(rows.tolist(), values, strict=True):
            self.data[row] = one

    def add(self, pfn: int, delta: int) -> int:
        """pfn's one-slot field plus delta, stored and returned: a fault's counter update in
        one call, where ``f.field[pfn] += delta`` makes two (KeyError without a row)."""
        row = self.row[pfn - self.page]
        value: int = self.data[row] + delta
        self.data[row] = value
        return value

    def _row(self, pfn: int) -> int:
        row = self.row.get(pfn - self.page)
        if row is None:
            raise KeyError(f"pfn {pfn:#x} holds no such field")
        return row

    def scattered(self, position: IntArray, n: int) -> npt.NDArray[np.int32]:
        """The field at n frames, frame pfn at index position[pfn] (negative, or past the
        end of position: not one of them), from the rows alone: a lookup per frame costs
        more where few frames hold a row."""
        out = np.full((n, *(() if self.width == 1 else (self.width,))), self.fill, np.int32)
        for pfn, row in self.row.items():
            if pfn + self.page < position.size:
                at = position[pfn + self.page]
                if at >= 0:
                    out[at] = self.data[row]
        return out

    def _many(self, pfns: IntArray) -> npt.NDArray[np.int32]:
        """The field at each of pfns, as an array."""
        out = np.full((pfns.size, *(() if self.width == 1 else (self.width,))), self.fill)
        rows = self.rows.rows(pfns - self.page)
        held = np.flatnonzero(rows >= 0)
        if held.size:
            out[held] = [self.data[row] for row in rows[held].tolist()]
        return out.astype(np.int32)

    def _dense(self, pfns: slice) -> npt.NDArray[np.int32]:
        """The field as a per-frame array over pfns (a snapshot)."""
        start, stop = pfns.start or 0, pfns.stop
        assert stop is not None and pfns.step in (None, 1), "a slice needs an end, no step"
        position = np.arange(-start, stop - start, dtype=np.int64)
        return self.scattered(position, stop - start)


RowKey = int | np.integer[Any] | slice | IntArray | tuple[int | np.integer[Any], int]


def _split_key(key: RowKey) -> tuple[int | np.integer[Any] | slice | IntArray, tuple[Any, ...]]:
    """(the pfn part, the index within the folio's values: () or (slot,)) of a key."""
    if isinstance(key, tuple):
        return key[0], (int(key[1]),)
    return key, ()


class ContentStore:
    """Interned page contents with reference counts: ``data[id]`` is a byte string trimmed
    after its last nonzero byte, id 0 the zero-filled page (never freed)."""

    def __init__(self) -> None:
        self.data: list[bytes] = [b""]
        self.refs: list[int] = [0]
        self.ids: dict[bytes, int] = {b"": 0}
        self.free_ids: list[int] = []

    def get(self, data: bytes) -> int:
        """A reference to the id holding data (trimmed here)."""
        data = data.rstrip(b"\0")
        blob = self.ids.get(data)
        if blob:  # an interned string: one more reference
            self.refs[blob] += 1
            return blob
        if blob is None:
            blob = self.free_ids.pop() if self.free_ids else len(self.data)
            if blob == len(self.data):
                self.data.append(data)
                self.refs.append(0)
            else:
                self.data[blob] = data
            self.ids[data] = blob
        return self.hold(blob)

    def hold(self, blob: int, nr: int = 1) -> int:
        if blob:
            self.refs[blob] += nr
        return blob

    def hold_many(self, ids: npt.NDArray[np.int32]) -> None:
        for blob, nr in _counted(ids):
            self.refs[blob] += nr

    def put(self, blob: int, nr: int = 1) -> None:
        if not blob:
            return
        self.refs[blob] -= nr
        if self.refs[blob] == 0:
            del self.ids[self.data[blob]]
            self.data[blob] = b""
            self.free_ids.append(blob)

    def put_in_order(self, ids: npt.NDArray[np.int32]) -> None:
        """put() of each of ids in turn: an id goes on the free list when its last reference
        in ids goes, so the freed ids are listed by their last place in ids."""
        if ids.size and (ids == ids[0]).all():
            self.put(ids.item(0), int(ids.size))
            return
        backwards = ids[::-1]
        uniq, last_from_end, counts = np.unique(backwards, return_index=True, return_counts=True)
        for i in np.argsort(-last_from_end, kind="stable").tolist():
            self.put(int(uniq[i]), int(counts[i]))

    def put_many(self, ids: npt.NDArray[np.int32]) -> None:
        for blob, nr in _counted(ids):
            self.put(blob, nr)


def _counted(ids: npt.NDArray[np.int32]) -> list[tuple[int, int]]:
    """(id, how many times) for the nonzero ids; one pass when they are all one string (a
    filled THP, a forked run)."""
    if ids.size and (ids == ids[0]).all():
        first = ids.item(0)
        return [(first, int(ids.size))] if first else []
    ids = ids[ids != 0]
    if not ids.size:
        return []
    uniq, counts = np.unique(ids, return_counts=True)
    return list(zip(uniq.tolist(), counts.tolist(), strict=True))
