"""Observation as arrays: each side agrees with a reading page by page, and the comparison
reports exactly the pages that differ."""

from __future__ import annotations

import copy
import hashlib
import os
import struct
from collections.abc import Iterator

import numpy as np
import pytest

from cowlab.live import observe
from cowlab.live.compare import Regions, diff_identity, diff_regions, show_page
from cowlab.live.driver import LiveMachine
from cowlab.live.model_observe import model_snapshot
from cowlab.live.pages import NA, PageArrays, PageObs, Snapshot
from cowlab.mm.mm import compound_head, folio_nr_pages
from cowlab.scenario.runner import Runner
from tests.live.helpers import HPAGE, PAGE, needs_live_kernel, pmd_thp, run_model, small_pages
from tests.live.test_model_observe import THP

# THP, then: P's 8 KiB region gets a written page next to its zero page, a 16 KiB region with
# one written page and three never touched, and C writes into the THP they share.
SCENARIO = THP + "".join(
    f"  - {step}\n"
    for step in [
        '{op: write, proc: P, at: small+0x1000, data: "one"}',
        "{op: mmap, proc: P, name: more, size: 16K}",
        "{op: madvise, proc: P, at: more, size: 16K, advice: nohugepage}",
        '{op: write, proc: P, at: more+0x2000, data: "two"}',
        '{op: write, proc: C, at: buf+0x5000, data: "cow"}',
    ]
)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=6).hexdigest()


# --- the model -------------------------------------------------------------------------------


def _model() -> tuple[Runner, list[tuple[str, str, str]], Regions]:
    runner, regions = run_model(SCENARIO, "v6.18")
    return runner, regions.observed(), regions


def _model_snapshot() -> Snapshot:
    runner, observed, regions = _model()
    spec = [(v, runner.procs[p], runner.regions[r], regions.size[r]) for v, p, r in observed]
    return model_snapshot(runner.k, spec)


