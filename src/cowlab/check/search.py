"""Exhaustive bounded search: breadth-first over the programs of the alphabet, each distinct
canonical state visited once, so the first program that breaks a property is a shortest one.

A frontier keeps programs, not machines: expanding a state replays its program once and copies
the machine for each letter but the last, which takes the replay itself (a copy,
check/clone.py, costs what a step does, and a frontier of thousands of machines would not
fit). A program whose last letter newly breaks a property is a finding (the first of its
signature, so a shortest one); its state is still expanded, for what later letters may break,
unless the kernel's own consistency broke.

Several kernels are searched together (search_kernels): a frontier program carries the kernels
that reached a new state by it, and each letter runs once for all of them that decide it alike;
kernels that ran a letter apart but reached one canonical state by it go on together.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from functools import cache, partial
from typing import Any, TypeVar

from cowlab.check.alphabet import (
    REGION,
    Letter,
    YamlStep,
    idle,
    letters,
    root_parts,
    roots,
    scans_by_pid,
    to_step,
)
from cowlab.check.canonical import state_key
from cowlab.check.clone import deep_copy, release
from cowlab.check.patch import Patch, register
from cowlab.check.properties import PROPERTIES
from cowlab.policy.base import Policy
from cowlab.policy.timeline import resolve
from cowlab.scenario.model import Scenario, ScenarioConfig
from cowlab.scenario.runner import Runner

T = TypeVar("T")
Keyed = Callable[[Runner, int], bytes]  # a machine's canonical state (check/canonical.py)
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
    runs: int = 0  # letters applied (edges): as its own search would, a shared run counted
    # wall seconds of the searches that made it: a joint search's, the same for its kernels
    seconds: float = 0.0
    depth_states: list[int] = field(default_factory=list)  # new states per depth
    # programs per depth a search without canonical states would visit (count_programs)
    programs: list[int] = field(default_factory=list)


@dataclass
class Outcome:
    findings: list[Finding]  # one per signature, the shortest program first found
    stats: Stats


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


def run_program(kernel: str | Driver, program: Program) -> Runner:
    """A fresh machine after `program` (a frontier state, replayed), on a kernel or with a
    kernel's driver in a joint search (its policy noting what the program reads)."""
    track = kernel if isinstance(kernel, Driver) else None
    runner = Runner(SCENARIO, track.kernel if track else str(kernel))
    if track is not None:
        track.takes(runner)
    for i, raw in enumerate(program.steps):
        runner.run_step(to_step(raw, i), judging=False)
    return runner


def recording(policy: Policy, reads: set[str]) -> Policy:
    """The policy, noting in `reads` the name of each attribute read of it since it was made
    or last emptied by `listen` (its decisions, knobs); a name it lacks is noted as it fails."""
    noting = _noting(type(policy))()
    noting._reads = reads  # type: ignore[attr-defined]
    return noting


def listen(policy: Policy, reads: set[str]) -> None:
    """Empty a recording policy's `reads`, and forget the values it kept (each name is noted
    again at its next read)."""
    reads.clear()
    vars(policy).clear()


class _Noted:
    """A public attribute of a recording policy class. Its first read of an instance notes the
    name and keeps the value in the instance's __dict__, which later reads find first (a
    descriptor without __set__ yields to it): each name costs one call, not one per read (a
    policy is stateless: its attributes are its class's). Only a public name can differ between
    two policies (differing), so private and special ones are read as usual."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.owner, self.name = owner, name

    def __get__(self, policy: Any, owner: type | None = None) -> Any:
        value = getattr(super(self.owner, owner if policy is None else policy), self.name)
        if policy is not None:
            policy._reads.add(self.name)
            vars(policy)[self.name] = value
        return value


def _missing(policy: Any, name: str) -> Any:
    """A name the policy lacks: noted (another policy may define it), then not found."""
    if not name.startswith("_"):
        policy._reads.add(name)
    raise AttributeError(f"{type(policy).__name__!r} object has no attribute {name!r}")


@cache
def _noting(cls: type[Policy]) -> type[Policy]:
    """The recording class of a policy class: a _Noted per public name it has."""
    attrs: dict[str, Any] = {n: _Noted() for n in dir(cls) if not n.startswith("_")}
    attrs |= {"__slots__": ("_reads",), "__getattr__": _missing}
    return type(cls.__name__, (cls,), attrs)


def policy_differences(a: str, b: str) -> set[str]:
    """The policy attributes two kernels' policies resolve differently: the names the rule
    changes define where the two take another definition or stand on other ones."""
    return differing(resolve(a).policy, resolve(b).policy)


def differing(pa: Any, pb: Any) -> set[str]:
    """policy_differences of two policy classes."""
    names = {n for change in (*pa.changes, *pb.changes) for n in vars(change)}
    names = {n for n in names if not n.startswith("_") and n != "landed"}
    out = {n for n in names if not _same_chain(definitions(pa, n), definitions(pb, n))}
    if _knobs(pa) != _knobs(pb):  # has_knob() reads every change's new_knobs, not the top one
        out.add("has_knob")
    return out


@cache
def _knobs(policy: Any) -> frozenset[str]:
    """The sysfs knobs the policy's changes add (what its has_knob() looks through)."""
    return frozenset().union(*(getattr(c, "new_knobs", ()) for c in policy.changes))


