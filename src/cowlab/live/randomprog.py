"""Random scenario programs over the operation alphabet, and delta debugging of disagreements.

Programs are built as plain step dictionaries (the scenario file format), so that a minimised
disagreement is written out as a scenario YAML file that `cowlab run` and `cowlab live` accept.
Regions are small: a few 2 MiB THP-aligned regions (MADV_HUGEPAGE or MADV_NOHUGEPAGE, the latter
keeping khugepaged away) and a few 4 KiB-page regions. With swap-outs in the alphabet each program
also gets a swap device (`config: swap_device`), drawn from its own stream so that the programs
themselves are the same whatever device they run on.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cowlab.scenario import Scenario, ScenarioError, parse_scenario
from cowlab.scenario.loader import OPS as LOADER_OPS

PAGE = 4096
HPAGE = 2 << 20
ALPHABET = (
    "fork", "exit", "write", "read", "mprotect", "munmap", "mremap", "madvise", "pin", "unpin",
    "dma", "swapout", "ksm", "khugepaged",
)  # fmt: skip
# a swap file is made and ksmd and khugepaged driven only with --allow-system-changes
NEEDS_SYSTEM_CHANGES = ("swapout", "ksm", "khugepaged")
MAX_PROCS = 4
# the swap device of a program with swap-outs: half of them the default swap file (so figures
# measured before the devices joined stay comparable), a sixth each a loop device (hdd, ssd), zram
SWAP_DEVICE_SHARES = {"file": 3, "hdd": 1, "ssd": 1, "zram": 1}
Step = dict[str, Any]


def pin_flavours() -> tuple[str, ...]:
    """The pin flavours the scenario loader knows (only longterm before `flavour` exists)."""
    return ("longterm", "get", "pin") if "flavour?" in LOADER_OPS["pin"] else ("longterm",)


def parse_ops(text: str | None, system_changes: bool = True) -> tuple[str, ...]:
    """--ops LIST: a comma-separated subset of the alphabet; ValueError names the unknown ones.
    Without a list, the whole alphabet, less the ops that need system changes when those are
    not allowed."""
    if not text:
        return tuple(o for o in ALPHABET if system_changes or o not in NEEDS_SYSTEM_CHANGES)
    ops = tuple(o.strip() for o in text.split(",") if o.strip())
    unknown = [o for o in ops if o not in ALPHABET]
    if unknown or not ops:
        raise ValueError(
            f"unknown op(s) {', '.join(unknown) or '(none)'}; known: {', '.join(ALPHABET)}"
        )
    return ops


def swap_device(seed: int, index: int, ops: tuple[str, ...]) -> str:
    """The swap device of program `index` of a run with `seed`: "file" unless the alphabet has
    `swapout` (which needs --allow-system-changes), else a draw by SWAP_DEVICE_SHARES from a
    stream of its own (not the programs' one), so that it depends on the seed and the index only."""
    if "swapout" not in ops:
        return "file"
    rng = random.Random(f"swap_device:{seed}:{index}")
    return rng.choices(list(SWAP_DEVICE_SHARES), list(SWAP_DEVICE_SHARES.values()))[0]


@dataclass
class _Pin:
    proc: str
    flavour: str


@dataclass
class Generator:
    """One random program: a state machine that only emits steps that make sense."""

    rng: random.Random
    ops: tuple[str, ...]
    steps: list[Step] = field(default_factory=list)
    procs: dict[str, list[str]] = field(default_factory=dict)  # process -> its regions
    sizes: dict[str, int] = field(default_factory=dict)
    pins: dict[str, _Pin] = field(default_factory=dict)
    counter: int = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def setup(self) -> None:
        """Process P with one to three regions: THP-aligned 2 MiB ones and small ones."""
        self.procs["P"] = []
        for _ in range(self.rng.randint(1, 3)):
            if self.rng.random() < 0.6:
                self.region(HPAGE, huge=self.rng.random() < 0.75)
            else:
                self.region(PAGE * self.rng.randint(1, 8), huge=False)

    def region(self, size: int, huge: bool) -> None:
        name = self.fresh("r")
        mmap: Step = {"op": "mmap", "proc": "P", "name": name, "size": size}
        # aligned (so over-mapped and trimmed) regions are never adjacent: on the live machine
        # adjacency depends on the worker's own allocations, which the model cannot know
        mmap["align"] = HPAGE if size >= HPAGE else 16 * PAGE
        self.steps.append(mmap)
        advice = "hugepage" if huge else "nohugepage"
        self.steps.append(
            {"op": "madvise", "proc": "P", "at": name, "size": size, "advice": advice}
        )
        self.procs["P"].append(name)
        self.sizes[name] = size

    # --- picking --------------------------------------------------------------------------

    def pick_proc(self) -> str:
        return self.rng.choice(sorted(self.procs))

    def pick_range(self, proc: str, max_pages: int = 4) -> tuple[str, int, int] | None:
        """(region, offset, size): a page-aligned piece of one of the process's regions."""
        if not self.procs[proc]:
            return None
        region = self.rng.choice(self.procs[proc])
        pages = self.sizes[region] // PAGE
        if self.rng.random() < 0.2:
            return region, 0, pages * PAGE
        n = self.rng.randint(1, min(max_pages, pages))
        first = self.rng.randrange(0, pages - n + 1)
        return region, first * PAGE, n * PAGE

    @staticmethod
    def at(region: str, offset: int) -> str:
        return f"{region}+{offset:#x}" if offset else region

    # --- the alphabet ------------------------------------------------------------------------

    def emit(self) -> None:
        """One random operation (or a short block of them) among the allowed ops."""
        choices: dict[str, Callable[[], bool]] = {
            "fork": self.fork, "exit": self.exit, "write": self.write, "read": self.read,
            "mprotect": self.mprotect, "munmap": self.munmap, "mremap": self.mremap,
            "madvise": self.madvise, "pin": self.pin, "unpin": self.unpin, "dma": self.dma,
            "swapout": self.swapout, "ksm": self.ksm, "khugepaged": self.khugepaged,
        }  # fmt: skip
        weights = {"write": 4, "read": 2, "fork": 2, "pin": 2, "dma": 2}
        names = list(self.ops)
        for _ in range(20):  # an op may not apply now (no pin to unpin...): pick another
            op = self.rng.choices(names, [weights.get(n, 1) for n in names])[0]
            if choices[op]():
                return

    def fork(self) -> bool:
        if len(self.procs) >= MAX_PROCS:
            return False
        parent, child = self.pick_proc(), self.fresh("C")
        self.steps.append({"op": "fork", "proc": parent, "child": child})
        self.procs[child] = list(self.procs[parent])
        return True

    def exit(self) -> bool:
        if len(self.procs) < 2:
            return False
        proc = self.rng.choice([p for p in sorted(self.procs) if p != "P"] or ["P"])
        self.steps.append({"op": "exit", "proc": proc})
        del self.procs[proc]
        return True

    def write(self) -> bool:
        proc = self.pick_proc()
        got = self.pick_range(proc)
        if got is None:
            return False
        region, off, size = got
        off += self.rng.choice([0, 0, 8, size - PAGE + 100]) if size >= PAGE else 0
        data = f"{proc}{len(self.steps)}"
        self.steps.append({"op": "write", "proc": proc, "at": self.at(region, off), "data": data})
        return True

    def read(self) -> bool:
        proc = self.pick_proc()
        got = self.pick_range(proc)
        if got is None:
            return False
        region, off, _size = got
        n = self.rng.choice([1, 8, 16])
        self.steps.append({"op": "read", "proc": proc, "at": self.at(region, off), "size": n})
        return True

    def mprotect(self) -> bool:
        proc = self.pick_proc()
        got = self.pick_range(proc)
        if got is None:
            return False
        region, off, size = got
        step = {"op": "mprotect", "proc": proc, "at": self.at(region, off), "size": size}
        self.steps.append(dict(step, prot=self.rng.choice(["r", "none"])))
        if self.rng.random() < 0.6:
            self.steps.append(dict(step, prot="rw"))  # and back: the PMD stays split
        return True

    def munmap(self) -> bool:
        proc = self.pick_proc()
        got = self.pick_range(proc)
        if got is None:
            return False
        region, off, size = got
        self.steps.append({"op": "munmap", "proc": proc, "at": self.at(region, off), "size": size})
        return True

    def mremap(self) -> bool:
        """Shrink in place, or move a region onto another one of the same size (MREMAP_FIXED)."""
        proc = self.pick_proc()
        regions = self.procs[proc]
        if not regions:
            return False
        src = self.rng.choice(regions)
        size = self.sizes[src]
        targets = [r for r in regions if r != src and self.sizes[r] == size]
        if targets and self.rng.random() < 0.5:
            name = self.fresh("m")
            step: Step = {"op": "mremap", "proc": proc, "at": src, "size": size, "new_size": size}
            step.update(to=self.rng.choice(targets), may_move=True, name=name)
            self.steps.append(step)
            self.procs[proc].append(name)
            self.sizes[name] = size
            return True
        if size <= PAGE:
            return False
        new = PAGE * self.rng.randint(1, size // PAGE - 1)
        self.steps.append({"op": "mremap", "proc": proc, "at": src, "size": size, "new_size": new})
        return True

    def madvise(self) -> bool:
        proc = self.pick_proc()
        got = self.pick_range(proc)
        if got is None:
            return False
        region, off, size = got
        advice = self.rng.choice(
            ["dontneed", "dontneed", "hugepage", "nohugepage", "dontfork", "collapse"]
        )
        step = {"op": "madvise", "proc": proc, "at": self.at(region, off), "size": size}
        self.steps.append(dict(step, advice=advice))
        return True

    def swapout(self) -> bool:
        proc = self.pick_proc()
        got = self.pick_range(proc)
        if got is None:
            return False
        region, off, size = got
        step = {"op": "swapout", "proc": proc, "at": self.at(region, off), "size": size}
        self.steps.append(dict(step, until="written"))  # what the live swap file reproduces
        return True

    def ksm(self) -> bool:
        """MADV_MERGEABLE on a range, then one or two ksmd passes (two merge identical pages)."""
        proc = self.pick_proc()
        got = self.pick_range(proc)
        if got is None:
            return False
        region, off, size = got
        step = {"op": "madvise", "proc": proc, "at": self.at(region, off), "size": size}
        self.steps.append(dict(step, advice="mergeable"))
        self.steps.append({"op": "ksmd", "scans": self.rng.choice([1, 2, 2])})
        return True

    def khugepaged(self) -> bool:
        """On a 2 MiB region: maybe a few pages written under MADV_NOHUGEPAGE (small pages), then
        MADV_HUGEPAGE on all of it, which makes them khugepaged's work; then one full khugepaged
        pass over every process."""
        proc = self.pick_proc()
        huge = [r for r in self.procs[proc] if self.sizes[r] == HPAGE]
        if huge:
            region = self.rng.choice(huge)
            step = {"op": "madvise", "proc": proc, "at": region, "size": HPAGE}
            if self.rng.random() < 0.5:  # a few small pages, written while NOHUGEPAGE
                self.steps.append(dict(step, advice="nohugepage"))
                for _ in range(self.rng.randint(1, 3)):
                    at = self.at(region, PAGE * self.rng.randrange(HPAGE // PAGE))
                    data = f"k{proc}"  # the same bytes each time: pages KSM may merge
                    self.steps.append({"op": "write", "proc": proc, "at": at, "data": data})
            self.steps.append(dict(step, advice="hugepage"))
        self.steps.append({"op": "khugepaged"})
        return True

    def pin(self) -> bool:
        proc = self.pick_proc()
        got = self.pick_range(proc)
        if got is None:
            return False
        region, off, size = got
        flavour = self.rng.choice(pin_flavours())
        name = self.fresh("pin")
        step: Step = {"op": "pin", "proc": proc, "name": name, "at": self.at(region, off)}
        step["size"] = size
        if flavour != "longterm":
            step["flavour"] = flavour
        if flavour == "get":
            step["write"] = False
        self.steps.append(step)
        self.pins[name] = _Pin(proc, flavour)
        if flavour == "pin":
            # O_DIRECT pins exist only during I/O: use it at once, then let go (see scenario.py).
            self.dma_on(name)
            self.steps.append({"op": "unpin", "pin": name})
            del self.pins[name]
        return True

    def unpin(self) -> bool:
        if not self.pins:
            return False
        name = self.rng.choice(sorted(self.pins))
        self.steps.append({"op": "unpin", "pin": name})
        del self.pins[name]
        return True

    def dma(self) -> bool:
        if not self.pins:
            return False
        self.dma_on(self.rng.choice(sorted(self.pins)))
        return True

    def dma_on(self, name: str) -> None:
        if self.pins[name].flavour != "get" and self.rng.random() < 0.6:
            self.steps.append({"op": "dma_write", "pin": name, "data": f"dev{len(self.steps)}"})
        else:
            self.steps.append({"op": "dma_read", "pin": name, "size": 8})


def generate(rng: random.Random, ops: tuple[str, ...], max_ops: int = 12) -> list[Step]:
    """A random program: setup steps, then up to max_ops operations of the alphabet."""
    gen = Generator(rng, ops)
    gen.setup()
    for _ in range(rng.randint(2, max_ops)):
        gen.emit()
    return gen.steps


# --- scenario text ----------------------------------------------------------------------------


# libyaml's emitter when PyYAML has it: for the names and steps the generator makes (names,
# numbers and short strings) it writes the same text as safe_dump, several times faster.
STEP_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def to_yaml(name: str, steps: list[Step], description: str = "", device: str = "file") -> str:
    """A scenario file: one flow-style line per step; `config: {swap_device: ...}` unless the
    device is the default swap file."""
    head = {"name": name}
    if description:
        head["description"] = description
    # a description (prose, folded at 100 columns) is written by safe_dump itself
    dumper = yaml.SafeDumper if description else STEP_DUMPER
    text = yaml.dump(head, Dumper=dumper, sort_keys=False, width=100)
    lines = [text.rstrip()]
    if device != "file":
        lines.append(f"config: {{swap_device: {device}}}")
    lines += ["processes: [P]", "steps:"]
    for step in steps:
        flow = yaml.dump(step, Dumper=STEP_DUMPER, default_flow_style=True, sort_keys=False,
                         width=10**6)  # fmt: skip
        lines.append("  - " + flow.strip())
    return "\n".join(lines) + "\n"


def to_scenario(
    name: str, steps: list[Step], path: str = "<random>", device: str = "file"
) -> Scenario | None:
    """The parsed scenario, or None when the steps no longer make a valid program."""
    try:
        return parse_scenario(to_yaml(name, steps, device=device), path)
    except ScenarioError:
        return None


def minimise(
    steps: list[Step], still_fails: Callable[[list[Step]], bool], budget: int = 60
) -> list[Step]:
    """Delta debugging (ddmin): drop chunks of steps while the program still fails."""
    runs = 0
    n = 2
    while len(steps) >= 2 and runs < budget:
        chunk = -(-len(steps) // n)
        for i in range(0, len(steps), chunk):
            candidate = steps[:i] + steps[i + chunk :]
            runs += 1
            if candidate and still_fails(candidate):
                steps = candidate
                n = max(n - 1, 2)
                break
            if runs >= budget:
                return steps
        else:
            if n >= len(steps):
                return steps
            n = min(len(steps), 2 * n)
    return steps


def write_case(
    out: Path, name: str, steps: list[Step], description: str, device: str = "file"
) -> Path:
    """Write a minimised disagreement as a scenario file; returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.yaml"
    path.write_text(to_yaml(name, steps, description, device))
    return path
