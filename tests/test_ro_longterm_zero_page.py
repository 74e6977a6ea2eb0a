"""A read-only long-term pin of memory never written: 6.2 unshares the zero page (84209e87c696,
8d6a0ac09a16), 6.13 maps the huge zero page's unshare as a THP (1ced09e0331f).

Expectations read from the sources (docs/timeline-sources.md, 6.2): 6.1.20 and 6.2.1
include/linux/mm.h gup_must_unshare, mm/memory.c do_wp_page and wp_page_copy, mm/huge_memory.c
do_huge_pmd_wp_page; 6.12.0 and 6.13.2 mm/huge_memory.c do_huge_pmd_wp_page, do_huge_zero_wp_pmd,
map_anon_folio_pmd.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cowlab import Kernel, Process
from cowlab.checker import check_pin_coherence
from cowlab.mm.constants import PG_anon_exclusive
from cowlab.mm.mm import is_zero_pfn
from cowlab.mm.page_alloc import HUGE_ZERO_PFN
from cowlab.mm.pgtable import PTE_SPECIAL, PTE_WRITE, HugePmd, PteTable
from cowlab.scenario import load_scenario
from cowlab.scenario.runner import run_scenario

KiB = 1 << 10
MiB = 1 << 20
BEFORE = ("5.19", "6.1")  # gup_must_unshare: a page that is not anonymous is never unshared
AFTER = ("6.2", "6.6", "6.12", "6.13", "6.18")
EXAMPLE = (
    Path(__file__).resolve().parent.parent
    / "examples"
    / "timeline"
    / "6.2_longterm_ro_pin_unshares_zero_page.yaml"
)


def table(p: Process, addr: int) -> PteTable:
    entry = p.mm.pmds.get(addr >> 21)
    assert isinstance(entry, PteTable), f"expected PTEs at {addr:#x}, got {entry!r}"
    return entry


def exclusive_read_only(k: Kernel, p: Process, addr: int) -> int:
    """The page at addr: a new anonymous page, PageAnonExclusive, its PTE read-only."""
    t = table(p, addr)
    i = (addr >> 12) & 511
    pfn = int(t.pfn[i])
    assert not is_zero_pfn(k.frames, pfn)
    assert not t.bits[i] & (PTE_WRITE | PTE_SPECIAL)
    assert k.frames.flags[pfn] & PG_anon_exclusive
    return pfn


@pytest.mark.parametrize("kernel", BEFORE + AFTER)
def test_a_long_term_read_pin_of_an_untouched_page(kernel: str) -> None:
    """Before 6.2 the pin holds the shared zero page and the write copies away from it; from 6.2
    the unshare fault (do_wp_page -> wp_page_copy of the zero page) gives the pin an exclusive
    page mapped read-only, and the write reuses it (PageAnonExclusive)."""
    k = Kernel(kernel, selfcheck=True)
    p = k.spawn()
    buf = p.mmap(8 * KiB)  # no 2 MiB range: PTEs only
    pin = p.get_user_pages(buf, 4 * KiB, write=False, flavour="longterm")
    pinned = int(pin.pages[0])
    if kernel in BEFORE:
        assert is_zero_pfn(k.frames, pinned) and p.translate(buf) == pinned
    else:
        assert exclusive_read_only(k, p, buf) == pinned
    p.write(buf, b"cpu")
    assert (p.translate(buf) == pinned) is (kernel in AFTER)
    assert (check_pin_coherence(k) == []) is (kernel in AFTER)
    assert pin.dma_read(0, 3) == (b"cpu" if kernel in AFTER else bytes(3))
    assert table(p, buf + 4 * KiB).pfn[1] < 0  # the page not pinned was never faulted


@pytest.mark.parametrize("kernel", BEFORE + AFTER)
def test_a_short_term_read_pin_still_takes_the_zero_page(kernel: str) -> None:
    """gup_must_unshare() (6.2.1, 6.18.2 mm/internal.h) wants FOLL_LONGTERM for a page that is
    not anonymous: an O_DIRECT-like pin keeps the zero page on every release from 5.9."""
    k = Kernel(kernel, selfcheck=True)
    p = k.spawn()
    buf = p.mmap(8 * KiB)
    pin = p.get_user_pages(buf, 4 * KiB, write=False, flavour="pin")
    assert is_zero_pfn(k.frames, int(pin.pages[0]))
    p.write(buf, b"cpu")
    assert pin.dma_read(0, 3) == bytes(3)


@pytest.mark.parametrize("kernel", ["6.2", "6.12"])
def test_the_huge_zero_page_is_split_and_each_pinned_page_unshared(kernel: str) -> None:
    """6.2 .. 6.12: do_huge_pmd_wp_page sends the huge zero PMD to the split; the PTE-level
    unshare then gives each pinned 4 KiB its own page, the rest of the 2 MiB stays zero PTEs."""
    k = Kernel(kernel, selfcheck=True)
    p = k.spawn()
    buf = p.mmap(2 * MiB, align=2 * MiB)
    p.madvise(buf, 2 * MiB, "hugepage")
    pin = p.get_user_pages(buf, 8 * KiB, write=False, flavour="longterm")
    first, second = (exclusive_read_only(k, p, buf + i * 4 * KiB) for i in (0, 1))
    assert [int(x) for x in pin.pages] == [first, second] and first != second
    t = table(p, buf)
    assert all(is_zero_pfn(k.frames, int(x)) for x in t.pfn[2:])
    assert k.frames.huge_zero_refcount == 0
    p.write(buf + 4 * KiB, b"cpu")
    assert p.translate(buf + 4 * KiB) == second
    assert pin.dma_read(4 * KiB, 3) == b"cpu"


@pytest.mark.parametrize("kernel", ["6.13", "6.18"])
def test_from_6_13_the_huge_zero_page_unshares_into_a_thp(kernel: str) -> None:
    """6.13: do_huge_zero_wp_pmd for the unshare too, map_anon_folio_pmd: a PMD-mapped THP,
    writable in a writable VMA; the write takes no fault."""
    k = Kernel(kernel, selfcheck=True)
    p = k.spawn()
    buf = p.mmap(2 * MiB, align=2 * MiB)
    p.madvise(buf, 2 * MiB, "hugepage")
    pin = p.get_user_pages(buf, 8 * KiB, write=False, flavour="longterm")
    entry = p.mm.pmds[buf >> 21]
    assert isinstance(entry, HugePmd) and not entry.huge_zero and entry.write
    assert [int(x) for x in pin.pages] == [entry.pfn, entry.pfn + 1]
    assert entry.pfn != HUGE_ZERO_PFN and k.frames.flags[entry.pfn] & PG_anon_exclusive
    faults = k.vmstat["pgfault"]
    p.write(buf, b"cpu")
    assert k.vmstat["pgfault"] == faults
    assert pin.dma_read(0, 3) == b"cpu"


def test_from_6_13_no_thp_for_the_unshare_falls_back_to_the_split() -> None:
    """do_huge_zero_wp_pmd fails to allocate: do_huge_pmd_wp_page goes on to split the huge zero
    PMD, and the unshare is done at PTE level as on 6.2."""
    k = Kernel("6.13", selfcheck=True)
    p = k.spawn()
    buf = p.mmap(2 * MiB, align=2 * MiB)
    p.madvise(buf, 2 * MiB, "hugepage")
    p.read(buf, 1)  # the huge zero PMD, while THPs can still be had
    k.thp_alloc_fail = True
    pin = p.get_user_pages(buf, 4 * KiB, write=False, flavour="longterm")
    assert exclusive_read_only(k, p, buf) == int(pin.pages[0])


@pytest.mark.parametrize("kernel", ["6.1", "6.2"])
def test_gup_fast_falls_back_and_ends_as_the_slow_path(kernel: str) -> None:
    """GUP-fast never takes the zero PTE (pte_special) and from 6.2 refuses a page that is not
    anonymous for a long-term R/O pin (no VMA to look at), so slow GUP decides in both."""
    k = Kernel(kernel, selfcheck=True)
    p = k.spawn()
    buf = p.mmap(8 * KiB)
    p.read(buf, 1)
    pin = p.get_user_pages(buf, 4 * KiB, write=False, flavour="longterm", fast=True)
    assert is_zero_pfn(k.frames, int(pin.pages[0])) is (kernel == "6.1")


def test_a_read_only_private_mapping_is_a_cow_mapping_too() -> None:
    """is_cow_mapping(): VM_MAYWRITE without VM_SHARED, which an anonymous PROT_READ mapping
    has: 6.2 unshares there as well, and the new page's PTE is read-only as the VMA is."""
    k = Kernel("6.2", selfcheck=True)
    p = k.spawn()
    buf = p.mmap(8 * KiB, prot="r")
    pin = p.get_user_pages(buf, 4 * KiB, write=False, flavour="longterm")
    assert exclusive_read_only(k, p, buf) == int(pin.pages[0])


@pytest.mark.parametrize(("kernel", "unshares"), [("6.1", 0), ("6.2", 1), ("6.18", 1)])
def test_explain_names_the_unshare_decision(kernel: str, unshares: int) -> None:
    """The pin step of the timeline example decides gup_must_unshare once on 6.2+ (the zero
    page, FOLL_LONGTERM, a private anonymous mapping) and never on 6.1."""
    scenario = load_scenario(EXAMPLE)
    result = run_scenario(scenario, kernel, tracing=True)
    pin = next(s for s in result.steps if s.step.op == "pin")
    decided = [e for e in pin.events if e.function == "gup_must_unshare"]
    assert len(decided) == unshares
    for e in decided:
        assert e.verdict == "unshare"
        assert dict(e.read) == {"PageAnon": 0, "FOLL_LONGTERM": 1, "is_cow_mapping": 1}
