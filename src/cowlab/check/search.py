"""Exhaustive bounded search: breadth-first over the programs of the alphabet, each distinct
canonical state visited once, so the first program that breaks a property is a shortest one.

A frontier keeps programs, not machines: expanding a state replays its program once and copies
the machine for each letter but the last, which takes the replay itself (a copy,
check/clone.py, costs what a step does, and a frontier of thousands of machines would not
fit). A program whose last letter newly breaks a property is a finding (the first of its
signature, so a shortest one); its state is still expanded, for what later letters may break,
unless the kernel's own consistency broke.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from cowlab.check.alphabet import REGION, Letter, YamlStep, idle, letters, roots, to_step
from cowlab.check.canonical import state_key
from cowlab.check.clone import deep_copy
from cowlab.check.properties import PROPERTIES
from cowlab.policy.base import Policy
from cowlab.policy.timeline import resolve
from cowlab.scenario.model import Scenario, ScenarioConfig
from cowlab.scenario.runner import Runner

SCENARIO = Scenario("<search>", "cowlab check search", "", (), ScenarioConfig(), ["P"])


@dataclass(frozen=True)
class Program:
    """A program of the search: its letters' names and their steps, names filled in."""

    names: tuple[str, ...]
    steps: tuple[YamlStep, ...]
    children: int = 0  # processes forked so far (C1, C2, ...)
    pins: tuple[tuple[str, bool], ...] = ()  # live pins (name, write)
    made: int = 0  # pins taken so far (p1, p2, ...)
    broken: frozenset[str] = frozenset()  # the properties its state breaks

    def then(self, letter: Letter) -> Program:
        """This program followed by `letter`, its new names and its stored bytes filled in."""
        children, pins, made = self.children, list(self.pins), self.made
        steps = []
        tag = chr(ord("A") + len(self.names) % 26)
        for raw in letter.steps:
            step = dict(raw)
            if step.get("child") == "":
                children += 1
                step["child"] = f"C{children}"
            if step.get("name") == "" and step["op"] == "pin":
                made += 1
                step["name"] = f"p{made}"
                pins.append((step["name"], bool(step["write"])))
            if step.get("data") == "":
                step["data"] = tag
            if step["op"] == "unpin":
                pins = [p for p in pins if p[0] != step["pin"]]
            steps.append(step)
        names, all_steps = (*self.names, letter.name), (*self.steps, *steps)
        return Program(names, all_steps, children, tuple(pins), made, self.broken)


@dataclass(frozen=True)
class Finding:
    kernel: str
    prop: str
    program: Program
    problem: str  # the property's first violation
    signature: tuple[object, ...]  # what tells two findings apart (see signature())
    origin: str | None = None  # how a campaign found it; None: the bounded search


@dataclass
class Stats:
    states: int = 0  # distinct states visited
    runs: int = 0  # letters applied (edges)
    seconds: float = 0.0
    depth_states: list[int] = field(default_factory=list)  # new states per depth


@dataclass
class Outcome:
    findings: list[Finding]  # one per signature, the shortest program first found
    stats: Stats
    # every policy attribute the search read: a kernel whose policy differs from this one's
    # in none of them would take every decision of this search the same way (reuse_for)
    reads: frozenset[str] = frozenset()

    def reuse_for(self, kernel: str) -> Outcome:
        """This outcome as the search on `kernel` would have found it."""
        findings = [replace(f, kernel=kernel) for f in self.findings]
        return Outcome(findings, self.stats, self.reads)


def signature(prop: str, letter: Letter, runner: Runner) -> tuple[object, ...]:
    """The property and the decision that broke it: the last letter (without its process),
    the decisions the kernel took in it (function, verdict, rule, and each value the rule read
    as 0, 1 or more: a copy at page_mapcount 1 is another bug than one at 2), the kinds of
    pins held and how many processes live. Two programs that break a property the same way
    share it; the search keeps the shortest."""
    decisions = tuple(
        dict.fromkeys(
            (e.function, e.verdict, e.rule, tuple((n, min(int(v), 2)) for n, v in e.read))
            for e in runner.k.events
            if e.verdict
        )
    )
    pins = tuple(sorted((p.flavour, p.write) for p in runner.k.pins.values()))  # the held
    return (prop, letter.kind, decisions, pins, len(_live(runner)))


def run_program(kernel: str, program: Program, reads: set[str] | None = None) -> Runner:
    """A fresh machine after `program` (a frontier state, replayed); the names of the policy
    attributes its decisions read are added to `reads`."""
    runner = Runner(SCENARIO, kernel)
    if reads is not None:
        runner.k.policy = recording(runner.k.policy, reads)
    for i, raw in enumerate(program.steps):
        runner.run_step(to_step(raw, i), judging=False)
    return runner


