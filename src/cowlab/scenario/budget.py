"""The model's memory budget: refuse a step before it makes the model outgrow the machine.

A step is estimated from what it may make the model hold — frames, page tables, pin records,
page contents, the no-leak oracle's copies — at per-page costs measured on this implementation
(the constants below), rounded up. The estimate is deliberately pessimistic: a THP-eligible
range is charged whole 2 MiB blocks.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from cowlab.mm.constants import HPAGE_PMD_SIZE, PAGE_SIZE
from cowlab.mm.huge_memory import transparent_hugepage_enabled

if TYPE_CHECKING:
    from cowlab.scenario.model import Step
    from cowlab.scenario.runner import Runner

# measured: 140-180 bytes per page in a THP (write, pin), 710 per small page written
PER_THP_PAGE = 256
PER_SMALL_PAGE = 1024
PER_PIN_PAGE = 64
PER_PTE = 16
PER_OWED_PAGE = 128  # the no-leak oracle's entry for a page a fill stores (the page is shared)
FAULTING_OPS = ("write", "read", "touch", "pin")


def memory_available() -> int:
    """MemAvailable of /proc/meminfo, in bytes (the whole RAM if the kernel does not say)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resident() -> int:
    """This process's resident set, in bytes: statm read again through a descriptor kept
    open (procfs makes its text at each read; opening it took 10x the read, at every step of
    a search), opened again in a forked child (the parent's names the parent)."""
    global _statm
    try:
        if _statm is None or _statm[0] != os.getpid():
            _statm = (os.getpid(), os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC))
        return int(os.pread(_statm[1], 128, 0).split()[1]) * PAGE_SIZE
    except OSError:
        return 0


_statm: tuple[int, int] | None = None  # (pid, descriptor of its /proc/self/statm)


_configured: int | None = None  # --max-memory: a property of the machine, so process-wide


def set_limit(max_bytes: int | None) -> None:
    global _configured
    _configured = max_bytes


def limit() -> int:
    """What a run may grow to: --max-memory, or what the process holds now plus 80 % of the
    machine's available memory."""
    return _configured if _configured is not None else resident() + memory_available() * 4 // 5


def check_step(runner: Runner, step: Step, max_bytes: int) -> None:
    """Refuse, as a located scenario error, a step the model cannot afford."""
    need = step_cost(runner, step)
    if need and resident() + need > max_bytes:
        from cowlab.scenario.loader import ScenarioError

        raise ScenarioError(
            runner.scenario.path,
            step.loc,
            f"step {step.index} ({step.describe()}) may need {_gib(need)} more memory, and the "
            f"model may use {_gib(max_bytes)} (--max-memory; default 80% of available memory)",
        )


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def step_cost(runner: Runner, step: Step) -> int:
    """Bytes the model may newly hold after this step (an upper estimate)."""
    a: dict[str, Any] = step.args
    if step.op in FAULTING_OPS and a.get("proc") in runner.procs and "at" in a:
        size = len(a["data"]) if "data" in a else int(a.get("size", 0))
        cost = _fault_cost(runner, a["proc"], runner.addr(a["at"]), size)
        if "data" in a:
            cost += 2 * size  # the page contents and the oracle's copy
        elif "fill" in a:  # whole pages share one content (the oracle's too), 2 partial ones
            cost += 3 * PAGE_SIZE + PER_OWED_PAGE * (size // PAGE_SIZE + 2)
        if step.op == "pin":
            cost += PER_PIN_PAGE * (size // PAGE_SIZE + 1)
        return cost
    if step.op == "dma_write":
        return 2 * len(a["data"])
    if step.op == "fork" and a.get("proc") in runner.procs:
        mm = runner.procs[a["proc"]].mm
        return PER_PTE * mm.anon_rss + (PER_SMALL_PAGE * mm.anon_rss if mm.has_pinned else 0)
    return 0


def _fault_cost(runner: Runner, proc: str, addr: int, size: int) -> int:
    p = runner.procs[proc]
    if not p.alive or size <= 0:
        return 0
    vma = p.mm.find_vma(addr)
    if vma is not None and transparent_hugepage_enabled(runner.k, vma):
        first = addr // HPAGE_PMD_SIZE * HPAGE_PMD_SIZE
        span = -(-(addr + size) // HPAGE_PMD_SIZE) * HPAGE_PMD_SIZE - first
        return span // PAGE_SIZE * PER_THP_PAGE
    return (size // PAGE_SIZE + 1) * PER_SMALL_PAGE
