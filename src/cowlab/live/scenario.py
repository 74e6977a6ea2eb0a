"""Run a scenario's steps on the live kernel: one real worker per scenario process.

What maps to what (docs/live.md has the table): regions are wherever the live mmap puts them
(over-map and trim for ``align``); ``pin`` flavours become io_uring fixed buffers (longterm,
FOLL_PIN|FOLL_LONGTERM, held until unpin), O_DIRECT (pin: a short-term FOLL_PIN taken at the pin
step and again at each DMA) and vmsplice (get: FOLL_GET references held by pipes). Operations with
no live equivalent make the case *unsupported* with a reason; knob changes go through
SystemChanges and need ``allow_system_changes``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cowlab.errors import Segfault, SyscallError
from cowlab.kernel import Memset
from cowlab.live.driver import LiveMachine, LivePin, LiveProcess, _OdirectDevice
from cowlab.live.journal import SystemChanges
from cowlab.live.khugepaged import LIMITS as KHUGEPAGED_LIMITS
from cowlab.live.khugepaged import PASS_TIMEOUT_S as KHUGEPAGED_TIMEOUT_S
from cowlab.live.khugepaged import khugepaged_passes, model_limits, pass_reason
from cowlab.live.ksmd import PASS_TIMEOUT_S, ksm_reset, ksmd_passes, registered_with_ksm
from cowlab.live.observe import PM_PFN_MASK, PM_PRESENT, PM_SWAP, read_pagemap
from cowlab.live.swapdev import LOOP_FILE, SWAPFILE, WRITEBACK_TIMEOUT_S, wait_for_writeback
from cowlab.live.system import THP_DIR, KernelFacts, mthp_settings, read_knob
from cowlab.mm.constants import HPAGE_PMD_NR, PAGE_SIZE
from cowlab.scenario.model import Address, Scenario, ScenarioConfig, Step

if TYPE_CHECKING:
    from cowlab.kernel import Kernel

SPLIT_HUGE_PAGES = Path("/sys/kernel/debug/split_huge_pages")
PAUSE_ENV = "COWLAB_LIVE_PAUSE_AFTER_CHANGE"  # seconds to wait after each knob change (tests)
NO_LIVE_OP = {
    "numa_balance": "NUMA hinting faults cannot be triggered on demand from user space",
    "shrink": "the deferred-split shrinker runs only under real memory pressure",
    "shrink_swapcache": "swap-cache pages are reclaimed only under real memory pressure",
    # MADV_POPULATE_READ/WRITE would be its live form; not wired to the worker yet
    "touch": "a touch (populate without a load or a store) has no live form here yet",
}
# the swap area of each `config: swap_device` (cowlab.live.swapdev), and the swap-out stages
# (`until`) it reproduces
SWAP_AREA = {
    "file": f"swap file ({SWAPFILE})",
    "hdd": f"rotational loop device (over {LOOP_FILE})",
    "ssd": f"non-rotational loop device (over {LOOP_FILE})",
    "zram": "zram0 swap device",
}
SWAP_STAGES = {
    "file": ("written",),
    "hdd": ("written",),
    "ssd": ("written",),
    "zram": ("writeback", "written", "freed"),  # one pass writes and frees: all the same
}
NEEDS_KSM_KNOBS = "ksmd is driven through /sys/kernel/mm/ksm: pass --allow-system-changes"
NEEDS_KHUGEPAGED_KNOBS = (
    "a khugepaged scan is forced through /sys/kernel/mm/transparent_hugepage/khugepaged: "
    "pass --allow-system-changes"
)
# `set` keys with a live knob: thp at once, the khugepaged limits at the next khugepaged step
LIVE_SET_KEYS = ("thp", *KHUGEPAGED_LIMITS)
SHORT_PIN_OK = frozenset({"read", "write", "check", "dma_read", "dma_write", "unpin", "pin"})
FLAVOURS = ("longterm", "pin", "get")
PMD_MTHP_SIZE = f"{HPAGE_PMD_NR * PAGE_SIZE >> 10}kB"  # the model's PMD THP follows `enabled`


class Unsupported(Exception):
    """The scenario (or one of its steps) has no faithful live equivalent: not a disagreement."""


@dataclass
class StepOutcome:
    """How one step ended on one side: 'ok', an errno name, SIGSEGV, BUG; and what it returned."""

    outcome: str
    result: bytes | None = None


# --- what cannot run live, decided before anything runs ---------------------------------------


@dataclass
class Limits:
    """Caps and permissions of a live run."""

    max_bytes: int = 64 << 20
    allow_system_changes: bool = False


def unsupported_reason(scenario: Scenario, facts: KernelFacts, limits: Limits) -> str | None:
    """Why the scenario cannot run faithfully on this machine, or None."""
    checks: list[Callable[[], str | None]] = [
        lambda: _config_reason(scenario, facts, limits),
        lambda: _size_reason(scenario, limits),
        lambda: _short_pin_reason(scenario),
    ]
    for check in checks:
        reason = check()
        if reason:
            return reason
    for step in scenario.steps:
        reason = _step_reason(step, limits, scenario.config.swap_device)
        if reason:
            return f"step {step.index} ({step.op}): {reason}"
    return None


def wanted_knobs(cfg: ScenarioConfig, mthp_sizes: Iterable[str]) -> dict[str, str]:
    """The transparent_hugepage knobs (paths under THP_DIR) as the model assumes them.

    The model's PMD-sized THP follows `enabled` alone, so hugepages-2048kB must inherit it; every
    other mTHP size of this machine is as the scenario's `mthp` says, `never` by default.
    """
    asked = {f"{kb}kB": mode for kb, mode in cfg.mthp}
    want = {"enabled": cfg.thp, "use_zero_page": "1" if cfg.use_zero_page else "0"}
    for size in mthp_sizes:
        default = "inherit" if size == PMD_MTHP_SIZE else "never"
        want[f"hugepages-{size}/enabled"] = asked.get(size, default)
    return want


def _config_reason(scenario: Scenario, facts: KernelFacts, limits: Limits) -> str | None:
    cfg = scenario.config
    if not cfg.config_thp:
        return "config transparent_hugepage: false, but this kernel is built with THP"
    if not cfg.config_swap:
        return "config swap: false, but this kernel is built with CONFIG_SWAP"
    if cfg.no_page_mapcount:  # docs/live.md: /proc/config.gz, # CONFIG_NO_PAGE_MAPCOUNT is not set
        return "config no_page_mapcount: true, but this kernel is built with CONFIG_PAGE_MAPCOUNT"
    missing = [f"{kb}K" for kb, _mode in cfg.mthp if f"{kb}kB" not in facts.mthp]
    if missing:
        return f"config mthp: this kernel has no {', '.join(missing)} mTHP size (no sysfs knob)"
    have = {
        "enabled": facts.thp_enabled,
        "use_zero_page": facts.thp_use_zero_page,
        **{f"hugepages-{size}/enabled": mode for size, mode in facts.mthp.items()},
    }
    for knob, want in wanted_knobs(cfg, facts.mthp).items():
        if want != have[knob] and not limits.allow_system_changes:
            return (
                f"needs transparent_hugepage/{knob}={want} (the machine has {have[knob]}): "
                "pass --allow-system-changes"
            )
    return None


def _size_reason(scenario: Scenario, limits: Limits) -> str | None:
    """Every mmap and mremap growth counted: a scenario cannot take the machine's memory."""
    total = 0
    for step in scenario.steps:
        if step.op == "mmap":
            total += step.args["size"] + step.args.get("align", 0)
        elif step.op == "mremap":
            total += max(0, step.args.get("new_size", 0) - step.args["size"])
    if total > limits.max_bytes:
        return f"maps {total >> 20} MiB, over the cap of {limits.max_bytes >> 20} MiB (--max-mib)"
    return None


