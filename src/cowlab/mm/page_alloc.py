"""Physical frames: the mem_map of struct page fields as NumPy arrays, and the page allocator.

4.5's fields for anonymous memory, one array element per 4 KiB frame (pfn):
``flags``, ``_mapcount`` (every page, starts at -1), ``_count`` (meaningful on heads and small
pages; tails stay 0), ``compound_mapcount`` (read at head+1, starts at -1), ``mapping`` (the
anon_vma id, 0 for none), ``index`` (page->index) and ``private`` (swap entry).

Page contents are the model's, not struct page's: ``content`` holds, per frame, the id of an
interned, reference-counted byte string (trimmed after its last nonzero byte; id 0 is all
zeros). Frames with equal bytes share one string, so a fill pattern or a forked page costs
4 bytes per frame, not 4 KiB.

pfn 0 is the shared zero page and pfns 512..1023 the huge zero page, as reserved frames.
"""

from __future__ import annotations

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


FIELDS = {  # every per-frame field and the value a free frame holds
    "flags": 0,
    "_mapcount": -1,
    "_count": 0,
    "compound_mapcount": -1,
    "mapping": 0,
    "index": 0,
    "order": 0,
    "private": 0,
    "_pincount": 0,
    "_large_mapcount": -1,
    "_nr_pages_mapped": 0,
    "mm_id": 0,
    "mm_id_mapcount": -1,
    "content": 0,
}


def flags_without(mask: int) -> np.uint32:
    """The complement of page flags as a uint32 (NumPy refuses negative Python ints)."""
    return np.uint32(~mask & 0xFFFFFFFF)