def recording(policy: Policy, reads: set[str]) -> Policy:
    """The policy, noting the name of every attribute read of it (its decisions, knobs)."""

    def note(self: Policy, name: str) -> Any:
        reads.add(name)
        return object.__getattribute__(self, name)

    cls = type(policy)
    return type(cls.__name__, (cls,), {"__getattribute__": note})()


def policy_differences(a: str, b: str) -> set[str]:
    """The policy attributes two kernels' policies resolve differently: the names the rule
    changes define where the two take another definition."""
    pa, pb = resolve(a).policy, resolve(b).policy
    names = {n for change in (*pa.changes, *pb.changes) for n in vars(change)}
    names = {n for n in names if not n.startswith("_") and n != "landed"}
    return {n for n in names if getattr(pa, n, None) is not getattr(pb, n, None)}


def clone(runner: Runner) -> Runner:
    """A copy of the machine and its oracle; what never changes (the scenario, the policy,
    the build) is shared, not copied."""
    k = runner.k
    memo: dict[int, object] = {id(o): o for o in (runner.scenario, k.resolved, k.policy, k.config)}
    return deep_copy(runner, memo)


def _live(runner: Runner) -> list[str]:
    return [name for name, p in runner.procs.items() if p.alive]


def violations(runner: Runner, wanted: tuple[str, ...]) -> dict[str, str]:
    """The first violation of each wanted property that the runner's state breaks."""
    out = {}
    for name in wanted:
        problems = PROPERTIES[name].check(runner)
        if problems:
            out[name] = problems[0]
    return out


def search(
    kernel: str,
    depth: int,
    alphabet: str = "cow",
    wanted: tuple[str, ...] = tuple(PROPERTIES),
    canonical: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Outcome:
    """Every program of up to `depth` letters after the root, breadth first, on `kernel`."""
    started = time.perf_counter()
    stats = Stats()
    findings: dict[tuple[object, ...], Finding] = {}
    seen: dict[bytes, dict[str, str]] = {}  # canonical state -> what it breaks
    reads: set[str] = set()
    frontier = [Program((), ()).then(first) for first in roots()]
    for _ in range(depth):
        frontier = list(
            _expand(kernel, frontier, alphabet, wanted, canonical, seen, findings, stats, reads)
        )
        stats.depth_states.append(len(frontier))
        if progress is not None:
            progress(len(frontier))
        if not frontier:
            break
    stats.seconds = time.perf_counter() - started
    return Outcome(list(findings.values()), stats, frozenset(reads))


def _expand(
    kernel: str,
    frontier: list[Program],
    alphabet: str,
    wanted: tuple[str, ...],
    canonical: bool,
    seen: dict[bytes, dict[str, str]],
    findings: dict[tuple[object, ...], Finding],
    stats: Stats,
    reads: set[str],
) -> Iterator[Program]:
    # what a state breaks depends on the state alone, except an unnecessary copy: on the letter
    of_letter = tuple(p for p in wanted if p == "no_unnecessary_copy")
    of_state = tuple(p for p in wanted if p not in of_letter)
    for program in frontier:
        base = run_program(kernel, program, reads)
        start = base.regions[REGION]
        offered = letters(_live(base), list(program.pins), alphabet)
        options = [x for x in offered if not idle(x, base, alphabet)]
        for n, letter in enumerate(options, 1):
            longer = program.then(letter)
            runner = base if n == len(options) else clone(base)  # the last needs no copy
            runner.k.tracing = True  # the decisions of the last letter make the signature
            for i, raw in enumerate(longer.steps[len(program.steps) :], len(program.steps)):
                runner.run_step(to_step(raw, i), judging=False)
            stats.runs += 1
            key = state_key(runner, start) if canonical else None
            known = seen.get(key) if key is not None else None
            state_broken = violations(runner, of_state) if known is None else known
            broken = state_broken | violations(runner, of_letter)
            for name, problem in broken.items():
                sig = signature(name, letter, runner)
                if name not in program.broken and sig not in findings:
                    findings[sig] = Finding(kernel, name, longer, problem, sig)
            if "consistency" in broken or known is not None:
                continue  # a corrupt kernel (what follows is not the kernel's doing), or seen
            if key is not None:
                seen[key] = state_broken
            longer = replace(longer, broken=frozenset(state_broken))
            stats.states += 1
            yield longer
