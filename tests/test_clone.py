"""The search's copy of a machine (`check/search.clone`) is the copy `copy.deepcopy` makes —
every attribute of every object it reaches, whatever the class, aliases kept as aliases — and
shares nothing that changes with the machine it was copied from.

The comparison walks both object graphs generically (every `__dict__` and `__slots__` entry,
every element), so an attribute a class gains later is compared without this test naming it:
a copy that missed one, or shared one, fails here. The states are every root of the search
and every letter of the `full` alphabet after each (swap-out, KSM, khugepaged, THP splitting
included), and two letters after the forked roots.
"""

from __future__ import annotations

import copy
import gc
from functools import cache
from typing import Any

import numpy as np
import pytest

from cowlab.check.alphabet import REGION, letters, roots, to_step
from cowlab.check.canonical import state_key
from cowlab.check.clone import release
from cowlab.check.search import Program, clone, run_program
from cowlab.kernel import OpRecord
from cowlab.mm.trace import CowCopies, CowEvent, CowSingles, Event
from cowlab.scenario.runner import Runner

KERNELS = ("v4.5", "v5.10", "v6.18")
# records the machine's logs share with its copies: never changed once logged, or once shared
# (History and CowLog say so in their __deepcopy__)
RECORDS = (OpRecord, CowEvent, CowCopies, CowSingles, Event)
FORKED_THP = "map THP, write pages 0-1, fork"
# the first letters of the two-letter programs: what only `full` has, and a pin (then DMA)
DEEPER = {"P swaps out", "C1 swaps out", "P marks mergeable", "C1 marks mergeable"}
DEEPER |= {"khugepaged", "ksmd", "split THPs", "C1 pins pages 0-1 R/W longterm"}
ATOMS = (int, float, bool, str, bytes, type(None), np.generic)


def _atomic(x: object) -> bool:
    """An atom, or a tuple of atoms: compared by value, nothing in it to share."""
    return isinstance(x, ATOMS) or (isinstance(x, tuple) and all(_atomic(y) for y in x))


def _live(runner: Runner) -> list[str]:
    return [name for name, p in runner.procs.items() if p.alive]


def _longer(kernel: str, program: Program) -> list[Program]:
    runner = run_program(kernel, program)
    return [program.then(x) for x in letters(_live(runner), list(program.pins), "full")]


@cache
def programs(kernel: str) -> list[Program]:
    """Every root, each followed by every letter of `full`; and the forked THP root followed
    by a letter of DEEPER and then by any letter (KSM's stable nodes need a merge then ksmd, a
    forked page's swap cache a swap-out then another's, a DMA a pin)."""
    starts = [Program((), ()).then(root) for root in roots()]
    out = list(starts)
    for start in starts:
        once = _longer(kernel, start)
        out += once
        if start.names[-1] == FORKED_THP:
            out += [p for q in once if q.names[-1] in DEEPER for p in _longer(kernel, q)]
    return out


class Walk:
    """A parallel walk of two object graphs: `a` (a reference) and `b` (the copy under test)."""

    def __init__(self, shared: set[int], independent_of: set[int] | None) -> None:
        self.pairs: dict[int, int] = {}  # id in a -> id in b: aliases must stay aliases
        self.keep: list[Any] = []  # what the ids name, kept alive
        self.shared = shared  # ids both graphs hold the same object of (policy, scenario)
        self.forbidden = independent_of  # ids b must not reach (the original's mutables)
        self.sets: list[tuple[str, set[Any], set[Any]]] = []

    def same(self, a: Any, b: Any, path: str) -> None:
        assert type(a) is type(b), f"{path}: {type(a).__name__} vs {type(b).__name__}"
        if isinstance(a, ATOMS):
            assert a == b, f"{path}: {a!r} vs {b!r}"
            return
        if id(a) in self.shared or (isinstance(a, RECORDS) and a is b):
            assert a is b, f"{path}: a shared object was copied"
            return
        seen = self.pairs.get(id(a))
        if seen is not None:
            assert seen == id(b), f"{path}: an alias in one is a separate object in the other"
            return
        assert id(b) not in self.pairs.values(), f"{path}: two objects became one"
        if self.forbidden is not None and id(b) in self.forbidden and type(b) is not tuple:
            raise AssertionError(f"{path}: the copy shares a mutable object with the original")
        self.pairs[id(a)] = id(b)
        self.keep += [a, b]
        self._inside(a, b, path)

    def _inside(self, a: Any, b: Any, path: str) -> None:
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape, path
            assert np.array_equal(a, b), f"{path}: arrays differ"
        elif isinstance(a, dict):
            assert len(a) == len(b), f"{path}: {len(a)} vs {len(b)} entries"
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True):
                self.same(ka, kb, f"{path} key")
                self.same(va, vb, f"{path}[{ka!r}]")
        elif isinstance(a, list | tuple):
            assert len(a) == len(b), f"{path}: length {len(a)} vs {len(b)}"
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                self.same(x, y, f"{path}[{i}]")
        elif isinstance(a, set | frozenset):
            self.sets.append((path, a, b))  # members by identity: matched once all are paired
        elif hasattr(a, "__dict__") or hasattr(type(a), "__slots__"):
            sa, sb = _state(a), _state(b)
            assert sa.keys() == sb.keys(), f"{path}: attributes {set(sa) ^ set(sb)}"
            for name, value in sa.items():
                self.same(value, sb[name], f"{path}.{name}")
        else:
            copied = copy.deepcopy(a)  # an iterator, a deque: compared by what it yields
            assert type(copied) is type(b), path

    def finish(self) -> None:
        for path, a, b in self.sets:
            assert len(a) == len(b), f"{path}: {len(a)} vs {len(b)} members"
            if all(_atomic(x) for x in a):  # KsmState.unreached: (pid, address) pairs
                assert a == b, path
                continue
            for x in a:
                y = self.pairs.get(id(x))
                assert y is not None, f"{path}: a member reached only through this set"
                assert any(id(m) == y for m in b), f"{path}: a member's copy is missing"


