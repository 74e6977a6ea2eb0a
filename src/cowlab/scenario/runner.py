"""Run a scenario on one modelled kernel: execute each step, observe, judge the expectations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cowlab.errors import KernelBug, Segfault, SyscallError
from cowlab.kernel import Config, Kernel, Memset, Pin, Process
from cowlab.mm.mremap import POSITIVE_EFAULT
from cowlab.mm.trace import CowEvent, CowLog, Event, Indexed
from cowlab.policy import resolve
from cowlab.scenario import budget
from cowlab.scenario.changes import counter_changes, counters_snapshot
from cowlab.scenario.judge import judge
from cowlab.scenario.loader import ScenarioError
from cowlab.scenario.located import Loc
from cowlab.scenario.model import Address, Scenario, Step
from cowlab.scenario.oracle import LogicalMemory


@dataclass
class ExpectResult:
    what: str
    expected: Any
    actual: Any
    passed: bool
    loc: Loc
    implicit: bool = False


class Happened(Indexed[str]):
    """A step's "what happened": a line per COW copy the step made, written when read (a 2 MiB
    write after fork copies 512 pages; a table row shows five lines), then the other lines."""

    def __init__(self, log: CowLog, first: int, names: dict[int, str]) -> None:
        self.log = log
        self.first, self.last = first, len(log)  # the log only grows: the step's copies stay
        self.names = names  # pid -> process name when the step ran
        self.lines: list[str] = []

    def append(self, line: str) -> None:
        self.lines.append(line)

    def __len__(self) -> int:
        return self.last - self.first + len(self.lines)

    def _at(self, i: int) -> str:
        copies = self.last - self.first
        return self._copied(self.log[self.first + i]) if i < copies else self.lines[i - copies]

    def _copied(self, event: CowEvent) -> str:
        what = "zero page" if event.old is None else f"pfn {event.old:#x}"
        name = self.names.get(event.pid, f"pid {event.pid}")
        return (
            f"{event.function}: {name} {event.addr:#x} copied {what} -> pfn {event.new:#x} "
            f"({event.why})"
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(list(self))


@dataclass
class StepResult:
    step: Step
    outcome: str
    happened: Sequence[str]
    results: list[ExpectResult]
    events: list[Event] = field(default_factory=list)  # recorded when tracing
    changes: list[str] = field(default_factory=list)
    observed_pfn: int | None = None
    rmap_walk_vmas: int = 0  # VMAs the step's rmap walks visited

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

    @property
    def listed(self) -> bool:
        """Whether the scenario's `kernels:` names this kernel (else it ran by --kernel)."""
        return self.kernel_id in self.scenario.kernels

    @property
    def not_applicable(self) -> int:
        """Expectations keyed only by other kernels: not judged on this one."""
        return sum(not e.applies_to(self.kernel_id) for s in self.scenario.steps for e in s.expect)


def reused(k: Kernel) -> int:
    """Write faults satisfied by the page already there: wp_page_reuse, or do_swap_page mapping
    the swapped-in page writable."""
    return k.vmstat["pgreuse"] + k.vmstat["swapin_reuse"]


MACHINE_OPS = (
    "split_huge_pages",
    "shrink",
    "end_writeback",
    "shrink_swapcache",
    "khugepaged",
    "ksmd",
    "set",
    "unpin",
    "dma_write",
    "dma_read",
)


