"""PageFrames.free_page(): a freed frame holds every per-frame field's free value (FRAME_FIELDS:
no flags, _mapcount -1, no reference, mapping, index, order or contents), so allocation need
not reset it; its neighbours keep theirs; its contents' last reference is dropped.

The per-frame arrays' views (``flags_at`` ...) and a page table's (``pfn_at``, ``bits_at``)
are the arrays' own buffers: after the arrays grow, and in a copy or a pickled machine, where
they are the copy's."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from cowlab import Kernel
from cowlab.check.clone import deep_copy
from cowlab.mm.mm_types import pte_index
from cowlab.mm.page_alloc import FRAME_FIELDS, PageFrames
from cowlab.mm.pgtable import PteTable


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


def test_views_follow_the_arrays_as_they_grow() -> None:
    f = PageFrames(capacity=1024)
    first = len(f.flags)
    pfns = [f.alloc_page() for _ in range(first)]  # past the first capacity: the arrays grow
    assert len(f.flags) > first
    for name in FRAME_FIELDS:
        array, view = getattr(f, name), getattr(f, name + "_at")
        assert view.obj is array and len(view) == len(array)
    last = pfns[-1]
    f._mapcount_at[last] = 3  # a store through the view is the array's
    f.mapping[last] = 9  # and the array's is the view's
    assert (f._mapcount.item(last), f.mapping_at[last]) == (3, 9)
    assert (f.flags_at[last], f._count_at[last]) == (f.flags.item(last), 1)


def _machine() -> tuple[Kernel, int]:
    """A machine with one page written, and that page's PTE index."""
    k = Kernel("v6.18")
    k.thp_enabled = "never"
    p = k.spawn()
    addr = p.mmap(8 << 12)
    p.write(addr, b"x")
    return k, pte_index(addr)


def _only_table(k: Kernel) -> PteTable:
    (table,) = k.processes[1].mm.pmds.values()
    assert isinstance(table, PteTable)
    return table


def test_a_copied_machine_has_views_of_its_own_arrays() -> None:
    """copy.deepcopy, the search's deep_copy and a pickle round trip (of the frames and the
    table: a Kernel's policy class is not picklable): each copy's views are of its arrays; a
    store through them leaves the original's alone."""
    k, i = _machine()
    pfn = _only_table(k).pfn.item(i)
    state = (k.frames, _only_table(k))
    copies = [(c.frames, _only_table(c)) for c in (copy.deepcopy(k), deep_copy(k, {}))] + [
        pickle.loads(pickle.dumps(state))
    ]
    for f, table in copies:
        for name in FRAME_FIELDS:
            assert getattr(f, name + "_at").obj is getattr(f, name)
        assert table.pfn_at.obj is table.pfn and table.bits_at.obj is table.bits
        f._count_at[pfn] = 5
        table.bits_at[i] = 0
        assert (f._count.item(pfn), table.bits.item(i)) == (5, 0)
    assert (k.frames._count.item(pfn), k.frames._count_at[pfn]) == (1, 1)
    assert _only_table(k).bits.item(i) != 0 and _only_table(k).bits_at[i] != 0


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a.data[1:3],  # a slice
        lambda a: a.data[::-1],  # the same elements, reversed
        lambda a: a.data.cast("B"),  # the same bytes, another format
        lambda a: a.data.toreadonly(),
        lambda a: memoryview(b"bytes"),  # no array
    ],
    ids=["slice", "reversed", "cast", "readonly", "bytes"],
)
def test_only_a_whole_arrays_view_is_copied(make: Callable[[Any], memoryview]) -> None:
    """The views' copy and pickle are registered process-wide: any other memoryview is still
    refused with the TypeError pickle gave every memoryview, not copied as its whole object
    (deep_copy copies a machine, whose views are all whole arrays')."""
    view = make(np.arange(4, dtype=np.int64))
    for copier in (pickle.dumps, copy.deepcopy):
        with pytest.raises(TypeError):
            copier(view)
