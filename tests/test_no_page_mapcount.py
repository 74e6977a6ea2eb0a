"""CONFIG_NO_PAGE_MAPCOUNT (6.15+), the scenario config `no_page_mapcount`.

Derived by hand from 6.18.2: mm/rmap.c __folio_remove_rmap (without per-page mapcounts a large
folio is queued for the deferred split when the mappings left, _large_mapcount, are more than 0
and fewer than its pages, and a PTE unmap also wants no PMD mapping), fs/proc/internal.h
folio_average_page_mapcount (what fs/proc/page.c get_kpage_count reports without
CONFIG_PAGE_MAPCOUNT) and mm/Kconfig (NO_PAGE_MAPCOUNT; absent from 6.14.0 mm/Kconfig).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cowlab.kernel import Config, Kernel
from cowlab.live.model_observe import model_snapshot
from cowlab.live.scenario import Limits, unsupported_reason
from cowlab.live.system import KernelFacts
from cowlab.mm.mm import average_page_mapcount
from cowlab.scenario import ScenarioError, parse_scenario
from cowlab.scenario.runner import run_scenario

MiB = 1 << 20
PAGE = 4096
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "config" / "no_page_mapcount.yaml"


@pytest.mark.parametrize("kernel", ["4.5", "6.8", "6.14"])
def test_the_config_before_6_15_is_a_located_error(kernel: str) -> None:
    """mm/Kconfig has no NO_PAGE_MAPCOUNT before 6.15: one located line naming the range."""
    scenario = parse_scenario(EXAMPLE.read_text(), "t.yaml")
    want = rf"^t\.yaml:\d+:\d+: expected no_page_mapcount on 6\.15 \.\. 6\.18, not on {kernel} "
    with pytest.raises(ScenarioError, match=want):
        run_scenario(scenario, kernel)
    with pytest.raises(ValueError, match="CONFIG_NO_PAGE_MAPCOUNT"):
        Kernel(kernel, Config(no_page_mapcount=True))


def test_off_is_accepted_everywhere() -> None:
    """`no_page_mapcount: false` is every release's build (the option is off by default)."""
    text = EXAMPLE.read_text().replace("no_page_mapcount: true", "no_page_mapcount: false")
    scenario = parse_scenario(text, "t.yaml")
    assert run_scenario(scenario, "6.14").steps


@pytest.mark.parametrize(
    ("total", "entire", "order", "want"),
    [
        (0, 0, 9, 0),  # not mapped
        (1, 1, 9, 1),  # one PMD: its mapping covers every page
        (2, 1, 9, 1),  # a PMD and one PTE: (1 + 256) >> 9 = 0, plus the PMD's 1
        (1, 0, 9, 1),  # one PTE of 512: rounds to 0, but at least 1
        (1024, 0, 9, 2),  # two processes map every page
        (768, 0, 9, 2),  # (768 + 256) >> 9 = 2
        (767, 0, 9, 1),
        (512, 0, 9, 1),
        (3, 0, 2, 1),  # an mTHP of 4 pages, 3 PTEs: (3 + 2) >> 2 = 1
        (6, 0, 2, 2),
    ],
)
def test_average_page_mapcount(total: int, entire: int, order: int, want: int) -> None:
    got = average_page_mapcount(np.array([total]), np.array([entire]), np.array([order]))
    assert got.tolist() == [want]


def forked_pte_thp(no_page_mapcount: bool) -> tuple[Kernel, int, int]:
    """6.18: a THP PTE-mapped whole by P and by its child C (1024 mappings); (kernel, addr,
    head)."""
    k = Kernel("6.18", Config(no_page_mapcount=no_page_mapcount), selfcheck=True)
    p = k.spawn()
    addr = p.mmap(2 * MiB, align=2 * MiB)
    p.madvise(addr, 2 * MiB, "hugepage")
    p.write(addr, b"x" * (2 * MiB))
    p.mprotect(addr, PAGE, "r")
    head = p.translate(addr)
    p.fork()
    return k, addr, head


@pytest.mark.parametrize("no_page_mapcount", [False, True])
def test_the_same_half_unmapped_by_both_is_queued_only_with_page_mapcounts(
    no_page_mapcount: bool,
) -> None:
    """Both unmap the second 1M: the default build queues (256 pages lost their last PTE),
    CONFIG_NO_PAGE_MAPCOUNT does not (768, then 512 mappings: never below 512)."""
    k, addr, head = forked_pte_thp(no_page_mapcount)
    p, c = k.processes.values()
    p.munmap(addr + MiB, MiB)
    assert head not in k.deferred_split
    c.munmap(addr + MiB, MiB)
    assert (head in k.deferred_split) is not no_page_mapcount
    assert k.shrink_deferred_split() == int(not no_page_mapcount)
    assert k.check() == []


