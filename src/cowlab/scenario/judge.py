"""Judge a step's expectations against what the model did and what it looks like now."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from cowlab import checker
from cowlab.check.properties import INVARIANTS, PROPERTIES, implied_breaks
from cowlab.mm.constants import HPAGE_PMD_NR, PAGE_SIZE, PG_swapcache, PG_writeback
from cowlab.mm.huge_memory import total_mapcount
from cowlab.mm.mm import (
    PageAnonExclusive,
    PageKsm,
    PageSwapCache,
    compound_head,
    folio_nr_pages,
    is_zero_pfn,
    page_count,
    page_mapcount_reported,
)
from cowlab.mm.mm_types import pmd_index, pte_index
from cowlab.mm.pgtable import (
    PTE_NONE,
    PTE_SPECIAL,
    PTE_SWP_EXCLUSIVE,
    HugePmd,
    PteTable,
    is_swap_pte,
    pte_to_swp_offset,
)
from cowlab.scenario.model import SWAP_VIEWS, Expectation, Step

if TYPE_CHECKING:
    from cowlab.scenario.runner import ExpectResult, Runner

PAGE_MASK = ~(PAGE_SIZE - 1)
# steps that change nothing a property reads: after one, the properties found after the step
# before still hold (or break) as they did, and are not computed again
OBSERVING_OPS = ("check", "dma_read")


def properties(runner: Runner) -> dict[str, Callable[[], list[str]]]:
    """Every property a scenario may expect by name, each returning its violations: the two
    invariants, and the properties `cowlab check` searches (check/properties.py)."""
    named = {name: partial(p.check, runner) for name, p in PROPERTIES.items()}
    return {
        "counters": lambda: checker.check_counters(runner.k),
        "rmap": lambda: checker.check_rmap(runner.k),
        **named,
    }


def judge(
    runner: Runner, step: Step, outcome: str, result: Any, fault: str, pfn: int | None
) -> list[ExpectResult]:
    """The step's expectations for this kernel, plus the implicit ones: the outcome is ok unless
    said otherwise, and an invariant that newly breaks fails the step unless it was expected."""
    from cowlab.scenario.runner import ExpectResult

    kernel_id = runner.kernel_id
    out: list[ExpectResult] = []
    mine = [e for e in step.expect if e.applies_to(kernel_id)]
    if "outcome" not in {e.what for e in mine}:
        out.append(ExpectResult("outcome", "ok", outcome, outcome == "ok", step.loc, True))
    wanted = set(INVARIANTS)
    for e in mine:
        if e.what in ("holds", "breaks"):
            wanted |= set(e.expected_for(kernel_id))
    checks = properties(runner)
    known = runner.properties_seen if step.op in OBSERVING_OPS else {}
    violated = {name: known[name] if name in known else checks[name]() for name in wanted}
    runner.properties_seen = known | violated
    newly = {name for name in INVARIANTS if violated[name]} - runner.broken
    if outcome == "BUG":
        newly = set()  # a machine that oopsed mid-operation owes no invariant
    expected_breaks: set[str] = set()
    for e in mine:
        want = e.expected_for(kernel_id)
        if e.what == "breaks":
            expected_breaks |= implied_breaks(want)
        got = actual(runner, e, step, outcome, result, fault, pfn, violated)
        out.append(ExpectResult(e.what, want, got, matches(e.what, want, got), e.loc))
    for name in sorted(newly - expected_breaks):
        out.append(ExpectResult(name, "holds", violated[name][0], False, step.loc, True))
    runner.broken |= newly
    return out


def actual(
    runner: Runner,
    e: Expectation,
    step: Step,
    outcome: str,
    result: Any,
    fault: str,
    pfn: int | None,
    violated: dict[str, list[str]],
) -> Any:
    """What the model shows for one expectation."""
    f = runner.k.frames
    kernel_id = runner.kernel_id
    direct = {
        "outcome": outcome,
        "data": result,
        "fault": fault,
        "rmap_walk_vmas": runner.rmap_walk_vmas,
    }
    if e.what in direct:
        return direct[e.what]
    if e.what in ("holds", "breaks"):
        return {name: violated[name] for name in e.expected_for(kernel_id)}
    if e.what in ("same_page", "other_page"):
        return pfn, page_ref(runner, e.expected_for(kernel_id), step)
    if e.what == "mapped":
        return mapped_kind(runner, step) if outcome == "ok" else "none"
    if e.what in SWAP_VIEWS:
        return page_view(runner, step, e.what)
    if pfn is None:
        return None
    if e.what == "mapcount":
        return page_mapcount_reported(runner.k, pfn)
    if e.what == "total_mapcount":
        return total_mapcount(f, compound_head(f, pfn))
    return page_count(f, pfn)


def mapped_kind(runner: Runner, step: Step) -> str:
    """How the step's address is mapped now: none, zero, pte, pmd or huge_zero."""
    proc = runner.procs[step.args["proc"]]
    args = step.args
    at = runner.regions[args["name"]] if step.op == "mmap" else runner.addr(args["at"])
    entry = proc.mm.pmds.get(pmd_index(at)) if proc.alive else None
    if isinstance(entry, HugePmd):
        return "huge_zero" if entry.huge_zero else "pmd"
    value = PTE_NONE if entry is None else int(entry.pfn[pte_index(at)])
    if value == PTE_NONE:
        return "none"
    if is_swap_pte(value):
        return "swap"
    return "zero" if entry is not None and entry.bits[pte_index(at)] & PTE_SPECIAL else "pte"