def _addresses(step: Step) -> list[Address]:
    return [v for v in step.args.values() if isinstance(v, Address)]


def _step_reason(step: Step, limits: Limits, swap_device: str) -> str | None:
    a = step.args
    if step.op in NO_LIVE_OP:
        return NO_LIVE_OP[step.op]
    if any(addr.region is None for addr in _addresses(step)):
        return "absolute addresses differ between the model and this machine"
    if step.op == "set":
        other = sorted(k for k in a if k not in LIVE_SET_KEYS)
        if other:
            return f"set {', '.join(other)} has no live knob"
        if not limits.allow_system_changes:
            return f"set {', '.join(a)} changes a system knob: pass --allow-system-changes"
    if step.op == "split_huge_pages" and not SPLIT_HUGE_PAGES.exists():
        return f"{SPLIT_HUGE_PAGES} is missing (debugfs not mounted, or no CONFIG_DEBUG_FS)"
    if step.op == "pin":
        return _pin_reason(a)
    if step.op == "swapout":
        return _swapout_reason(a, limits, swap_device)
    if step.op == "ksmd" and not limits.allow_system_changes:
        return NEEDS_KSM_KNOBS
    if step.op == "khugepaged" and not limits.allow_system_changes:
        return NEEDS_KHUGEPAGED_KNOBS
    return None