@pytest.mark.parametrize("no_page_mapcount", [False, True])
def test_different_halves_unmapped_is_not_queued(no_page_mapcount: bool) -> None:
    """P unmaps the second 1M, C the first: every page keeps one PTE, and 512 mappings are not
    fewer than 512 pages; neither build queues."""
    k, addr, head = forked_pte_thp(no_page_mapcount)
    p, c = k.processes.values()
    p.munmap(addr + MiB, MiB)
    c.munmap(addr, MiB)
    assert head not in k.deferred_split and k.check() == []


@pytest.mark.parametrize("no_page_mapcount", [False, True])
def test_one_page_fewer_than_all_is_queued(no_page_mapcount: bool) -> None:
    """After the same-half unmaps C unmaps one more page: 511 mappings, and page 0 loses C's
    PTE but keeps P's. The default build queued it already; without page mapcounts 511 < 512
    queues it now."""
    k, addr, head = forked_pte_thp(no_page_mapcount)
    p, c = k.processes.values()
    p.munmap(addr + MiB, MiB)
    c.munmap(addr + MiB, MiB)
    c.munmap(addr, PAGE)
    assert head in k.deferred_split and k.check() == []


def test_nr_pages_mapped_is_not_kept() -> None:
    """The build has no _nr_pages_mapped: the model leaves it 0 and the checker does not ask
    for it, while _large_mapcount is kept (1024 mappings, stored -1 based)."""
    k, _addr, head = forked_pte_thp(True)
    assert int(k.frames._nr_pages_mapped[head]) == 0
    assert int(k.frames._large_mapcount[head]) == 1023
    assert k.check() == []


@pytest.mark.parametrize(("no_page_mapcount", "want"), [(False, [1, 2]), (True, [2, 2])])
def test_kpagecount_the_model_reports(no_page_mapcount: bool, want: list[int]) -> None:
    """The live comparison's kpagecount after P unmaps the second 1M: C's page at 1M (only C
    maps it) and its page 0 (P and C): precise 1 and 2; averaged, 768 mappings -> 2 for both."""
    k, addr, _head = forked_pte_thp(no_page_mapcount)
    p, c = k.processes.values()
    p.munmap(addr + MiB, MiB)
    snap = model_snapshot(k, [("at1M", c, addr + MiB, PAGE), ("at0", c, addr, PAGE)])
    assert [int(snap.arrays[name].mapcount[0]) for name in ("at1M", "at0")] == want


def test_the_live_comparison_refuses_the_config() -> None:
    """This machine's 6.18.44 is built with CONFIG_PAGE_MAPCOUNT (/proc/config.gz): a scenario
    asking for the other build is not run live (no live kernel is touched here)."""
    scenario = parse_scenario(EXAMPLE.read_text(), "t.yaml")
    facts = KernelFacts("6.18.44", "madvise", "madvise", "1", "10000")
    reason = unsupported_reason(scenario, facts, Limits())
    assert reason is not None and "CONFIG_PAGE_MAPCOUNT" in reason


@pytest.mark.parametrize("no_page_mapcount", [False, True])
def test_explain_shows_the_counters_the_build_keeps(no_page_mapcount: bool) -> None:
    """`explain`'s state line for C's unmap of the second 1M: 256 pages' _mapcount 0 -> -1 on
    the default build; under CONFIG_NO_PAGE_MAPCOUNT the folio's _large_mapcount, 768 -> 512
    mappings (767 -> 511 stored)."""
    text = EXAMPLE.read_text().replace(
        "no_page_mapcount: true", f"no_page_mapcount: {str(no_page_mapcount).lower()}"
    )
    result = run_scenario(parse_scenario(text, "t.yaml"), "6.18", tracing=True)
    (line,) = [s for s in result.steps if s.step.op == "munmap"][1].changes
    if no_page_mapcount:
        assert "_large_mapcount 767->511" in line and "subpages _mapcount" not in line
    else:
        assert "256 subpages _mapcount 0->-1" in line and "_large_mapcount" not in line