class PageFrames:
    """struct page for every frame, plus the allocator's free lists (order 0 and order 9)."""

    def __init__(self, capacity: int = 4 * HPAGE_PMD_NR) -> None:
        self.nr = 0
        self.flags = np.zeros(0, dtype=np.uint32)
        self._mapcount = np.zeros(0, dtype=np.int32)
        self._count = np.zeros(0, dtype=np.int32)
        self.compound_mapcount = np.zeros(0, dtype=np.int32)
        self.mapping = np.zeros(0, dtype=np.int32)
        self.index = np.zeros(0, dtype=np.int64)
        self.private = np.zeros(0, dtype=np.int64)
        # 5.7+: the exact pin count of a compound page (hpage_pincount, later folio->_pincount)
        self._pincount = np.zeros(0, dtype=np.int32)
        # 6.x large-folio fields, read at the head: total mappings, PTE-mapped pages, the two
        # tracked MMs and their mapcounts (CONFIG_MM_ID)
        self._large_mapcount = np.zeros(0, dtype=np.int32)
        self._nr_pages_mapped = np.zeros(0, dtype=np.int32)
        self.mm_id = np.zeros((0, 2), dtype=np.int32)
        self.mm_id_mapcount = np.zeros((0, 2), dtype=np.int32)
        self.order = np.zeros(0, dtype=np.int8)  # folio order, on every page of the folio
        self.content = np.zeros(0, dtype=np.int32)  # the model's: id of the frame's bytes
        self._grow(max(capacity, FIRST_FREE_PFN))
        self.nr = FIRST_FREE_PFN
        self.free: dict[int, list[int]] = {o: [] for o in range(HPAGE_PMD_ORDER + 1)}
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
        size = max(need, old + old // 4)  # a quarter more: the arrays are most of the model
        for name, fill in FIELDS.items():
            shape = (size, *getattr(self, name).shape[1:])
            try:  # in place (realloc: no copy, no second array) when no view of it is held
                getattr(self, name).resize(shape, refcheck=True)
            except ValueError:
                arr = getattr(self, name)
                new = np.empty(shape, dtype=arr.dtype)
                new[:old] = arr
                setattr(self, name, new)
            getattr(self, name)[old:] = fill

    # --- allocation (mm/page_alloc.c) ------------------------------------------------------

    def _reset(self, first: int, nr: int) -> None:
        self._reset_at(slice(first, first + nr))

    def _reset_at(self, where: slice | IntArray) -> None:
        for name, fill in FIELDS.items():
            getattr(self, name)[where] = fill

    def _block(self) -> int:
        """A free 2 MiB-aligned block of 512 frames (a free THP, or new memory)."""
        if self.free[HPAGE_PMD_ORDER]:
            return self.free[HPAGE_PMD_ORDER].pop()
        head = -(-self.nr // HPAGE_PMD_NR) * HPAGE_PMD_NR
        self._grow(head + HPAGE_PMD_NR)
        self.free[0].extend(range(head - 1, self.nr - 1, -1))
        self.nr = head + HPAGE_PMD_NR
        return head

    def alloc_page(self) -> int:
        """alloc_page(GFP_HIGHUSER_MOVABLE|__GFP_ZERO): a zeroed small page with _count 1."""
        if self.free[0]:
            pfn = self.free[0].pop()
        elif self.free[HPAGE_PMD_ORDER]:
            block = self.free[HPAGE_PMD_ORDER].pop()
            self.free[0].extend(range(block + HPAGE_PMD_NR - 1, block, -1))
            pfn = block
        else:
            pfn = self.nr
            self._grow(pfn + 1)
            self.nr += 1
        self.flags[pfn] = PG_allocated | PG_uptodate | PG_swapbacked
        self._count[pfn] = 1
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
                out[got : got + take] = small[len(small) - take :][::-1]
                del small[len(small) - take :]
            elif self.free[HPAGE_PMD_ORDER]:
                block = self.free[HPAGE_PMD_ORDER].pop()
                small.extend(range(block + HPAGE_PMD_NR - 1, block, -1))
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
            self.free[order].extend(range(head + HPAGE_PMD_NR - nr, head, -nr))
        base = PG_allocated | PG_uptodate | PG_swapbacked
        self.flags[head] = base | PG_head
        self.flags[head + 1 : head + nr] = base | PG_tail
        self.order[head : head + nr] = order
        self._count[head] = 1
        self.nr_allocated += nr
        return head

    def alloc_hugepage(self) -> int:
        """alloc_hugepage_vma + prep_transhuge_page: an order-9 compound page, head _count 1."""
        return self.alloc_folio(HPAGE_PMD_ORDER)

    def reset_folio_fields(self, head: int) -> None:
        """The large-folio fields of a compound page that stops being one (split)."""
        for name in ("_pincount", "_large_mapcount", "_nr_pages_mapped", "mm_id", "mm_id_mapcount"):
            getattr(self, name)[head] = FIELDS[name]

    def free_page(self, pfn: int) -> None:
        """__free_pages of an order-0 page whose _count reached zero: its fields go back to
        the free values, so allocation need not reset them."""
        self.blobs.put(int(self.content[pfn]))
        self._reset(pfn, 1)
        self.free[0].append(pfn)
        self.nr_allocated -= 1

    def free_pages(self, pfns: IntArray) -> None:
        """free_page() of many order-0 pages, in order."""
        self.blobs.put_many(self.content[pfns])
        self._reset_at(pfns)
        self.free[0].extend(pfns.tolist())
        self.nr_allocated -= int(pfns.size)

    def free_folio(self, head: int) -> None:
        """free_transhuge_page()/folio_put(): the caller took it off the deferred split queue."""
        order = int(self.order[head])
        nr = 1 << order
        self.blobs.put_many(self.content[head : head + nr])
        self._reset(head, nr)
        self.free[order].append(head)
        self.nr_allocated -= nr

    # --- contents ------------------------------------------------------------------------

    def page_data(self, pfn: int) -> bytes:
        """The frame's bytes trimmed after the last nonzero one (b"" for a zero-filled frame)."""
        return self.blobs.data[int(self.content[pfn])]

    def read(self, pfn: int, offset: int, n: int) -> bytes:
        chunk = self.page_data(pfn)[offset : offset + n]
        return chunk + bytes(n - len(chunk))

    def write(self, pfn: int, offset: int, payload: bytes) -> None:
        buf = bytearray(self.page_data(pfn))
        end = offset + len(payload)
        if len(buf) < end:
            buf.extend(bytes(end - len(buf)))
        buf[offset:end] = payload
        self._set(pfn, self.blobs.get(bytes(buf)))

    def _set(self, pfn: int, blob: int) -> None:
        self.blobs.put(int(self.content[pfn]))
        self.content[pfn] = blob

    def copy_page(self, dst: int, src: int) -> None:
        """copy_user_highpage: dst gets src's bytes."""
        self._set(dst, self.blobs.hold(int(self.content[src])))

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
        return np.flatnonzero(self.flags[: self.nr] & PG_allocated).astype(np.int64)


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

    def put_many(self, ids: npt.NDArray[np.int32]) -> None:
        for blob, nr in _counted(ids):
            self.put(blob, nr)


def _counted(ids: npt.NDArray[np.int32]) -> list[tuple[int, int]]:
    """(id, how many times) for the nonzero ids; one pass when they are all one string (a
    filled THP, a forked run)."""
    ids = ids[ids != 0]
    if not ids.size:
        return []
    if (ids == ids[0]).all():
        return [(int(ids[0]), int(ids.size))]
    uniq, counts = np.unique(ids, return_counts=True)
    return list(zip(uniq.tolist(), counts.tolist(), strict=True))