def _swapout_reason(a: dict[str, Any], limits: Limits, device: str) -> str | None:
    """A swap-out is MADV_PAGEOUT on the live swap area of the scenario's kind, then a wait for
    its writes (cowlab.live.swapdev): the model's `until: written` on the asynchronous devices;
    on zram, which writes and frees the page in the same pass, every stage after the write."""
    until, stages = a.get("until", "freed"), SWAP_STAGES[device]
    if until not in stages:
        why = (
            "zram writes synchronously, so MADV_PAGEOUT writes the page and frees it in the "
            "same pass"
            if device == "zram"
            else f"on the live {SWAP_AREA[device]} MADV_PAGEOUT leaves dirty pages in the swap "
            "cache until memory pressure frees them, and its writes cannot be stopped part-way"
        )
        shown = " or ".join(f"`until: {stage}`" for stage in stages)
        return f"until {until}: {why}; only {shown} is reproducible"
    if not limits.allow_system_changes:
        return _needs_swap(device)
    return None


def _needs_swap(device: str) -> str:
    return f"a swap-out needs a {SWAP_AREA[device]}: pass --allow-system-changes"


def _pin_reason(a: dict[str, Any]) -> str | None:
    flavour = a.get("flavour", "longterm")
    if flavour not in FLAVOURS:
        return f"unknown pin flavour {flavour!r}"
    if a.get("force", False):
        return "FOLL_FORCE pins have no user-space equivalent"
    if flavour == "longterm" and not a.get("write", True):
        return "io_uring registers long-term pins with FOLL_WRITE only (write: false)"
    return None


def _short_pin_reason(scenario: Scenario) -> str | None:
    """O_DIRECT pins exist only during each I/O: nothing may happen that a held pin would change.

    A held FOLL_PIN changes fork (the page is copied for the child), COW reuse, splitting and
    unmapping (the device keeps the old page); the live kernel cannot show those for a pin that
    is not held, so such scenarios are unsupported rather than compared.
    """
    held: dict[str, str] = {}  # short-term pin -> its process
    flavours: dict[str, str] = {}
    for step in scenario.steps:
        a = step.args
        if step.op == "pin":
            flavours[a["name"]] = a.get("flavour", "longterm")
        if step.op == "dma_write" and flavours.get(a["pin"]) == "get":
            return f"step {step.index}: a device cannot write through vmsplice references (get)"
        if held and step.op not in SHORT_PIN_OK and a.get("proc") in held.values():
            return (
                f"step {step.index} ({step.op}) while a short-term pin (flavour pin) is held: "
                "O_DIRECT pins are held only during each I/O"
            )
        if step.op == "pin" and flavours[a["name"]] == "pin":
            held[a["name"]] = a["proc"]
        elif step.op == "unpin":
            held.pop(a["pin"], None)
    return None


# --- running the steps ------------------------------------------------------------------------


