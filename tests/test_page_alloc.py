"""PageFrames.free_page(): a freed frame holds every per-frame field's free value (FRAME_FIELDS:
no flags, _mapcount -1, no reference, mapping, index, order or contents), so allocation need
not reset it; its neighbours keep theirs; its contents' last reference is dropped."""

from __future__ import annotations

from cowlab.mm.page_alloc import FRAME_FIELDS, PageFrames


def test_free_page_resets_every_field_of_that_frame_only() -> None:
    f = PageFrames()
    pfns = [f.alloc_page() for _ in range(3)]
    for pfn in pfns:
        f.write(pfn, 0, b"data")
        f._mapcount[pfn] = 0
        f.mapping[pfn], f.index[pfn], f.order[pfn] = 7, 5, 0
    blob = f.content.item(pfns[1])
    f._count[pfns[1]] = 0  # the last reference gone

    f.free_page(pfns[1])

    assert {name: getattr(f, name).item(pfns[1]) for name in FRAME_FIELDS} == FRAME_FIELDS
    for pfn in (pfns[0], pfns[2]):
        assert (f._mapcount.item(pfn), f.mapping.item(pfn), f.index.item(pfn)) == (0, 7, 5)
        assert f.page_data(pfn) == b"data" and f._count.item(pfn) == 1
    assert f.blobs.refs[blob] == 2  # the neighbours' references to the same bytes
