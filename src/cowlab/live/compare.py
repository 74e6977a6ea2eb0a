"""Run a scenario on the live kernel and on a model kernel step by step, and compare.

After every step both sides are observed (every region of every process, canonical form: see
observe.py and model_observe.py) and compared with the step's outcome and returned bytes, and
each page with the last observation: a new page at an address on one side where the other kept
its page (a copy against a reuse) is a difference too. The first step where they differ is the
report. Differences the live kernel can produce on its own
(a THP it could not allocate, a khugepaged collapse, a KSM merge) are checked against
/proc/vmstat and page flags: such a case is retried and, if it keeps happening, *inconclusive*.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cowlab.errors import CowlabError, KernelBug, Segfault, SyscallError
from cowlab.kernel import Process
from cowlab.live.driver import LiveMachine, LiveProcess
from cowlab.live.journal import SystemChanges
from cowlab.live.model_observe import model_snapshot, models_anon_exclusive
from cowlab.live.observe import PAGE
from cowlab.live.pages import LEVEL_PMD, NA, Bools, PageArrays, PageObs, Snapshot
from cowlab.live.scenario import Limits, LiveScenario, StepOutcome, Unsupported, unsupported_reason
from cowlab.live.system import THP_DIR, kernel_facts
from cowlab.mm.trace import Event
from cowlab.scenario.model import Scenario, Step
from cowlab.scenario.runner import Runner

VMSTAT_NOISE = ("thp_fault_fallback", "thp_collapse_alloc", "thp_split_pmd", "ksm_swpin_copy")
FALLBACKS = ("thp_fault_fallback", "mthp_fault_fallback")
RETRIES = 3
FIELDS = (
    "folio", "subpage", "nr", "level", "mapcount", "anon_exclusive", "ksm", "zero", "swap",
    "swapcache",
)  # fmt: skip


# --- which regions each process has (the same on both sides) ---------------------------------


@dataclass
class Regions:
    """Scenario-level bookkeeping: per process, the regions it can reach, and their extents."""

    order: list[str] = field(default_factory=list)  # processes in order of creation
    of: dict[str, list[str]] = field(default_factory=dict)
    size: dict[str, int] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)

    def add_proc(self, name: str, inherit: str | None = None) -> None:
        self.order.append(name)
        self.of[name] = list(self.of.get(inherit, [])) if inherit else []

    def after(self, step: Step, ok: bool) -> None:
        """Follow one step that ended with ok (or not) on both sides."""
        a, op = step.args, step.op
        if op == "spawn":
            self.add_proc(a["proc"])
        elif op == "fork" and ok:
            self.add_proc(a["child"], a["proc"])
        elif op == "exit":
            self.gone.add(a["proc"])
        elif op == "mmap" and ok:
            self._add_region(a["proc"], a["name"], a["size"])
        elif op == "mremap" and ok:
            self._mremap(a)

    def _add_region(self, proc: str, name: str, size: int) -> None:
        self.of[proc].append(name)
        self.size[name] = size

    def _mremap(self, a: dict[str, Any]) -> None:
        new_size = a.get("new_size", a["size"])
        if "name" in a:
            self._add_region(a["proc"], a["name"], new_size)
        elif a["at"].offset == 0 and a["at"].region in self.size:
            # Grown in place: observe the whole new extent (a shrink keeps the old extent).
            self.size[a["at"].region] = max(self.size[a["at"].region], new_size)

    def observed(self) -> list[tuple[str, str, str]]:
        """(view name, process, region) for every region of every live process, in order."""
        return [
            (f"{p}:{r}", p, r) for p in self.order if p not in self.gone for r in self.of.get(p, [])
        ]


# --- one comparison ---------------------------------------------------------------------------


@dataclass
class Difference:
    """A run of pages of one region that differ the same way (or an outcome/result)."""

    region: str
    first: int
    last: int
    fields: list[str]
    live: str
    model: str

    def describe(self) -> str:
        where = (
            f"{self.region}[{self.first}]"
            if self.first == self.last
            else (f"{self.region}[{self.first}..{self.last}]")
        )
        return f"{where} {','.join(self.fields)}: live {self.live} | model {self.model}"


@dataclass
class CaseResult:
    """The verdict on one scenario: agree, disagree, unsupported, inconclusive or error."""

    path: str
    name: str
    kernel: str
    status: str
    reason: str = ""
    step: Step | None = None
    differences: list[Difference] = field(default_factory=list)
    live_view: dict[str, list[str]] = field(default_factory=dict)
    model_view: dict[str, list[str]] = field(default_factory=dict)
    model_decisions: list[Event] = field(default_factory=list)  # the model's, at that step
    attempts: int = 1
    steps_run: int = 0
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": self.path,
            "name": self.name,
            "kernel": self.kernel,
            "status": self.status,
            "attempts": self.attempts,
            "steps_run": self.steps_run,
            "elapsed_s": round(self.elapsed_s, 4),
        }
        if self.reason:
            out["reason"] = self.reason
        if self.step is not None:
            out["step"] = {
                "index": self.step.index,
                "line": self.step.loc.line,
                "op": self.step.op,
                "step": self.step.describe(),
            }
            out["differences"] = [vars(d) for d in self.differences]
            out["live"] = self.live_view
            out["model"] = self.model_view
            out["model_decisions"] = [e.to_json() for e in self.model_decisions]
        return out


def show_page(o: PageObs) -> str:
    """F0[3]/512 pmd mc=1 ex=1 'hello' -- or '-' for nothing mapped."""
    if o.folio is None and o.level is None:
        return ("swapped swapcache" if o.swapcache else "swapped") if o.swapped else "-"
    ex = {True: " ex=1", False: " ex=0", None: ""}[o.anon_exclusive]
    data = (o.head or b"").rstrip(b"\0")
    shown = f" {data!r}" if data else ""
    ksm = " ksm" if o.ksm else ""
    return f"{o.folio}[{o.subpage}]/{o.nr} {o.level} mc={o.mapcount}{ex}{ksm}{shown}"


# A page's differing fields as bits of one integer: FIELDS in order, then the bytes (digest).
BYTES_BIT = len(FIELDS)


def _differing(live: PageArrays, model: PageArrays, excl: bool) -> npt.NDArray[np.int64]:
    """Per page of the common length, a bit per field that differs (FIELDS, then bytes)."""
    n = min(len(live), len(model))
    mask = np.zeros(n, np.int64)
    for bit, name in enumerate(FIELDS):
        if name != "anon_exclusive" or excl:
            mask |= (getattr(live, name)[:n] != getattr(model, name)[:n]).astype(np.int64) << bit
    mask |= (live.digest[:n] != model.digest[:n]).astype(np.int64) << BYTES_BIT
    return mask


def _field_names(mask: int) -> list[str]:
    return [name for bit, name in enumerate((*FIELDS, "bytes")) if mask >> bit & 1]


def diff_regions(live: Snapshot, model: Snapshot, excl: bool) -> list[Difference]:
    """Runs of consecutive pages that differ in the same fields, per region: an array
    comparison, with a PageObs made only for the first page of each run."""
    out: list[Difference] = []
    for name, larrays in live.arrays.items():
        marrays = model.arrays.get(name)
        if marrays is None:
            continue
        mask = _differing(larrays, marrays, excl)
        for first, last in _mask_runs(mask):
            fields = _field_names(int(mask[first]))
            lo, mo = larrays.page(first), marrays.page(first)
            out.append(Difference(name, first, last, fields, show_page(lo), show_page(mo)))
    return out


def _mask_runs(mask: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
    """(first, last) page of each run of consecutive pages with the same nonzero mask."""
    pages = np.flatnonzero(mask)
    if not len(pages):
        return []
    # A run starts where the pages stop being consecutive or the mask changes.
    starts = np.flatnonzero(
        np.concatenate(([True], (np.diff(pages) != 1) | (np.diff(mask[pages]) != 0)))
    )
    ends = np.append(starts[1:], len(pages)) - 1
    return list(zip(pages[starts].tolist(), pages[ends].tolist(), strict=True))


# Whether the page at an address is the one the last observation saw there, per side.
COPIED, REUSED = 1, 2
IDENTITY = {COPIED: ("copied", "reused"), REUSED: ("reused", "copied")}  # (live, model)


def same_page(before: PageArrays, after: PageArrays, n: int) -> tuple[Bools, Bools]:
    """Of the first n pages: which are a non-zero page at both observations (known), and of
    those which are the same frame (same); the zero pages and absent pages have no pfn."""
    b, a = before.pfn[:n], after.pfn[:n]
    known = (b != NA) & (a != NA)
    return known, known & (b == a)


def identity_mask(
    live: tuple[PageArrays, PageArrays], model: tuple[PageArrays, PageArrays]
) -> npt.NDArray[np.int64]:
    """Per page, (before, after) on each side: COPIED where the live page is a new frame and
    the model's the same one, REUSED the other way round, 0 where they agree or either side
    has no page at either observation."""
    n = min(len(x) for x in (*live, *model))
    lknown, lsame = same_page(*live, n)
    mknown, msame = same_page(*model, n)
    known = lknown & mknown
    mask = np.zeros(n, np.int64)
    mask[known & ~lsame & msame] = COPIED
    mask[known & lsame & ~msame] = REUSED
    return mask


def diff_identity(
    live: tuple[Snapshot, Snapshot], model: tuple[Snapshot, Snapshot]
) -> list[Difference]:
    """The pages (per region seen at both observations) where one side put a new page at an
    address and the other kept the page it had: a copy against a reuse, which the per-snapshot
    folio labels cannot show (the old page may be freed, and labels are renumbered)."""
    out: list[Difference] = []
    for name, lafter in live[1].arrays.items():
        views = (live[0].arrays.get(name), model[0].arrays.get(name), model[1].arrays.get(name))
        lbefore, mbefore, mafter = views
        if lbefore is None or mbefore is None or mafter is None:
            continue
        mask = identity_mask((lbefore, lafter), (mbefore, mafter))
        for first, last in _mask_runs(mask):
            theirs, mine = IDENTITY[int(mask[first])]
            out.append(Difference(name, first, last, ["identity"], theirs, mine))
    return out


def render_runs(pages: list[PageObs]) -> list[str]:
    """A region as runs: 'pages 0..511: F0[0..511]/512 pmd mc=1 ex=1'."""
    out: list[str] = []
    start = 0
    for i in range(1, len(pages) + 1):
        if i < len(pages) and _continues(pages[i - 1], pages[i]):
            continue
        first, last = pages[start], pages[i - 1]
        shown = show_page(first)
        if i - 1 > start:
            shown = shown.replace(f"[{first.subpage}]", f"[{first.subpage}..{last.subpage}]", 1)
        span = f"{start}" if i - 1 == start else f"{start}..{i - 1}"
        out.append(f"pages {span}: {shown}")
        start = i
    return out


def _continues(a: PageObs, b: PageObs) -> bool:
    """Whether b extends a's run: same folio, next subpage, same mapping and flags."""
    same = (a.folio, a.nr, a.level, a.mapcount, a.anon_exclusive, a.ksm, a.zero, a.swapped)
    if same != (b.folio, b.nr, b.level, b.mapcount, b.anon_exclusive, b.ksm, b.zero, b.swapped):
        return False
    if a.swapped and a.swapcache != b.swapcache:
        return False
    if a.folio is None:
        return True
    return a.head == b.head and a.subpage is not None and b.subpage == a.subpage + 1