@cache  # a policy class does not change; `differences` of 49 x 49 kernels asks 58,000 times
def definitions(policy: type, name: str) -> tuple[object, ...]:
    """The definition of `name` in force, and behind it each one a super() call reaches: a
    method that calls super() decides with the older rule too (a stable policy puts a later
    change on an older base, so one top definition can stand on different ones)."""
    chain: list[object] = []
    for c in policy.__mro__:
        if name in vars(c):
            chain.append(vars(c)[name])
            if not _calls_super(vars(c)[name]):
                break
    return tuple(chain)


def _calls_super(definition: object) -> bool:
    """A function whose body uses zero-argument super() (the compiler gives it a __class__
    cell); a classmethod or staticmethod by the function it wraps, a patch's checked method
    (check.patch._checked) by the patch's own."""
    function = getattr(definition, "__func__", definition)
    code = getattr(inspect.unwrap(function) if callable(function) else function, "__code__", None)
    return code is not None and "__class__" in code.co_freevars


def _same_chain(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


@cache
def differences(a: str, b: str) -> frozenset[str]:
    """policy_differences, once per pair (the joint search asks at every letter)."""
    return frozenset(policy_differences(a, b))


def clone(runner: Runner, made: list[dict[int, object]] | None = None) -> Runner:
    """A copy of the machine and its oracle; what never changes (the scenario, the policy,
    the build) is shared, not copied. `made`: gets the copy's memo, for clone.release once
    the copy is used no more."""
    k = runner.k
    memo: dict[int, object] = {id(o): o for o in (runner.scenario, k.resolved, k.policy, k.config)}
    if made is not None:
        made.append(memo)
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
    progress: Callable[[int], object] | None = None,
    count_programs: bool = False,
) -> Outcome:
    """Every program of up to `depth` letters after the root, breadth first, on `kernel`."""
    return search_kernels(
        [kernel], depth, alphabet, wanted, canonical, progress, count_programs=count_programs
    )[kernel]


class Driver:
    """A kernel's policy for a machine that several kernels share, noting the name of each of
    its attributes read since `listen`."""

    def __init__(self, kernel: str) -> None:
        self.kernel = kernel
        self.resolved = resolve(kernel)
        self.reads: set[str] = set()
        self.policy = recording(self.resolved.policy(), self.reads)

    def listen(self) -> None:
        """Note the attributes read from now on only."""
        listen(self.policy, self.reads)

    def takes(self, runner: Runner) -> Runner:
        """The machine, driven by this kernel's policy from now on."""
        runner.kernel_id = runner.k.kernel_id = self.kernel
        runner.k.resolved, runner.k.policy = self.resolved, self.policy
        return runner

    def agrees(self, kernel: str) -> bool:
        """Whether `kernel`'s policy has the attributes read since `listen` as
        this one's: a run that read only those, it runs the same way (the model is
        deterministic, and the policy is all a machine knows of its kernel)."""
        return not differences(self.kernel, kernel) & self.reads


class Track(Driver):
    """One kernel's search within a joint one: what it has seen and found."""

    def __init__(self, kernel: str, graph: bool = False) -> None:
        super().__init__(kernel)
        self.seen: dict[bytes, dict[str, str]] = {}  # canonical state -> what it breaks
        self.findings: dict[tuple[object, ...], Finding] = {}
        self.stats = Stats()
        self.graph = Graph() if graph else None

    def outcome(self) -> Outcome:
        return Outcome(list(self.findings.values()), self.stats)