def page_view(runner: Runner, step: Step, what: str) -> Any:
    """What the step's address shows of its page: the swap cache and writeback flags, the swap
    count of its slot, PG_anon_exclusive (a swap PTE's exclusive bit when swapped out), the
    size of its folio (0 where nothing is mapped or cached) and PageKsm."""
    k = runner.k
    f = k.frames
    proc = runner.procs[step.args["proc"]]
    at = runner.addr(step.args["at"])
    pfn = proc.translate(at) if proc.alive else None
    offset = marker = None
    entry = proc.mm.pmds.get(pmd_index(at)) if proc.alive else None
    if isinstance(entry, PteTable) and is_swap_pte(int(entry.pfn[pte_index(at)])):
        offset = pte_to_swp_offset(int(entry.pfn[pte_index(at)]))
        marker = bool(entry.bits[pte_index(at)] & PTE_SWP_EXCLUSIVE)
    if pfn is not None and is_zero_pfn(f, pfn):
        pfn = None
    if pfn is not None and PageSwapCache(f, pfn):
        offset = int(f.private[pfn])
    page = pfn if pfn is not None or offset is None else int(k.swap.cache[offset])
    page = None if page is None or page < 0 else page
    if what == "swap_count":
        return int(k.swap.swap_map[offset]) if offset is not None else 0
    if what == "anon_exclusive":
        return marker if pfn is None else PageAnonExclusive(f, compound_head_if_pmd(entry, pfn))
    if page is None:
        return 0 if what == "folio_size" else False
    if what == "folio_size":
        return folio_nr_pages(f, compound_head(f, page)) * PAGE_SIZE
    if what == "ksm":
        return PageKsm(f, page)
    flag = PG_swapcache if what == "swapcache" else PG_writeback
    return bool(f.flags[compound_head(f, page)] & flag)  # a large folio's writeback: on its head


def compound_head_if_pmd(entry: object, pfn: int) -> int:
    """A PMD-mapped THP keeps PG_anon_exclusive on its head only."""
    return pfn & ~(HPAGE_PMD_NR - 1) if isinstance(entry, HugePmd) else pfn


def page_ref(runner: Runner, ref: str, step: Step) -> int | None:
    """The pfn a `same_page`/`other_page` reference names: a labelled step's, or a pin's."""
    kind, name = ref.split(":", 1)
    if kind == "step":
        return runner.labels.get(name)
    pin = runner.pins.get(name)  # a pin whose step failed (EFAULT, ...) names no page
    at = runner.addr(step.args["at"]) if "at" in step.args else None
    if at is None or pin is None:
        return None
    index = (at & PAGE_MASK) - (pin.addr & PAGE_MASK)
    if not 0 <= index < len(pin.pages) * PAGE_SIZE:
        return None
    return int(pin.pages[index // PAGE_SIZE])


def matches(what: str, want: Any, actual: Any) -> bool:
    if what == "holds":
        return all(not problems for problems in actual.values())
    if what == "breaks":
        return all(problems for problems in actual.values())
    if what == "same_page":
        return actual[0] is not None and actual[0] == actual[1]
    if what == "other_page":
        return actual[0] is not None and actual[1] is not None and actual[0] != actual[1]
    return bool(want == actual)
