"""Run a scenario on one modelled kernel: execute each step, observe, judge the expectations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cowlab import checker
from cowlab.errors import KernelBug, Segfault, SyscallError
from cowlab.kernel import Config, Kernel, Pin, Process
from cowlab.mm.constants import PAGE_SIZE, PG_allocated, PG_double_map, PG_head, PG_tail
from cowlab.mm.huge_memory import total_mapcount
from cowlab.mm.mm import compound_head, page_count, page_mapcount
from cowlab.mm.mm_types import pmd_index, pte_index
from cowlab.mm.pgtable import PTE_SPECIAL, HugePmd
from cowlab.scenario.located import Loc
from cowlab.scenario.model import Address, Expectation, Scenario, Step

PAGE_MASK = ~(PAGE_SIZE - 1)


@dataclass
class ExpectResult:
    what: str
    expected: Any
    actual: Any
    passed: bool
    loc: Loc
    implicit: bool = False


@dataclass
class StepResult:
    step: Step
    outcome: str
    happened: list[str]
    results: list[ExpectResult]
    log: list[tuple[int, str, str]] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    observed_pfn: int | None = None

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)


@dataclass
class RunResult:
    scenario: Scenario
    kernel_id: str
    steps: list[StepResult]

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.steps)


class Runner:
    """The state of one run: the kernel, names bound so far, and the logical memory."""

    def __init__(self, scenario: Scenario, kernel_id: str, tracing: bool = False) -> None:
        cfg = scenario.config
        config = Config(
            swap=cfg.config_swap,
            thp=cfg.config_thp,
            debug_vm=cfg.debug_vm,
            soft_dirty=cfg.soft_dirty,
        )
        self.k = Kernel(kernel_id, config, tracing=tracing)
        self.k.thp_enabled = cfg.thp
        self.k.mthp_enabled.update(cfg.mthp)
        self.k.thp_use_zero_page = cfg.use_zero_page
        self.scenario = scenario
        self.kernel_id = kernel_id
        self.procs: dict[str, Process] = {}
        self.regions: dict[str, int] = {}
        self.pins: dict[str, Pin] = {}
        self.labels: dict[str, int | None] = {}
        self.logical = LogicalMemory()
        self.broken: set[str] = set()
        self.crashed_at: int | None = None
        for name in scenario.processes:
            self.procs[name] = self.k.spawn()

    # --- names ---------------------------------------------------------------------------

    def addr(self, a: Address) -> int:
        return a.offset if a.region is None else self.regions[a.region] + a.offset

    def proc_name(self, pid: int) -> str:
        return next((n for n, p in self.procs.items() if p.pid == pid), f"pid {pid}")

    # --- one step --------------------------------------------------------------------------

    def run_step(self, step: Step) -> StepResult:
        if self.crashed_at is not None:
            why = f"not run: the kernel hit BUG() at step {self.crashed_at}"
            return StepResult(step, "not run", [why], [])
        k = self.k
        cows, reuses, log_at = len(k.cow_log), k.vmstat["pgreuse"], len(k.log)
        before = counters_snapshot(k) if k.tracing else None
        outcome, result, bug = "ok", None, ""
        try:
            result = self.execute(step)
        except Segfault:
            outcome = "SIGSEGV"
        except SyscallError as e:
            outcome = e.errno
        except KernelBug as e:
            outcome = "BUG"
            self.crashed_at = step.index
            bug = f"kernel BUG: {e}"
            k.trace("BUG", bug)
        happened = self.describe(step, outcome, result, cows)
        if bug:
            happened.append(bug)
        fault = (
            "copy" if len(k.cow_log) > cows else "reuse" if k.vmstat["pgreuse"] > reuses else "none"
        )
        pfn = self.observe_pfn(step) if outcome == "ok" else None
        if step.label:
            self.labels[step.label] = pfn
        results = self.judge(step, outcome, result, fault, pfn)
        changes = counter_changes(k, before) if before is not None else []
        return StepResult(step, outcome, happened, results, k.log[log_at:], changes, pfn)

    def execute(self, step: Step) -> Any:
        a = step.args
        op = step.op
        if op == "spawn":
            self.procs[a["proc"]] = self.k.spawn()
            return None
        if op in ("split_huge_pages", "shrink", "set", "unpin", "dma_write", "dma_read"):
            return self.machine_op(op, a)
        p = self.procs[a["proc"]]
        if op == "mmap":
            at = self.addr(a["at"]) if "at" in a else None
            self.regions[a["name"]] = p.mmap(
                a["size"], a.get("prot", "rw"), align=a.get("align", 0), addr=at
            )
            return None
        return self.process_op(p, a["proc"], op, a)

    def process_op(self, p: Process, name: str, op: str, a: dict[str, Any]) -> Any:
        at = self.addr(a["at"]) if "at" in a else 0
        if op == "write":
            p.write(at, a["data"])
            self.logical.write(name, at, a["data"])
        elif op == "read":
            return p.read(at, a["size"])
        elif op == "fork":
            child = p.fork()
            self.procs[a["child"]] = child
            self.logical.fork(name, a["child"], child)
        elif op == "exit":
            p.exit()
            self.logical.drop(name, 0, 1 << 64)
        elif op in ("munmap", "madvise", "mprotect", "numa_balance"):
            self.range_op(p, name, op, at, a)
        elif op == "mremap":
            self.mremap(p, name, at, a)
        elif op == "clear_refs":
            p.clear_refs(a.get("value", 4))
        elif op == "pin":
            pin = p.get_user_pages(
                at,
                a["size"],
                write=a.get("write", True),
                force=a.get("force", False),
                flavour=a.get("flavour", "longterm"),
                fast=a.get("fast", False),
            )
            self.pins[a["name"]] = pin
            self.logical.pin(a["name"], name, pin)
        return None

    def range_op(self, p: Process, name: str, op: str, at: int, a: dict[str, Any]) -> None:
        size = a["size"]
        if op == "munmap":
            p.munmap(at, size)
            self.logical.drop(name, at, at + size)
        elif op == "madvise":
            p.madvise(at, size, a["advice"])
            if a["advice"] == "dontneed":
                self.logical.drop(name, at, at + size)
        elif op == "mprotect":
            p.mprotect(at, size, a["prot"])
        else:
            p.numa_balance(at, size)

    def mremap(self, p: Process, name: str, at: int, a: dict[str, Any]) -> None:
        size = a["size"]
        new_size = a.get("new_size", size)
        to = self.addr(a["to"]) if "to" in a else None
        new = p.mremap(at, size, new_size, may_move=a.get("may_move", False), fixed_addr=to)
        self.logical.move(name, at, new, min(size, new_size), size)
        if "name" in a:
            self.regions[a["name"]] = new

    def machine_op(self, op: str, a: dict[str, Any]) -> Any:
        k = self.k
        if op == "split_huge_pages":
            return f"{k.split_huge_pages()} THPs split"
        if op == "shrink":
            return f"{k.shrink_deferred_split()} THPs split"
        if op == "set":
            for key, value in a.items():
                setattr(k, "thp_enabled" if key == "thp" else key, value)
            return None
        pin = self.pins[a["pin"]]
        if op == "unpin":
            k.unpin(pin)
            self.logical.unpin(a["pin"])
            return None
        offset = a.get("offset", 0)
        if op == "dma_write":
            pin.dma_write(offset, a["data"])
            self.logical.dma_write(a["pin"], pin, offset, a["data"])
            return None
        return pin.dma_read(offset, a["size"])

    # --- observation -------------------------------------------------------------------

    def observe_pfn(self, step: Step) -> int | None:
        if "proc" not in step.args or step.args["proc"] not in self.procs:
            return None
        if step.op == "mmap":
            at = self.regions[step.args["name"]]
        elif "at" in step.args:
            at = self.addr(step.args["at"])
        else:
            return None
        proc = self.procs[step.args["proc"]]
        return proc.translate(at) if proc.alive else None

    def mapped_kind(self, step: Step) -> str:
        proc = self.procs[step.args["proc"]]
        at = self.regions[step.args["name"]] if step.op == "mmap" else self.addr(step.args["at"])
        entry = proc.mm.pmds.get(pmd_index(at)) if proc.alive else None
        if isinstance(entry, HugePmd):
            return "huge_zero" if entry.huge_zero else "pmd"
        if entry is None or entry.pfn[pte_index(at)] < 0:
            return "none"
        return "zero" if entry.bits[pte_index(at)] & PTE_SPECIAL else "pte"

    # --- expectations --------------------------------------------------------------------

    def judge(
        self, step: Step, outcome: str, result: Any, fault: str, pfn: int | None
    ) -> list[ExpectResult]:
        out: list[ExpectResult] = []
        declared = {e.what for e in step.expect if e.applies_to(self.kernel_id)}
        if "outcome" not in declared:
            out.append(ExpectResult("outcome", "ok", outcome, outcome == "ok", step.loc, True))
        wanted = {"counters", "rmap"}
        for e in step.expect:
            if e.what in ("holds", "breaks") and e.applies_to(self.kernel_id):
                wanted |= set(e.expected_for(self.kernel_id))
        violated = self.properties_now(wanted)
        newly = {name for name in ("counters", "rmap") if violated[name]} - self.broken
        if outcome == "BUG":
            newly = set()  # a machine that oopsed mid-operation owes no invariant
        expected_breaks = set()
        for e in step.expect:
            if not e.applies_to(self.kernel_id):
                continue
            want = e.expected_for(self.kernel_id)
            if e.what == "breaks":
                expected_breaks |= set(want)
            actual = self.actual(e, step, outcome, result, fault, pfn, violated)
            out.append(
                ExpectResult(e.what, want, actual, self.matches(e.what, want, actual), e.loc)
            )
        for name in sorted(newly & {"counters", "rmap"} - expected_breaks):
            problems = violated[name]
            out.append(ExpectResult(name, "holds", problems[0], False, step.loc, True))
        self.broken |= newly
        return out

    def properties_now(self, names: set[str]) -> dict[str, list[str]]:
        checks = {
            "counters": lambda: checker.check_counters(self.k),
            "rmap": lambda: checker.check_rmap(self.k),
            "pin_coherence": lambda: checker.check_pin_coherence(self.k),
            "no_leak": lambda: self.logical.check(self),
        }
        return {name: checks[name]() for name in names}

    def actual(
        self,
        e: Expectation,
        step: Step,
        outcome: str,
        result: Any,
        fault: str,
        pfn: int | None,
        violated: dict[str, list[str]],
    ) -> Any:
        f = self.k.frames
        if e.what == "outcome":
            return outcome
        if e.what == "data":
            return result
        if e.what == "fault":
            return fault
        if e.what in ("holds", "breaks"):
            return {name: violated[name] for name in e.expected_for(self.kernel_id)}
        if e.what in ("same_page", "other_page"):
            return pfn, self.page_ref(e.expected_for(self.kernel_id), step)
        if e.what == "mapped":
            return self.mapped_kind(step) if outcome == "ok" else "none"
        if pfn is None:
            return None
        if e.what == "mapcount":
            return page_mapcount(f, pfn)
        if e.what == "total_mapcount":
            return total_mapcount(f, compound_head(f, pfn))
        return page_count(f, pfn)

    def page_ref(self, ref: str, step: Step) -> int | None:
        kind, name = ref.split(":", 1)
        if kind == "step":
            return self.labels.get(name)
        pin = self.pins[name]
        at = self.addr(step.args["at"]) if "at" in step.args else None
        if at is None:
            return None
        index = (at & PAGE_MASK) - (pin.addr & PAGE_MASK)
        if not 0 <= index < len(pin.pages) * PAGE_SIZE:
            return None
        return pin.pages[index // PAGE_SIZE]

    @staticmethod
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

    # --- what happened ---------------------------------------------------------------------

    def describe(self, step: Step, outcome: str, result: Any, cows: int) -> list[str]:
        lines = []
        for event in self.k.cow_log[cows:]:
            what = "zero page" if event.old is None else f"pfn {event.old:#x}"
            lines.append(
                f"{event.function}: {self.proc_name(event.pid)} {event.addr:#x} copied {what} "
                f"-> pfn {event.new:#x} ({event.why})"
            )
        if isinstance(result, bytes):
            lines.append(f"returned {result[:32]!r}{'...' if len(result) > 32 else ''}")
        elif isinstance(result, str):
            lines.append(result)
        if outcome != "ok":
            lines.append(f"outcome {outcome}")
        return lines


def run_scenario(scenario: Scenario, kernel_id: str, tracing: bool = False) -> RunResult:
    runner = Runner(scenario, kernel_id, tracing)
    return RunResult(scenario, kernel_id, [runner.run_step(step) for step in scenario.steps])


# --- logical memory: what each process and each pin is owed -------------------------------


class LogicalMemory:
    """The POSIX meaning of the program: fork copies, writes stay in their process, a device's
    DMA lands in the process that registered the buffer, a pin sees that process's writes."""

    def __init__(self) -> None:
        self.pages: dict[tuple[str, int], bytearray] = {}
        self.pin_pages: dict[tuple[str, int], bytearray] = {}
        self.attached: dict[tuple[str, int], tuple[str, int] | None] = {}

    def _page(self, table: dict[Any, bytearray], key: Any) -> bytearray:
        page = table.get(key)
        if page is None:
            page = table[key] = bytearray(PAGE_SIZE)
        return page

    def write(self, proc: str, addr: int, data: bytes) -> None:
        for va, off, chunk in _pieces(addr, data):
            self._page(self.pages, (proc, va))[off : off + len(chunk)] = chunk
        for key, target in self.attached.items():
            if target is not None and target[0] == proc:
                self._mirror(key, target)

    def _mirror(self, key: tuple[str, int], target: tuple[str, int]) -> None:
        self.pin_pages[key] = bytearray(self.pages.get(target, bytes(PAGE_SIZE)))

    def fork(self, parent: str, child: str, child_proc: Process) -> None:
        for (proc, va), page in list(self.pages.items()):
            if proc == parent and child_proc.mm.find_vma(va) is not None:
                self.pages[(child, va)] = bytearray(page)

    def drop(self, proc: str, start: int, end: int) -> None:
        for key in [k for k in self.pages if k[0] == proc and start <= k[1] < end]:
            del self.pages[key]
        for key, target in self.attached.items():
            if target is not None and target[0] == proc and start <= target[1] < end:
                self.attached[key] = None

    def move(self, proc: str, old: int, new: int, keep: int, size: int) -> None:
        moved = {}
        for key in [k for k in self.pages if k[0] == proc and old <= k[1] < old + size]:
            page = self.pages.pop(key)
            if key[1] < old + keep:
                moved[(proc, key[1] - old + new)] = page
        self.pages.update(moved)
        for key, target in self.attached.items():
            if target is not None and target[0] == proc and old <= target[1] < old + size:
                inside = target[1] < old + keep
                self.attached[key] = (proc, target[1] - old + new) if inside else None

    def pin(self, name: str, proc: str, pin: Pin) -> None:
        first = pin.addr & PAGE_MASK
        for i in range(len(pin.pages)):
            target = (proc, first + i * PAGE_SIZE)
            self.attached[(name, i)] = target
            self._mirror((name, i), target)

    def unpin(self, name: str) -> None:
        for key in [k for k in self.attached if k[0] == name]:
            del self.attached[key]
            self.pin_pages.pop(key, None)

    def dma_write(self, name: str, pin: Pin, offset: int, data: bytes) -> None:
        base = pin.addr & PAGE_MASK
        for va, off, chunk in _pieces(pin.addr + offset, data):
            key = (name, (va - base) // PAGE_SIZE)
            self._page(self.pin_pages, key)[off : off + len(chunk)] = chunk
            target = self.attached.get(key)
            if target is not None:
                self._page(self.pages, target)[off : off + len(chunk)] = chunk

    def check(self, runner: Runner) -> list[str]:
        """Every byte a process or a pin can see now, against what it is owed."""
        problems: list[str] = []
        f = runner.k.frames
        for name, proc in runner.procs.items():
            if not proc.alive:
                continue
            for vma in proc.mm.vmas:
                for va in range(vma.vm_start, vma.vm_end, PAGE_SIZE):
                    pfn = proc.translate(va)
                    owed = self.pages.get((name, va))
                    seen = f.page_bytes(pfn) if pfn is not None else None
                    if _differs(seen, owed):
                        problems.append(f"{name} sees other bytes than it wrote at {va:#x}")
                        break
        for (pin_name, i), owed in self.pin_pages.items():
            pin = runner.pins.get(pin_name)
            if pin is not None and _differs(f.page_bytes(pin.pages[i]), owed):
                problems.append(f"pin {pin_name} page {i} holds other bytes than it is owed")
        return problems


def _differs(seen: bytes | None, owed: bytearray | None) -> bool:
    if seen is None:
        return owed is not None and any(owed)
    return seen != (bytes(owed) if owed is not None else bytes(PAGE_SIZE))


def _pieces(addr: int, data: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    done = 0
    while done < len(data):
        va = (addr + done) & PAGE_MASK
        off = (addr + done) - va
        n = min(len(data) - done, PAGE_SIZE - off)
        out.append((va, off, data[done : done + n]))
        done += n
    return out


# --- counters before and after a step (for explain) -----------------------------------


def counters_snapshot(k: Kernel) -> dict[str, np.ndarray]:
    f = k.frames
    n = f.nr
    return {
        "_mapcount": f._mapcount[:n].copy(),
        "_count": f._count[:n].copy(),
        "compound_mapcount": f.compound_mapcount[:n].copy(),
        "flags": f.flags[:n].copy(),
        "mapping": f.mapping[:n].copy(),
        "order": f.order[:n].copy(),
    }


def counter_changes(k: Kernel, before: dict[str, np.ndarray]) -> list[str]:
    """The step's effect on struct page counters, per page or THP, as old -> new."""
    f = k.frames
    n = len(before["_count"])
    now = {name: getattr(f, name)[:n] for name in before}
    lines = _allocation_changes(k, before)
    changed = np.zeros(n, dtype=bool)
    for name in ("_mapcount", "_count", "compound_mapcount", "mapping"):
        changed |= before[name] != now[name]
    compound = ((before["flags"] | now["flags"]) & (PG_head | PG_tail)) != 0
    order = np.maximum(before["order"], now["order"]).astype(np.int64)
    pfns = np.arange(n)
    heads = np.unique(np.where(compound, pfns & ~((1 << order) - 1), pfns)[changed])
    for head in heads.tolist():
        if compound[head] and order[head]:
            lines.append(_thp_change(head, 1 << int(order[head]), before, now))
        else:
            lines.append(f"page {head:#x}: " + ", ".join(_field_changes(head, before, now)))
    return lines


def _field_changes(
    pfn: int, before: dict[str, np.ndarray], now: dict[str, np.ndarray]
) -> list[str]:
    out = []
    for name in ("_mapcount", "_count", "mapping"):
        old, new = int(before[name][pfn]), int(now[name][pfn])
        if old != new:
            shown = (f"anon_vma#{old}", f"anon_vma#{new}") if name == "mapping" else (old, new)
            out.append(f"{name} {shown[0]}->{shown[1]}")
    return out


def _allocation_changes(k: Kernel, before: dict[str, np.ndarray]) -> list[str]:
    f = k.frames
    n = len(before["_count"])
    was = np.zeros(f.nr, dtype=bool)
    was[:n] = (before["flags"] & PG_allocated) != 0
    now = (f.flags[: f.nr] & PG_allocated) != 0
    out = []
    for label, sel in (("allocated", now & ~was), ("freed", was & ~now)):
        pfns = np.flatnonzero(sel)
        if pfns.size:
            shown = ", ".join(hex(p) for p in pfns[:4].tolist())
            more = f" (+{pfns.size - 4} more)" if pfns.size > 4 else ""
            out.append(f"{label} {pfns.size} frames: {shown}{more}")
    return out


def _thp_change(
    head: int, nr: int, before: dict[str, np.ndarray], now: dict[str, np.ndarray]
) -> str:
    sl = slice(head, head + nr)
    parts = []
    c_old = int(before["compound_mapcount"][head + 1]) + 1
    c_new = int(now["compound_mapcount"][head + 1]) + 1
    if c_old != c_new:
        parts.append(f"compound_mapcount {c_old}->{c_new}")
    dm_old = bool(before["flags"][head + 1] & PG_double_map)
    dm_new = bool(now["flags"][head + 1] & PG_double_map)
    if dm_old != dm_new:
        parts.append(f"DoubleMap {int(dm_old)}->{int(dm_new)}")
    parts += [p for p in _field_changes(head, before, now) if not p.startswith("_mapcount")]
    old_mc, new_mc = before["_mapcount"][sl], now["_mapcount"][sl]
    diff = np.flatnonzero(old_mc != new_mc)
    pairs: dict[tuple[int, int], int] = {}
    for i in diff.tolist():
        key = (int(old_mc[i]), int(new_mc[i]))
        pairs[key] = pairs.get(key, 0) + 1
    for (a, b), count in sorted(pairs.items()):
        which = f"subpage {int(diff[0])}" if count == 1 else f"{count} subpages"
        parts.append(f"{which} _mapcount {a}->{b}")
    return f"THP {head:#x}: " + ", ".join(parts)