@dataclass(frozen=True)
class Node:
    """A program of the joint frontier and the kernels whose searches reached a new state by it
    (one state: every letter on the way read only attributes their policies agree on)."""

    program: Program
    kernels: tuple[str, ...]
    key: object = None  # its canonical state


class Graph:
    """The canonical states of one kernel's search and its letters' runs between them, but
    those that broke `consistency` (no program goes on from there): what a search without
    canonical states would visit follows from it (programs)."""

    def __init__(self) -> None:
        self.ids: dict[object, int] = {}
        self.roots: list[int] = []
        self.edges: dict[int, list[int]] = {}
        self.pending: list[int] = []  # the successors of the state being expanded

    def id(self, key: object) -> int:
        return self.ids.setdefault(key, len(self.ids))

    def expanded(self, key: object) -> None:
        """The pending successors are those of `key`'s state; a state expanded again has them
        already (a root's: the roots are not among the states seen)."""
        self.edges.setdefault(self.id(key), self.pending)
        self.pending = []

    def programs(self, depth: int) -> list[int]:
        """The programs of each depth, 1 to `depth`: the walks of that many letters from a
        root. A program's state decides every letter after it (what the canonical search rests
        on), so the programs after one equal those after any other reaching its state. Exact
        to the depth the search went: the states a walk passes before its last letter were
        all expanded."""
        ending: Counter[int] = Counter(self.roots)  # state -> programs ending there
        out = []
        for _ in range(depth):
            after: Counter[int] = Counter()
            for state, n in ending.items():
                for successor in self.edges.get(state, ()):
                    after[successor] += n
            out.append(sum(after.values()))
            ending = after
        return out


def search_kernels(
    kernels: list[str],
    depth: int,
    alphabet: str = "cow",
    wanted: tuple[str, ...] = tuple(PROPERTIES),
    canonical: bool = True,
    progress: Callable[[int], object] | None = None,
    part: int | None = None,
    count_programs: bool = False,
    pool: Executor | None = None,
    workers: int = 1,
    patch: Patch | None = None,
) -> dict[str, Outcome]:
    """The search of each of `kernels`, made together: each kernel's outcome is the one its
    own search has (the same states in the same order, the same findings). A letter runs once
    for all the kernels at a state whose policies agree with the first's on every attribute the
    letter (and the properties judged after it) read: the model is deterministic, and the
    policy is all a machine knows of its kernel. Kernels that disagree run it on their own.
    `part`: only from that part's roots (alphabet.root_parts; `merged` joins the parts).
    `progress` is told each depth's new nodes when the depth is done; a true answer ends the
    search there. `count_programs` (with canonical states): each kernel's stats.programs, from
    its Graph. `pool`: the frontier's programs expanded by its `workers` (processes, or a Dask
    client's executor), the runs judged here in the frontier's order: the same outcome; a
    worker learns a --policy `patch` (one of the kernels) from it."""
    started = time.perf_counter()
    graph = count_programs and canonical
    tracks = {k: Track(k, graph) for k in dict.fromkeys(kernels)}
    firsts = roots() if part is None else root_parts()[part]
    keyed = _keyed(alphabet, canonical)
    frontier = [node for first in firsts for node in _root(first, tracks, keyed)]
    if pool is None:
        seen = {k: t.seen for k, t in tracks.items()}
        expanded = _local(Expander(tracks, alphabet, wanted, keyed, seen, remember=False))
    else:
        expanded = _in_pool(pool, workers, (tuple(tracks), alphabet, wanted, canonical), patch)
    for _ in range(depth):
        frontier = list(_expand(frontier, tracks, expanded))
        for track in tracks.values():
            track.stats.depth_states.append(sum(track.kernel in n.kernels for n in frontier))
        stop = progress is not None and progress(len(frontier))
        if stop or not frontier:
            break
    for track in tracks.values():
        track.stats.seconds = time.perf_counter() - started
        if track.graph is not None:
            track.stats.programs = track.graph.programs(len(track.stats.depth_states))
    return {k: track.outcome() for k, track in tracks.items()}


def _keyed(alphabet: str, canonical: bool) -> Keyed | None:
    return partial(state_key, scans=scans_by_pid(alphabet)) if canonical else None