# --- the model side ---------------------------------------------------------------------------


def model_step(runner: Runner, step: Step) -> StepOutcome:
    """Runner.execute() with the runner's outcome names (errno, SIGSEGV, BUG)."""
    if runner.crashed_at is not None:
        return StepOutcome("not run")
    try:
        result = runner.execute(step)
    except Segfault:
        return StepOutcome("SIGSEGV")
    except SyscallError as e:
        return StepOutcome(e.errno)
    except KernelBug:
        runner.crashed_at = step.index
        return StepOutcome("BUG")
    except KeyError as e:
        return StepOutcome(f"undefined name {e}")
    return StepOutcome("ok", result if isinstance(result, bytes) else None)


def read_vmstat() -> dict[str, int]:
    """The /proc/vmstat counters that reveal THP fallbacks, collapses and KSM, and each mTHP
    size's anon_fault_fallback* (sysfs stats, as mthp_fault_fallback_<size>...)."""
    out = {}
    for line in Path("/proc/vmstat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key.startswith(VMSTAT_NOISE):
            out[key] = int(value)
    for key, stat in _fallback_stats(THP_DIR):
        with contextlib.suppress(OSError, ValueError):
            out[key] = int(stat.read_text())
    return out


@functools.cache
def _fallback_stats(thp_dir: Path) -> tuple[tuple[str, Path], ...]:
    """(vmstat-style key, sysfs file) of every mTHP size's anon_fault_fallback* counter: the
    sizes are the running kernel's, so they are listed once."""
    out = []
    for stat in sorted(thp_dir.glob("hugepages-*kB/stats/anon_fault_fallback*")):
        size = stat.parent.parent.name.removeprefix("hugepages-")
        which = stat.name.removeprefix("anon_fault_fallback")
        out.append((f"mthp_fault_fallback_{size}{which}", stat))
    return tuple(out)


# --- a case -----------------------------------------------------------------------------------


@dataclass
class Options:
    """How a case is run: the model kernel, limits, retries."""

    kernel: str
    limits: Limits = field(default_factory=Limits)
    retries: int = RETRIES
    compare_exclusive: bool | None = None  # None: where the model kernel has PG_anon_exclusive


class Attempt:
    """One run of a scenario on both sides, step by step, until the first difference."""

    def __init__(
        self, scenario: Scenario, opts: Options, machine: LiveMachine, changes: SystemChanges | None
    ) -> None:
        self.scenario = scenario
        self.opts = opts
        self.excl = (
            models_anon_exclusive(opts.kernel)
            if opts.compare_exclusive is None
            else opts.compare_exclusive
        )
        self.runner = Runner(scenario, opts.kernel, tracing=True)  # decisions for the report
        self.live = LiveScenario(machine, scenario, changes)
        self.regions = Regions()
        self.seen: tuple[Snapshot, Snapshot] | None = None  # (live, model) after the last step
        for name in scenario.processes:
            self.regions.add_proc(name)

    def run(self) -> CaseResult:
        t0 = time.perf_counter()
        before = read_vmstat()
        try:
            self.live.start()
            result = self._steps(before)
        except Unsupported as e:
            result = self._result("unsupported", str(e))
        finally:
            self.live.close()
        result.elapsed_s = time.perf_counter() - t0
        return result

    def _result(self, status: str, reason: str = "") -> CaseResult:
        return CaseResult(self.scenario.path, self.scenario.name, self.opts.kernel, status, reason)

    def _steps(self, before: dict[str, int]) -> CaseResult:
        for n, step in enumerate(self.scenario.steps, 1):
            events_at = len(self.runner.k.events)
            if step.op == "khugepaged" and self.runner.crashed_at is None:
                self._prepare_khugepaged(step)
            mine = model_step(self.runner, step)
            theirs = self.live.run_step(step)
            self.regions.after(step, mine.outcome == "ok" and theirs.outcome == "ok")
            live, model = self.observe()
            found = self._compare(step, theirs, mine, live, model)
            self.seen = live, model
            if found is not None:
                found.steps_run = n
                found.model_decisions = [e for e in self.runner.k.events[events_at:] if e.decision]
                return self._judge(found, live, model, before)
        result = self._result("agree")
        result.steps_run = len(self.scenario.steps)
        return result

    def _prepare_khugepaged(self, step: Step) -> None:
        try:
            self.live.prepare_khugepaged(self.runner.k)
        except Unsupported as e:
            raise Unsupported(f"step {step.index} (khugepaged): {e}") from None

    def observe(self) -> tuple[Snapshot, Snapshot]:
        """Both sides' canonical observations of the same named regions."""
        live_spec: dict[str, tuple[LiveProcess, int, int]] = {}
        model_spec: list[tuple[str, Process, int, int]] = []
        gone: dict[str, int] = {}  # views of a process dead live but alive in the model
        for view, proc, region in self.regions.observed():
            lp, mp = self.live.procs.get(proc), self.runner.procs.get(proc)
            la, ma = self.live.regions.get(region), self.runner.regions.get(region)
            if lp is None or mp is None or la is None or ma is None:
                continue
            if not lp.alive and not mp.alive:  # e.g. killed by SIGSEGV on both sides
                continue
            size = self.regions.size[region]
            model_spec.append((view, mp, ma, size))  # a dead model process shows nothing
            if lp.alive:
                live_spec[view] = (lp, la, size)
            else:
                gone[view] = (la % PAGE + size + PAGE - 1) // PAGE
        live = self.live.machine.snapshot(live_spec)
        for view, pages in gone.items():
            live.arrays[view] = PageArrays.absent(pages)
        return live, model_snapshot(self.runner.k, model_spec, show_exclusive=self.excl)

    def _compare(
        self, step: Step, theirs: StepOutcome, mine: StepOutcome, live: Snapshot, model: Snapshot
    ) -> CaseResult | None:
        diffs: list[Difference] = []
        if theirs.outcome != mine.outcome:
            diffs.append(Difference("outcome", 0, 0, ["outcome"], theirs.outcome, mine.outcome))
        elif theirs.result != mine.result:
            diffs.append(
                Difference("returned", 0, 0, ["bytes"], repr(theirs.result), repr(mine.result))
            )
        diffs += diff_regions(live, model, self.excl)
        if self.seen is not None:
            diffs += diff_identity((self.seen[0], live), (self.seen[1], model))
        if not diffs:
            return None
        result = self._result("disagree")
        result.step, result.differences = step, diffs
        changed = {d.region for d in diffs}
        result.live_view = {n: render_runs(p) for n, p in live.regions.items() if n in changed}
        result.model_view = {n: render_runs(p) for n, p in model.regions.items() if n in changed}
        return result

    def _judge(
        self, found: CaseResult, live: Snapshot, model: Snapshot, before: dict[str, int]
    ) -> CaseResult:
        """A disagreement, unless the live kernel did something the scenario did not ask for."""
        # the collapses of forced khugepaged scans were asked for
        caused = self.live.caused
        expected = {k: v + caused.get(k, 0) for k, v in before.items()}
        why = noise(live, model, expected, read_vmstat())
        if why:
            found.status, found.reason = "inconclusive", why
        return found


def noise(live: Snapshot, model: Snapshot, before: dict[str, int], after: dict[str, int]) -> str:
    """Why a difference may be the machine's doing (THP fallback, khugepaged, KSM), or ''."""
    delta = {k: after.get(k, 0) - v for k, v in before.items() if after.get(k, 0) != v}
    if not live.stable:
        return "the live pages kept changing while they were observed (migration or collapse)"
    if _any_page(live, model, _ksm):
        return "a KSM merge the scenario did not ask for"
    fallback = sum(v for k, v in delta.items() if k.startswith(FALLBACKS))
    if fallback and _any_page(live, model, _smaller):
        return f"the live kernel could not allocate a THP or mTHP (fallbacks +{fallback})"
    collapsed = delta.get("thp_collapse_alloc", 0)
    if collapsed and _any_page(live, model, _collapsed):
        return f"khugepaged collapsed a range (thp_collapse_alloc +{collapsed})"
    failed = delta.get("thp_collapse_alloc_failed", 0)
    if failed and _any_page(live, model, _not_collapsed):
        return f"khugepaged could not allocate a THP (thp_collapse_alloc_failed +{failed})"
    return ""


PagePredicate = Callable[[PageArrays, PageArrays, int], npt.NDArray[np.bool_]]


def _any_page(live: Snapshot, model: Snapshot, pred: PagePredicate) -> bool:
    """Whether pred holds for some page of some region, live and model side by side."""
    for name, larrays in live.arrays.items():
        marrays = model.arrays.get(name)
        if marrays is not None and pred(larrays, marrays, min(len(larrays), len(marrays))).any():
            return True
    return False


def _ksm(live: PageArrays, model: PageArrays, n: int) -> npt.NDArray[np.bool_]:
    """A KSM page live where the model has none."""
    return live.ksm[:n] & ~model.ksm[:n]


def _smaller(live: PageArrays, model: PageArrays, n: int) -> npt.NDArray[np.bool_]:
    """A fallback the model did not take: a smaller folio (or small pages) where it has a THP."""
    lnr, mnr = live.nr[:n], model.nr[:n]
    return (lnr != NA) & (mnr != NA) & (lnr < mnr)


def _collapsed(live: PageArrays, model: PageArrays, n: int) -> npt.NDArray[np.bool_]:
    """A collapse the model did not make: small pages, a PTE-mapped THP or (max_ptes_none)
    nothing at all, where the live side now has a PMD mapping."""
    return (live.level[:n] == LEVEL_PMD) & (model.level[:n] != LEVEL_PMD)


def _not_collapsed(live: PageArrays, model: PageArrays, n: int) -> npt.NDArray[np.bool_]:
    """A collapse the model made and the live kernel did not."""
    return (live.level[:n] != LEVEL_PMD) & (model.level[:n] == LEVEL_PMD)


def run_case(
    scenario: Scenario, opts: Options, machine: LiveMachine, changes: SystemChanges | None
) -> CaseResult:
    """Compare one scenario; retry what the machine's own activity may have caused."""
    reason = unsupported_reason(scenario, machine.facts or kernel_facts(), opts.limits)
    if reason:
        return CaseResult(scenario.path, scenario.name, opts.kernel, "unsupported", reason)
    result = CaseResult(scenario.path, scenario.name, opts.kernel, "error")
    for attempt in range(1, opts.retries + 2):
        try:
            result = Attempt(scenario, opts, machine, changes).run()
        except CowlabError as e:
            result = CaseResult(scenario.path, scenario.name, opts.kernel, "error", str(e))
        result.attempts = attempt
        if result.status != "inconclusive":
            break
    if result.status == "disagree" and not _reproduces(scenario, opts, machine, changes):
        result.status = "inconclusive"
        result.reason = "the difference did not reproduce on a second run (a passing live effect)"
    return result


def _reproduces(
    scenario: Scenario, opts: Options, machine: LiveMachine, changes: SystemChanges | None
) -> bool:
    """A disagreement counts only if the live kernel shows it again: one more full run."""
    try:
        return Attempt(scenario, opts, machine, changes).run().status == "disagree"
    except CowlabError:
        return True