@dataclass
class LiveScenario:
    """The live side of one run: scenario names bound to workers, addresses and pins."""

    machine: LiveMachine
    scenario: Scenario
    changes: SystemChanges | None = None
    procs: dict[str, LiveProcess] = field(default_factory=dict)
    regions: dict[str, int] = field(default_factory=dict)
    pins: dict[str, LivePin] = field(default_factory=dict)
    ksm_used: bool = False
    swapped: bool = False  # the case has swapped something out
    khugepaged_limits: dict[str, int] = field(default_factory=dict)
    caused: dict[str, int] = field(default_factory=dict)  # vmstat counts of forced scans

    def start(self) -> None:
        """Knobs as the scenario's config says (journalled), then its initial processes."""
        for knob, value in wanted_knobs(self.scenario.config, mthp_settings()).items():
            self.set_knob(knob, value)
        for name in self.scenario.processes:
            self.procs[name] = self.machine.spawn()

    def set_knob(self, knob: str, value: str) -> None:
        """Write a transparent_hugepage knob (a path under THP_DIR) through the journal; pause
        after it when asked."""
        path = THP_DIR / knob
        if read_knob(path) == value:
            return
        if self.changes is None:
            raise Unsupported(f"needs {path}={value}: pass --allow-system-changes")
        self.changes.set(path, value)
        pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
        if pause > 0:
            print(f"cowlab live: paused after setting {path}={value}", file=sys.stderr, flush=True)
            time.sleep(pause)

    def close(self) -> None:
        """Release every pin and end every worker of this case (the machine lives on); after
        ksmd ran, unmerge and drop its stable tree."""
        self.machine.reset()
        if self.ksm_used and self.changes is not None:
            ksm_reset(self.changes)

    def ksmd(self, scans: int) -> None:
        """ksmd makes `scans` full passes (cowlab.live.ksmd), through the journal."""
        if self.changes is None:
            raise Unsupported(
                "ksmd is driven through /sys/kernel/mm/ksm: pass --allow-system-changes"
            )
        self.ksm_used = True
        if not any(registered_with_ksm(p.pid) for p in self.procs.values()):
            return  # ksmd would not run for this case's memory (nor could it change it)
        if not ksmd_passes(self.changes, scans):
            raise Unsupported(f"a ksmd pass did not end within {PASS_TIMEOUT_S:.0f} s")

    def prepare_khugepaged(self, model: Kernel) -> None:
        """Before the model's pass: is the live one faithful (khugepaged.pass_reason), and the
        model's max_ptes_* for it."""
        reason = pass_reason(model)
        if reason:
            raise Unsupported(reason)
        self.khugepaged_limits = model_limits(model)

    def khugepaged(self) -> None:
        """Forced khugepaged passes (cowlab.live.khugepaged) with the case's fences open; the
        collapses they count in /proc/vmstat are the scenario's, not noise."""
        if self.changes is None:
            raise Unsupported(NEEDS_KHUGEPAGED_KNOBS)
        procs = [p for p in self.procs.values() if p.alive]
        before = collapse_counts()
        try:
            for p in procs:
                p.open_fence()
            ok = khugepaged_passes(self.changes, self.khugepaged_limits)
        finally:
            for p in procs:
                if p.alive:
                    p.close_fence()
        for key, value in collapse_counts().items():
            self.caused[key] = self.caused.get(key, 0) + value - before.get(key, 0)
        if not ok:
            raise Unsupported(f"a khugepaged pass did not end within {KHUGEPAGED_TIMEOUT_S:.0f} s")

    def addr(self, a: Address) -> int:
        if a.region is None:
            raise Unsupported("absolute addresses differ between the model and this machine")
        return self.regions[a.region] + a.offset

    def run_step(self, step: Step) -> StepOutcome:
        """Execute one step; program outcomes (errno, SIGSEGV) are results, not exceptions.
        Once the case has swapped something out, every CPU's folio batches are drained before
        each step: a swap-in fault frees the swap-cache copy only if no one else holds a
        reference (should_try_to_free_swap), and a batch must not be that someone."""
        if self.swapped:
            self.machine.drain_lru()
        try:
            result = self.execute(step)
        except Segfault:
            return StepOutcome("SIGSEGV")
        except SyscallError as e:
            if "worker's own memory" in str(e):
                raise Unsupported(
                    f"step {step.index}: the range touches the live worker's own memory here"
                ) from None
            return StepOutcome(e.errno)
        except KeyError as e:
            return StepOutcome(f"undefined name {e}")
        return StepOutcome("ok", result if isinstance(result, bytes) else None)

    def execute(self, step: Step) -> Any:
        a, op = step.args, step.op
        if op == "spawn":
            self.procs[a["proc"]] = self.machine.spawn()
            return None
        if op in ("unpin", "dma_write", "dma_read"):
            return self.pin_op(op, a)
        if op == "split_huge_pages":
            return self.split_huge_pages()
        if op == "end_writeback":  # swapout already waited for its writes
            return None
        if op == "ksmd":
            return self.ksmd(a.get("scans", 1))
        if op == "khugepaged":
            return self.khugepaged()
        if op == "set":  # the khugepaged limits are the model's at the next khugepaged step
            if "thp" in a:
                self.set_knob("enabled", a["thp"])
            return None
        return self.process_op(self.procs[a["proc"]], op, a)

    def process_op(self, p: LiveProcess, op: str, a: dict[str, Any]) -> Any:
        at = self.addr(a["at"]) if "at" in a else 0
        if op == "mmap":
            self.regions[a["name"]] = p.mmap(
                a["size"], a.get("prot", "rw"), align=a.get("align", 0), addr=at or None
            )
        elif op == "write":  # data, or a fill of size bytes (the range form)
            p.write(at, a["data"] if "data" in a else Memset(a["fill"], a["size"]))
        elif op == "read":
            return p.read(at, a["size"])
        elif op == "fork":
            self.procs[a["child"]] = p.fork()
        elif op == "exit":
            p.exit()
        elif op == "munmap":
            p.munmap(at, a["size"])
        elif op == "mprotect":
            p.mprotect(at, a["size"], a["prot"])
        elif op == "madvise":
            p.madvise(at, a["size"], a["advice"])
        elif op == "mremap":
            self.mremap(p, at, a)
        elif op == "pin":
            self.pins[a["name"]] = self.pin(p, at, a)
        elif op == "clear_refs":  # /proc/PID/clear_refs; a no-op for 4 without soft-dirty
            p.clear_refs(a.get("value", 4))
        elif op == "swapout":
            self.swapout(p, at, a["size"])
        return None

    def swapout(self, p: LiveProcess, at: int, size: int) -> None:
        """MADV_PAGEOUT on the range with the run's swap area of the scenario's kind made first
        (journalled), then a wait until none of the range's pages is under writeback."""
        device = self.scenario.config.swap_device
        if self.changes is None:
            raise Unsupported(_needs_swap(device))
        try:
            self.changes.enable_swap(device)
        except OSError as e:
            raise Unsupported(str(e)) from None
        pfns = present_pfns(p.pid, at, size)
        self.machine.drain_lru()
        self.swapped = True
        p.madvise(at, size, "pageout")
        if not wait_for_writeback(pfns):
            raise Unsupported(f"the swap writes did not complete in {WRITEBACK_TIMEOUT_S:.0f} s")

    def mremap(self, p: LiveProcess, at: int, a: dict[str, Any]) -> None:
        to = self.addr(a["to"]) if "to" in a else None
        size = a["size"]
        new = p.mremap(
            at, size, a.get("new_size", size), may_move=a.get("may_move", False), fixed_addr=to
        )
        if "name" in a:
            self.regions[a["name"]] = new

    def pin(self, p: LiveProcess, at: int, a: dict[str, Any]) -> LivePin:
        """The flavour's user-space equivalent (module docstring); GUP's faults happen here."""
        flavour, size, write = a.get("flavour", "longterm"), a["size"], a.get("write", True)
        p._require_alive()  # ESRCH, as the model (a SIGSEGV may have killed it)
        if flavour != "longterm" and write and not _fully_mapped(p.pid, at, size):
            # the O_DIRECT emulation writes the range out before reading it back in: a hole
            # stops the first pass, so the pages before it never take the write fault
            raise Unsupported(
                "a short-term write pin over a hole or a PROT_NONE range cannot be emulated "
                "with O_DIRECT"
            )
        if flavour != "longterm" and write and _any_swapped(p.pid, at, size):
            # the first pass swaps the pages in with read faults, where GUP's write fault would
            # (do_swap_page: should_try_to_free_swap) drop their swap-cache copies
            raise Unsupported(
                "a short-term write pin over swapped-out pages cannot be emulated with O_DIRECT "
                "(it swaps them in by read faults)"
            )
        if flavour == "longterm":
            return p.get_user_pages(at, size, write=True, pin_kind="iouring")
        if flavour == "pin":
            pin = p.get_user_pages(at, size, write=write, pin_kind="odirect")
            try:
                _gup_once(pin, write)
            except BaseException:
                pin.unpin()
                raise
            return pin
        if write:
            # FOLL_GET|FOLL_WRITE breaks COW as it takes its references; vmsplice takes read
            # references only, so a short-term write pin faults the pages first.
            once = p.get_user_pages(at, size, write=True, pin_kind="odirect")
            try:
                _gup_once(once, True)
            finally:
                once.unpin()
        return p.get_user_pages(at, size, write=False, pin_kind="vmsplice")

    def pin_op(self, op: str, a: dict[str, Any]) -> Any:
        pin = self.pins.get(a["pin"])
        if pin is None:  # as the model's runner: the handle a driver rejects
            raise SyscallError("EINVAL", f"pin {a['pin']} was never made: its pin step failed")
        if op == "unpin":
            pin.unpin()
            return None
        device = pin.device
        if isinstance(device, _OdirectDevice) and not device.proc.alive:
            # the model's pin belongs to the device and outlives its process; O_DIRECT needs it
            raise Unsupported(
                f"{op} through a short-term pin (flavour pin) whose process is gone: "
                "O_DIRECT needs the process"
            )
        if op == "dma_write":
            pin.dma_write(a.get("offset", 0), a["data"])
            return None
        return pin.dma_read(a.get("offset", 0), a["size"])

    def split_huge_pages(self) -> str:
        """debugfs split_huge_pages, PID-range form, over every region of every live worker."""
        for p in self.procs.values():
            if p.alive:
                for start in self.regions.values():
                    _write_split(p.pid, start)
        return "split requested"