# a frontier's nodes, each with its letters' longer programs and runs (Expander.expand)
Expanded = Callable[[list["Node"]], Iterator[tuple["Node", Iterable[tuple[Program, list["Ran"]]]]]]
Spec = tuple[tuple[str, ...], str, tuple[str, ...], bool]  # kernels, alphabet, wanted, canonical
Judged = tuple[dict[str, str], dict[str, str]]  # a run's state properties, its letter's


def _local(expander: Expander) -> Expanded:
    """Each node expanded here, a letter's runs judged before the next letter runs (so a state
    the letter before reached is known, its properties not judged again)."""

    def expanded(
        frontier: list[Node],
    ) -> Iterator[tuple[Node, Iterable[tuple[Program, list[Ran]]]]]:
        for node in frontier:
            yield node, expander.expand(node.program, node.kernels)

    return expanded


def _in_pool(pool: Executor, workers: int, spec: Spec, patch: Patch | None) -> Expanded:
    """The frontier in chunks, each expanded by a worker (expand_chunk), at most two a worker
    in flight, the results taken in the frontier's order."""

    def expanded(
        frontier: list[Node],
    ) -> Iterator[tuple[Node, Iterable[tuple[Program, list[Ran]]]]]:
        size = max(1, min(CHUNK, len(frontier) // (8 * workers)))
        chunks = [frontier[i : i + size] for i in range(0, len(frontier), size)]
        flight: deque[Future[list[list[tuple[Program, list[Ran]]]]]] = deque()
        ahead = iter(chunks)
        for chunk in chunks:
            while len(flight) < 2 * workers and (more := next(ahead, None)) is not None:
                flight.append(
                    pool.submit(expand_chunk, spec, [(n.program, n.kernels) for n in more], patch)
                )
            yield from zip(chunk, flight.popleft().result(), strict=True)

    return expanded


CHUNK = 64  # frontier nodes a worker expands at once, at most
# a worker's expander of the search it serves (one: a long-lived Dask worker keeps no more);
# its memory of states' properties emptied past KNOWN_CAP states (~1 KiB each)
_EXPANDERS: dict[tuple[Spec, Patch | None], Expander] = {}
KNOWN_CAP = 400_000
# a Dask worker runs tasks in threads: an Expander's drivers note what each run reads (listen
# empties them), so two chunks at once would agree on each other's reads; one at a time
_EXPANDING = threading.Lock()


def expand_chunk(
    spec: Spec, nodes: list[tuple[Program, tuple[str, ...]]], patch: Patch | None = None
) -> list[list[tuple[Program, list[Ran]]]]:
    """In a worker: each node's expansion (its program and kernels), what the state properties
    it computes remembered for the next chunks of the same search."""
    with _EXPANDING:
        return _expand_chunk(spec, nodes, patch)


def _expand_chunk(
    spec: Spec, nodes: list[tuple[Program, tuple[str, ...]]], patch: Patch | None
) -> list[list[tuple[Program, list[Ran]]]]:
    expander = _EXPANDERS.get((spec, patch))  # an edited patch is another search
    if expander is None:
        if patch is not None:  # a Dask worker is no fork of the process that loaded it
            register(patch)
        _EXPANDERS.clear()
        kernels, alphabet, wanted, canonical = spec
        drivers: dict[str, Driver] = {k: Driver(k) for k in kernels}
        known: dict[str, dict[bytes, dict[str, str]]] = {k: {} for k in kernels}
        keyed = _keyed(alphabet, canonical)
        expander = _EXPANDERS[spec, patch] = Expander(drivers, alphabet, wanted, keyed, known, True)
    if sum(map(len, expander.known.values())) > KNOWN_CAP:
        for states in expander.known.values():
            states.clear()
    return [list(expander.expand(program, kernels)) for program, kernels in nodes]


def merged(parts: list[Outcome]) -> Outcome:
    """One kernel's searches from each part of the roots, in their order, as the search from
    all roots: no state of one part is one of another's (alphabet.root_parts), so the states
    and the programs add up; the findings come breadth first, within a depth in the parts'
    order, and the first of each signature is kept (what the search from all roots finds
    first)."""
    stats = Stats()
    for outcome in parts:
        stats.states += outcome.stats.states
        stats.runs += outcome.stats.runs
        stats.seconds += outcome.stats.seconds
        _add(stats.depth_states, outcome.stats.depth_states)
        _add(stats.programs, outcome.stats.programs)  # walks from its roots (count_programs)
    ordered = sorted(
        ((len(f.program.names), i, f) for i, o in enumerate(parts) for f in o.findings),
        key=lambda item: item[:2],
    )
    findings: dict[tuple[object, ...], Finding] = {}
    for _depth, _part, finding in ordered:
        findings.setdefault(finding.signature, finding)
    return Outcome(list(findings.values()), stats)


def _add(into: list[int], more: list[int]) -> None:
    """Per depth: `more`'s counts added to `into`'s, as deep as the deeper."""
    into += [0] * (len(more) - len(into))
    for i, n in enumerate(more):
        into[i] += n


def _root(first: Letter, tracks: dict[str, Track], keyed: Keyed | None) -> Iterator[Node]:
    """The program of a root letter, for each set of kernels that reach one state by it."""
    program = Program((), ()).then(first)
    runs = _shared(tuple(tracks), tracks, lambda t, _: run_program(t, program))
    met: dict[object, list[str]] = {}
    for n, (kernels, runner) in enumerate(runs):
        state = n if keyed is None else keyed(runner, runner.regions[REGION])
        met.setdefault(state, []).extend(kernels)
    for key, on in met.items():
        node = Node(program, _in_order(on, tuple(tracks)), key)
        for kernel in on:
            if (graph := tracks[kernel].graph) is not None:
                graph.roots.append(graph.id(node.key))
        yield node


def _in_order(kernels: list[str], order: tuple[str, ...]) -> tuple[str, ...]:
    """Kernels that met at one state, in the order of the node they came from."""
    return tuple(k for k in order if k in kernels)


class Expander:
    """The machine side of a search: runs each letter after a node's program, keys and judges
    the states it reaches, and reports them as Ran records, which hold no machine (a worker of
    a parallel search sends them back). `known`, per kernel: the state properties already
    computed of a canonical state (a kernel's `seen` in one process; a worker's own memory,
    `remember`, where the `seen` are the parent's)."""

    def __init__(
        self,
        drivers: Mapping[str, Driver],
        alphabet: str,
        wanted: tuple[str, ...],
        keyed: Keyed | None,
        known: dict[str, dict[bytes, dict[str, str]]],
        remember: bool,
    ) -> None:
        self.drivers, self.alphabet, self.keyed = drivers, alphabet, keyed
        self.known, self.remember = known, remember
        # what a state breaks depends on the state alone, but an unnecessary copy: the letter
        self.of_letter = tuple(p for p in wanted if p == "no_unnecessary_copy")
        self.of_state = tuple(p for p in wanted if p not in self.of_letter)

    def expand(
        self, program: Program, kernels: tuple[str, ...]
    ) -> Iterator[tuple[Program, list[Ran]]]:
        """Each letter the program may take next, as the longer program and its runs."""
        base = run_program(self.drivers[kernels[0]], program)
        offered = letters(_live(base), list(program.pins), self.alphabet)
        options = [x for x in offered if not idle(x, base, self.alphabet)]  # reads no policy
        for n, letter in enumerate(options, 1):
            yield program.then(letter), self.runs(program, kernels, letter, base, n == len(options))

    def runs(
        self, program: Program, kernels: tuple[str, ...], letter: Letter, base: Runner, last: bool
    ) -> list[Ran]:
        """`letter` after the program's state (`base`), once for each set of kernels whose
        policies agree on all it read (_shared)."""
        longer = program.then(letter)
        copies: list[dict[int, object]] = []  # released once the letter is judged

        def run(driver: Driver, left: list[str]) -> tuple[Runner, bytes | None, Judged]:
            alone = last and len(kernels) == 1  # the last run needs no copy
            runner = driver.takes(base if alone else clone(base, copies))
            runner.k.tracing = True  # the decisions of the last letter make the signature
            for i, raw in enumerate(longer.steps[len(program.steps) :], len(program.steps)):
                runner.run_step(to_step(raw, i), judging=False)
            key = self.keyed(runner, base.regions[REGION]) if self.keyed else None
            new = key is None or any(key not in self.known[k] for k in left)
            # judged here, before _shared asks who agrees: what they read counts too
            state = violations(runner, self.of_state) if new else {}
            return runner, key, (state, violations(runner, self.of_letter))

        out = []
        for agree, (runner, key, (state, of_letter)) in _shared(kernels, self.drivers, run):
            states = {k: self._state(k, key, state) for k in agree}
            names = {n for v in (*states.values(), of_letter) for n in v} - longer.broken
            signed = {n: signature(n, letter, runner) for n in names}
            out.append(Ran(tuple(agree), key, states, of_letter, signed))
        for memo in copies:  # what the records keep holds no object of a machine
            release(memo)
        return out

    def _state(self, kernel: str, key: bytes | None, computed: dict[str, str]) -> dict[str, str]:
        """What the state breaks for `kernel`: computed by this run (shared by the kernels that
        agree on all it read) unless the kernel knew it already."""
        if key is None:
            return computed
        known = self.known[kernel].get(key)
        if known is not None:
            return known
        if self.remember:
            self.known[kernel][key] = computed
        return computed


@dataclass(frozen=True)
class Ran:
    """A letter's run for the kernels that took it alike: its canonical key, what the state
    breaks for each of them, what the letter breaks, and the signature of each property the
    program had not broken before it."""

    kernels: tuple[str, ...]
    key: bytes | None
    states: dict[str, dict[str, str]]
    letter: dict[str, str]
    signatures: dict[str, tuple[object, ...]]


def _expand(frontier: list[Node], tracks: dict[str, Track], expanded: Expanded) -> Iterator[Node]:
    """The nodes the frontier's letters reach, judged in the frontier's order."""
    for node, runs in expanded(frontier):
        for longer, rans in runs:
            yield from _judged(node, longer, rans, tracks)
        for kernel in node.kernels:
            if (graph := tracks[kernel].graph) is not None:
                graph.expanded(node.key)


def _judged(
    node: Node, longer: Program, rans: list[Ran], tracks: dict[str, Track]
) -> Iterator[Node]:
    """A letter's runs after the node, judged by each of its kernels. Kernels that ran it apart
    (their policies define something it read otherwise) but reached one canonical state go on
    as one node: a state's key holds all that any later letter reads, so each kernel's search
    from there is the one it would make from its own machine, and each still meets the program
    in its own search's place (the nodes of one letter hold no kernel twice)."""
    # state -> what it breaks, the kernels, its key
    met: dict[object, tuple[frozenset[str], list[str], bytes | None]] = {}
    for n, ran in enumerate(rans):
        for kernel in ran.kernels:
            if _judge(tracks[kernel], ran, longer):
                broken = frozenset(ran.states[kernel])
                state = n if ran.key is None else (ran.key, broken)
                met.setdefault(state, (broken, [], ran.key))[1].append(kernel)
    for broken, on, key in met.values():
        yield Node(replace(longer, broken=broken), _in_order(on, node.kernels), key)


def _shared(
    kernels: tuple[str, ...], drivers: Mapping[str, Driver], run: Callable[[Driver, list[str]], T]
) -> Iterator[tuple[list[str], T]]:
    """run(driver, kernels left) on the first kernel not served yet, its result taken by every
    other that agrees with it on each policy attribute the run read; until none is left. The
    last kernel left agrees with itself whatever the run read: its reads are not noted (the
    values its policy keeps from earlier runs are its class's: a policy has no state)."""
    left = list(kernels)
    while left:
        driver = drivers[left[0]]
        if len(left) > 1:
            driver.listen()
        result = run(driver, left)
        agree = [k for k in left if driver.agrees(k)]
        left = [k for k in left if k not in agree]
        yield agree, result


def _judge(track: Track, ran: Ran, longer: Program) -> bool:
    """The kernel's account of a letter's run: its findings, whether its search goes on from
    there (a state it had not seen, and not a corrupt kernel: what follows is not its doing)."""
    track.stats.runs += 1
    state = ran.states[track.kernel]
    broken = state | ran.letter
    for name, problem in broken.items():
        if name not in longer.broken and ran.signatures[name] not in track.findings:
            sig = ran.signatures[name]
            track.findings[sig] = Finding(track.kernel, name, longer, problem, sig)
    if "consistency" in broken:
        return False
    if track.graph is not None:
        track.graph.pending.append(track.graph.id(ran.key))
    if ran.key is not None:
        if ran.key in track.seen:
            return False
        track.seen[ran.key] = state
    track.stats.states += 1
    return True