class Runner:
    """The state of one run: the kernel, names bound so far, and the logical memory."""

    def __init__(self, scenario: Scenario, kernel_id: str, tracing: bool = False) -> None:
        cfg = scenario.config
        config = Config(
            swap=cfg.config_swap,
            thp=cfg.config_thp,
            debug_vm=cfg.debug_vm,
            soft_dirty=cfg.soft_dirty,
            no_page_mapcount=cfg.no_page_mapcount,
            swap_device=cfg.swap_device,
        )
        resolved = resolve(kernel_id)
        if cfg.no_page_mapcount and not resolved.policy.no_page_mapcount_option:
            raise ScenarioError(
                scenario.path,
                cfg.locs["no_page_mapcount"],
                f"expected no_page_mapcount on 6.15 .. 6.18, not on {resolved.describe()}: "
                "mm/Kconfig has CONFIG_NO_PAGE_MAPCOUNT from 6.15",
            )
        self.k = Kernel(kernel_id, config, tracing=tracing)
        if cfg.mthp and not self.k.policy.has_knob("mthp"):
            raise ScenarioError(
                scenario.path,
                cfg.locs["mthp"],
                f"expected no mthp on {self.k.resolved.describe()}: hugepages-<size>kB/enabled "
                "exists from 6.8 (19eaf44954df)",
            )
        self.k.thp_enabled = cfg.thp
        self.k.mthp_enabled.update(cfg.mthp)
        self.k.thp_use_zero_page = cfg.use_zero_page
        self.scenario = scenario
        self.kernel_id = kernel_id
        self.procs: dict[str, Process] = {}
        self.regions: dict[str, int] = {}
        self.pins: dict[str, Pin] = {}
        self.labels: dict[str, int | None] = {}
        self.rmap_walk_vmas = 0  # the VMAs the current step's rmap walks visited
        self.logical = LogicalMemory()
        self.broken: set[str] = set()
        self.properties_seen: dict[str, list[str]] = {}  # judge: the last step's violations
        self.crashed_at: int | None = None
        self.cows_at = 0  # the length of the COW log when the current step began
        self.max_memory = budget.limit()
        for name in scenario.processes:
            self.procs[name] = self.k.spawn()

    # --- names ---------------------------------------------------------------------------

    def addr(self, a: Address) -> int:
        return a.offset if a.region is None else self.regions[a.region] + a.offset

    # --- one step --------------------------------------------------------------------------

    def run_step(self, step: Step, judging: bool = True) -> StepResult:
        """Run one step; `judging` False (the search: it judges whole letters itself) skips
        the account of what happened (but a BUG or a fatal signal), the observation and the
        expectations."""
        if self.crashed_at is not None:
            why = f"not run: the kernel hit BUG() at step {self.crashed_at}"
            return StepResult(step, "not run", [why], [])
        budget.check_step(self, step, self.max_memory)
        k = self.k
        cows, reuses, events_at = len(k.cow_log), reused(k), len(k.events)
        self.cows_at = cows
        walked = k.vmstat["rmap_walk_vmas"]
        before = counters_snapshot(k) if k.tracing and judging else None
        outcome, result, note = "ok", None, ""
        try:
            result = self.execute(step)
        except Segfault as e:
            outcome = "SIGSEGV"
            if e.killed:
                note = f"{step.args['proc']} killed by SIGSEGV ({e.access} at {e.addr:#x})"
        except SyscallError as e:
            outcome = e.errno
        except KernelBug as e:
            outcome = "BUG"
            self.crashed_at = step.index
            note = f"kernel BUG: {e}"
            k.event("BUG", "BUG", detail=str(e))
        if not judging:
            return StepResult(step, outcome, [note] if note else [], [])
        happened = self.describe(step, outcome, result, cows)
        if note:  # a kernel BUG, or the process a fatal signal killed
            happened.append(note)
        fault = "copy" if len(k.cow_log) > cows else "reuse" if reused(k) > reuses else "none"
        self.rmap_walk_vmas = k.vmstat["rmap_walk_vmas"] - walked
        pfn = self.observe_pfn(step) if outcome == "ok" else None
        if step.label:
            self.labels[step.label] = pfn
        results = judge(self, step, outcome, result, fault, pfn)
        changes = counter_changes(k, before) if before is not None else []
        return StepResult(
            step,
            outcome,
            happened,
            results,
            k.events[events_at:],
            changes,
            pfn,
            self.rmap_walk_vmas,
        )

    def execute(self, step: Step) -> Any:
        a = step.args
        op = step.op
        if op == "spawn":
            self.procs[a["proc"]] = self.k.spawn()
            return None
        if op in MACHINE_OPS:
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
        if op in ("write", "read", "touch"):
            return self.access(p, name, op, at, a)
        elif op == "fork":
            child = p.fork()
            self.procs[a["child"]] = child
            self.logical.fork(name, a["child"], child)
        elif op == "exit":
            p.exit()
            self.logical.drop(name, 0, 1 << 64)
        elif op in ("munmap", "madvise", "mprotect", "numa_balance", "swapout"):
            return self.range_op(p, name, op, at, a)
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

    def access(self, p: Process, name: str, op: str, at: int, a: dict[str, Any]) -> Any:
        """A CPU store (data, or a fill of size bytes), load or touch of every page; a fatal
        SIGSEGV kills the process after the bytes before it."""
        try:
            if op == "read":
                return p.read(at, a["size"])
            if op == "touch":
                p.touch(at, a["size"], write=a.get("write", False))
            elif "data" in a:
                p.write(at, a["data"])
            else:
                p.fill(at, a["size"], a["fill"])
        except Segfault as e:
            if op == "write":
                self.stored(name, at, a, e.done)
            if e.killed:
                self.logical.drop(name, 0, 1 << 64)
            raise
        if op == "write":
            self.stored(name, at, a, a["size"] if "fill" in a else len(a["data"]))
        return None

    def stored(self, name: str, at: int, a: dict[str, Any], n: int) -> None:
        """The oracle learns the first n bytes of a write step (all, or those before SIGSEGV)."""
        data = a.get("data")
        if data is None or isinstance(data, Memset):  # a fill of size bytes, or its data form
            self.logical.fill(name, at, n, a["fill"] if data is None else data.value)
        else:
            self.logical.write(name, at, data[:n])

    def range_op(self, p: Process, name: str, op: str, at: int, a: dict[str, Any]) -> Any:
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
        elif op == "swapout":
            return f"{p.swapout(at, size, a.get('until', 'freed'))} pages to the swap cache"
        else:
            p.numa_balance(at, size)
        return None

    def mremap(self, p: Process, name: str, at: int, a: dict[str, Any]) -> None:
        size = a["size"]
        new_size = a.get("new_size", size)
        to = self.addr(a["to"]) if "to" in a else None
        new = p.mremap(at, size, new_size, may_move=a.get("may_move", False), fixed_addr=to)
        if new == POSITIVE_EFAULT:  # 5.16/5.17: "succeeded" at 0xe, and changed nothing
            return
        self.logical.move(name, at, new, min(size, new_size), size)
        if "name" in a:
            self.regions[a["name"]] = new

    def machine_op(self, op: str, a: dict[str, Any]) -> Any:
        k = self.k
        if op == "split_huge_pages":
            return f"{k.split_huge_pages()} THPs split"
        if op == "shrink":
            return f"{k.shrink_deferred_split()} THPs split"
        if op == "end_writeback":
            return f"{k.end_writeback()} pages written"
        if op == "shrink_swapcache":
            return f"{k.shrink_swapcache()} swap-cache pages freed"
        if op == "khugepaged":
            return f"{k.khugepaged()} THPs collapsed"
        if op == "ksmd":
            return f"{k.ksmd(a.get('scans', 1))} pages merged"
        if op == "set":
            for key, value in a.items():
                if not k.policy.has_knob(key):
                    raise SyscallError("ENOENT", f"{key}: no such sysfs file on this release")
                if key == "mthp":
                    k.mthp_enabled.update(value)
                else:
                    setattr(k, "thp_enabled" if key == "thp" else key, value)
            return None
        pin = self.pins.get(a["pin"])
        if pin is None:  # its pin step failed: the handle a driver would reject
            raise SyscallError("EINVAL", f"pin {a['pin']} was never made: its pin step failed")
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

    # --- what happened ---------------------------------------------------------------------

    def describe(self, step: Step, outcome: str, result: Any, cows: int) -> Happened:
        names: dict[int, str] = {}
        for name, proc in self.procs.items():
            names.setdefault(proc.pid, name)  # proc_name's answer: the first name of the pid
        lines = Happened(self.k.cow_log, cows, names)
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