def test_model_arrays_agree_with_a_reading_page_by_page() -> None:
    """Each page from Process.translate() and the frames one at a time: the folio (labels in
    order of first sight), its size, the page's index in it, kpagecount's mapcount (the number
    of mappings of the page among all processes; the zero page counts 0), and the bytes."""
    runner, observed, regions = _model()
    f = runner.k.frames
    spec = [(v, runner.procs[p], runner.regions[r], regions.size[r]) for v, p, r in observed]
    snap = model_snapshot(runner.k, spec)
    every_va = [
        (proc, base + i * PAGE)
        for _v, proc, base, size in spec
        for i in range(size // PAGE)
        if proc.alive
    ]
    mapped = [proc.translate(va) for proc, va in every_va]
    labels: dict[int, str] = {}
    for view, proc, base, size in spec:
        pages = snap.regions[view]
        assert len(pages) == size // PAGE
        for i, page in enumerate(pages):
            pfn = proc.translate(base + i * PAGE)
            if pfn is None:
                assert page.folio is None and page.digest is None
                continue
            head = compound_head(f, pfn)
            if pfn == 0:  # the shared zero page
                assert (page.folio, page.mapcount, page.zero) == ("Z", 0, True)
                continue
            label = labels.setdefault(head, f"F{len(labels)}")
            data = f.page_bytes(pfn)
            want = (label, pfn - head, folio_nr_pages(f, head), mapped.count(pfn))
            assert (page.folio, page.subpage, page.nr, page.mapcount) == want, (view, i)
            assert (page.digest, page.head) == (_digest(data), data[:8]), (view, i)
    assert snap.pfns == {label: head for head, label in labels.items()}


def test_a_page_made_to_differ_is_the_only_one_reported() -> None:
    snap = _model_snapshot()
    assert diff_regions(snap, snap, True) == []
    other = copy.deepcopy(snap)
    other.arrays["C:buf"].mapcount[7] += 1  # one page
    other.arrays["P:small"].digest[1] ^= np.uint64(1)  # the bytes of another
    other.arrays["P:buf"].nr[3:6] = 16  # a run of three pages
    diffs = diff_regions(snap, other, True)
    assert [(d.region, d.first, d.last, d.fields) for d in diffs] == [
        ("P:buf", 3, 5, ["nr"]),
        ("P:small", 1, 1, ["bytes"]),
        ("C:buf", 7, 7, ["mapcount"]),
    ]
    c_buf = snap.regions["C:buf"][7]
    assert diffs[2].live == show_page(c_buf)
    assert diffs[2].model == show_page(c_buf._replace(mapcount=c_buf.mapcount + 1))


def test_anon_exclusive_differences_count_only_when_compared() -> None:
    snap = _model_snapshot()
    other = copy.deepcopy(snap)
    other.arrays["P:small"].anon_exclusive[1] = 1 - other.arrays["P:small"].anon_exclusive[1]
    assert diff_regions(snap, other, False) == []
    assert [(d.region, d.first, d.fields) for d in diff_regions(snap, other, True)] == [
        ("P:small", 1, ["anon_exclusive"])
    ]


def test_pages_survive_the_round_trip_through_arrays() -> None:
    snap = _model_snapshot()
    for pages in snap.regions.values():
        assert PageArrays.from_pages(pages).pages() == pages
    data = b"d" * PAGE
    exact = PageObs("F2", 3, 16, "pte", 1, None, False, False, False, None, True, True,
                    _digest(data), data[:8], data)  # fmt: skip
    swapped = PageObs(*([None] * 6), False, False, True, "S3", False, None, None, None)
    assert PageArrays.from_pages([exact, swapped]).pages() == [exact, swapped]


# --- the live kernel -------------------------------------------------------------------------


@pytest.fixture
def machine() -> Iterator[LiveMachine]:
    with LiveMachine() as m:
        yield m


def _u64(fd: int, index: int) -> int:
    return int(struct.unpack("<Q", os.pread(fd, 8, index * 8))[0])


class PerPage:
    """The reading the arrays replace: one pread per page and per PFN, labels by first sight."""

    def __init__(self) -> None:
        self.flags = os.open("/proc/kpageflags", os.O_RDONLY)
        self.counts = os.open("/proc/kpagecount", os.O_RDONLY)
        self.labels: dict[int, str] = {}

    def close(self) -> None:
        os.close(self.flags)
        os.close(self.counts)

    def flag(self, pfn: int, bit: int) -> bool:
        return bool(_u64(self.flags, pfn) >> bit & 1)

    def page(self, pid: int, va: int) -> tuple[object, ...]:
        """(folio, subpage, nr, mapcount, zero, digest, head) of one page."""
        fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
        try:
            entry = _u64(fd, va // PAGE)
        finally:
            os.close(fd)
        if not entry >> observe.PM_PRESENT & 1:
            return (None,) * 7
        pfn = entry & observe.PM_PFN_MASK
        head = pfn
        while self.flag(head, observe.KPF_TAIL):
            head -= 1
        nr = 1
        while self.flag(head + nr, observe.KPF_TAIL):
            nr += 1
        count = _u64(self.counts, pfn)
        if self.flag(pfn, observe.KPF_ZERO):
            label = "HZ" if nr > 1 else "Z"
            data = bytes(PAGE)
        else:
            label = self.labels.setdefault(head, f"F{len(self.labels)}")
            fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
            try:
                data = os.pread(fd, PAGE, va)
            finally:
                os.close(fd)
        return (label, pfn - head, nr, count, label in ("Z", "HZ"), _digest(data), data[:8])


@needs_live_kernel
def test_live_arrays_agree_with_a_reading_page_by_page(machine: LiveMachine) -> None:
    p = machine.spawn()
    thp = pmd_thp(p, b"thp")
    small = small_pages(p, 4)
    p.read(small, 1)
    p.write(small + PAGE, b"one")
    p.write(small + 2 * PAGE, b"two")
    c = p.fork()
    c.write(small + 2 * PAGE, b"child")
    c.write(thp + 5 * PAGE, b"cow")  # splits the child's PMD: a PTE-mapped THP and a new page
    regions = [(p, thp, HPAGE), (p, small, 4 * PAGE), (c, thp, HPAGE), (c, small, 4 * PAGE)]
    names = ["P:thp", "P:small", "C:thp", "C:small"]
    snap = machine.snapshot(dict(zip(names, regions, strict=True)))
    assert snap.stable
    reader = PerPage()
    try:
        want = {
            name: [reader.page(proc.pid, addr + i * PAGE) for i in range(n // PAGE)]
            for name, (proc, addr, n) in zip(names, regions, strict=True)
        }
    finally:
        reader.close()
    for name in names:
        got = [
            (pg.folio, pg.subpage, pg.nr, pg.mapcount, pg.zero if pg.level else None, pg.digest,
             pg.head)
            for pg in snap.regions[name]
        ]  # fmt: skip
        assert got == want[name], name
    assert snap.pfns == {label: head for head, label in reader.labels.items()}
    levels = {name: {pg.level for pg in snap.regions[name]} for name in names}
    assert levels == {
        "P:thp": {"pmd"},
        "P:small": {"pte", None},
        "C:thp": {"pte"},
        "C:small": {"pte", None},
    }


@needs_live_kernel
def test_a_snapshot_of_no_regions_is_empty() -> None:
    snap = observe.snapshot([])
    assert snap.stable and snap.regions == {} and snap.pfns == {}


@needs_live_kernel
def test_a_snapshot_too_large_to_keep_its_buffer_reads_the_same(
    machine: LiveMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = machine.spawn()
    thp = pmd_thp(p, b"big")
    small = small_pages(p, 2)
    p.write(small + PAGE, b"s")
    regions = {"thp": (p, thp, HPAGE), "small": (p, small, 2 * PAGE)}
    kept = [machine.snapshot(regions, exact=exact) for exact in (False, True)]
    monkeypatch.setattr(observe._MEM, "KEEP", PAGE)  # every snapshot gets a buffer of its own
    own = [machine.snapshot(regions, exact=exact) for exact in (False, True)]
    assert [s.regions for s in own] == [s.regions for s in kept]
    assert own[1].regions["thp"][0].data == b"big" + bytes(PAGE - 3)
    assert own[1].regions["small"][1].data == b"s" + bytes(PAGE - 1)


def _frames(*pfns: int | None) -> Snapshot:
    """One region, P:buf, whose pages are these frames (None: no page, or a zero page)."""
    arrays = PageArrays.absent(len(pfns))
    arrays.pfn[:] = [NA if pfn is None else pfn for pfn in pfns]
    return Snapshot({"P:buf": arrays}, {})


def test_identity_tells_a_copy_from_a_reuse_both_ways() -> None:
    """Frames before -> after a step, by hand. Page 0: live 10 -> 11 is a new page, the model
    keeps 5: live copied, model reused. Page 1: live keeps 12, the model 6 -> 7: the reverse.
    Page 2 (both keep) and page 3 (both new) agree. Page 4 had no page live before: nothing to
    compare. Pages 5 and 6 differ as page 0 does: one run. The frame numbers themselves (live 10
    against model 5) are never compared."""
    live = _frames(10, 12, 13, 14, None, 17, 19), _frames(11, 12, 13, 15, 16, 18, 20)
    model = _frames(5, 6, 8, 9, 11, 12, 13), _frames(5, 7, 8, 10, 12, 12, 13)
    diffs = diff_identity(live, model)
    assert [(d.region, d.first, d.last, d.fields, d.live, d.model) for d in diffs] == [
        ("P:buf", 0, 0, ["identity"], "copied", "reused"),
        ("P:buf", 1, 1, ["identity"], "reused", "copied"),
        ("P:buf", 5, 6, ["identity"], "copied", "reused"),
    ]
    assert diffs[0].describe() == "P:buf[0] identity: live copied | model reused"
    # the sides agree with themselves: no difference; a region not seen before: nothing known
    assert diff_identity(live, live) == []
    assert diff_identity((Snapshot({}, {}), live[1]), model) == []