def _write_split(pid: int, start: int) -> None:
    """echo PID,START,END > split_huge_pages (whole PMD-aligned span around start)."""
    lo = start & ~((2 << 20) - 1)
    try:
        SPLIT_HUGE_PAGES.write_text(f"{pid},{lo:#x},{lo + (64 << 20):#x}")
    except OSError as e:
        raise SyscallError("EIO", f"split_huge_pages: {e}") from None


def _gup_once(pin: LivePin, write: bool) -> None:
    """One short-term GUP over the pin's pages: O_DIRECT out (FOLL_PIN), and back in for write.

    Writing back what was just read leaves the bytes as they were while the kernel takes the
    same faults as get_user_pages(FOLL_WRITE) would (unshare, then break COW).
    """
    device = pin.device
    assert isinstance(device, _OdirectDevice)
    device.gup(pin.addr, pin.length, write)


def _fully_mapped(pid: int, addr: int, size: int) -> bool:
    """Whether /proc/PID/maps covers [addr, addr + size) readable and writable, without a hole."""
    end, pos = addr + size, addr
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            span, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= pos < hi and perms.startswith("rw"):
                pos = hi
            if pos >= end:
                return True
    return pos >= end


def collapse_counts() -> dict[str, int]:
    """/proc/vmstat's thp_collapse_alloc and thp_collapse_alloc_failed."""
    out = {}
    for line in Path("/proc/vmstat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key.startswith("thp_collapse_alloc"):
            out[key] = int(value)
    return out


def _any_swapped(pid: int, addr: int, size: int) -> bool:
    """Whether a page of [addr, addr + size) is a swap PTE (pagemap)."""
    first = addr - addr % PAGE_SIZE
    pages = (addr + size - first + PAGE_SIZE - 1) // PAGE_SIZE
    return bool((read_pagemap(pid, first, pages) >> np.uint64(PM_SWAP) & np.uint64(1)).any())


def present_pfns(pid: int, addr: int, size: int) -> list[int]:
    """The frames the range maps now (pagemap), to watch their writeback; none if the process
    is gone (the madvise then fails as for any op of a dead process)."""
    try:
        entries = read_pagemap(pid, addr, size // PAGE_SIZE).tolist()
    except OSError:
        return []
    return [e & PM_PFN_MASK for e in entries if e >> PM_PRESENT & 1]