def _state(obj: Any) -> dict[str, Any]:
    """Every attribute of obj: its __dict__ and its slots."""
    out = dict(getattr(obj, "__dict__", {}))
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if hasattr(obj, name) and name not in ("__dict__", "__weakref__"):
                out[name] = getattr(obj, name)
    return out


def _reachable_mutables(root: Any, shared: set[int]) -> set[int]:
    """The ids of every object reachable from root that can change (not atoms, not records,
    not the shared ones)."""
    out: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if isinstance(obj, (*ATOMS, *RECORDS)) or id(obj) in shared or id(obj) in out:
            continue
        if not isinstance(obj, tuple | frozenset):  # those never change: sharing one is safe
            out.add(id(obj))
        stack += _children(obj)
    return out


def _children(obj: Any) -> list[Any]:
    """What obj holds: a container's members, an object's attributes."""
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, list | tuple | set | frozenset):
        return list(obj)
    if hasattr(obj, "__dict__") or hasattr(type(obj), "__slots__"):
        return list(_state(obj).values())
    return []


def _shared(runner: Runner) -> set[int]:
    """What a copy shares with its original: what never changes (search.clone)."""
    k = runner.k
    return {id(o) for o in (runner.scenario, k.resolved, k.policy, k.config)}


@pytest.mark.parametrize("kernel", KERNELS)
def test_clone_is_a_deepcopy_sharing_nothing_that_changes(kernel: str) -> None:
    for program in programs(kernel):
        runner = run_program(kernel, program)
        shared = _shared(runner)
        k = runner.k
        memo = {id(o): o for o in (runner.scenario, k.resolved, k.policy, k.config)}
        reference = copy.deepcopy(runner, memo)
        copied = clone(runner)
        walk = Walk(shared, _reachable_mutables(runner, shared))
        try:
            walk.same(reference, copied, "runner")
            walk.finish()
        except AssertionError as e:
            raise AssertionError(f"after {program.names}: {e}") from None


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_letter_on_the_clone_leaves_the_original_as_it_was(kernel: str) -> None:
    """Each letter run on a clone: the original's canonical key stays what it was, and the
    clone comes out as the same letter run on a fresh replay does."""
    for program in programs(kernel)[::25]:
        runner = run_program(kernel, program)
        start = runner.regions[REGION]
        before = state_key(runner, start)
        for longer in _longer(kernel, program):
            copied = clone(runner)
            for i, raw in enumerate(longer.steps[len(program.steps) :], len(program.steps)):
                copied.run_step(to_step(raw, i), judging=False)
            assert state_key(runner, start) == before, f"{longer.names} changed the original"
            replayed = run_program(kernel, longer)
            assert state_key(copied, start) == state_key(replayed, start), longer.names


def test_the_machine_holds_no_itertools_object() -> None:
    """itertools objects copy only through their own pickling protocol, deprecated for copy in
    Python 3.12 and removed in 3.14: a machine holding one (as Kernel's id counters once did)
    could not be cloned there."""
    runner = run_program("v6.18", programs("v6.18")[-1])
    seen: set[int] = set()
    stack: list[Any] = [runner]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, ATOMS):
            continue
        seen.add(id(obj))
        assert type(obj).__module__ != "itertools", type(obj)
        stack += _children(obj)


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_released_copy_is_freed_at_once_and_the_original_kept(kernel: str) -> None:
    """clone.release empties the attributes of every instance a copy made: its objects
    (cycles: a VMA and its mm, a process and its kernel) are then freed by reference counting,
    none left to the cyclic collector; and the original, which the search copies again for
    its next letter, is as it was after a letter ran on a copy that was then released (the
    objects the letter made are not the copy's: the collector still frees those)."""
    for program in programs(kernel)[::5]:
        runner = run_program(kernel, program)
        k = runner.k
        memo = {id(o): o for o in (runner.scenario, k.resolved, k.policy, k.config)}
        reference = copy.deepcopy(runner, memo)
        before = state_key(runner, runner.regions[REGION])
        made: list[dict[int, object]] = []
        copied = clone(runner, made)
        gc.collect()
        gc.disable()
        try:
            release(made.pop())
            del copied
            assert gc.collect() == 0, f"after {program.names}: a cycle left to the collector"
        finally:
            gc.enable()
        copied = clone(runner, made)
        for i, raw in enumerate(_longer(kernel, program)[0].steps[len(program.steps) :]):
            copied.run_step(to_step(raw, len(program.steps) + i), judging=False)
        release(made.pop())
        Walk(_shared(runner), None).same(reference, runner, "runner")
        assert state_key(runner, runner.regions[REGION]) == before
