"""The corpus: every scenario in examples/ on the kernels it lists, and what it expects to break.

The corpus is the project's knowledge of the kernels' bugs: a scenario that expects
`breaks: [pin_coherence]` on v4.5 says that loss is known there. `cowlab check` fails only on a
finding the corpus does not expect - a new bug, or a model change that made one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from cowlab.check.properties import implied_breaks
from cowlab.policy.timeline import resolve
from cowlab.scenario.loader import load_scenario
from cowlab.scenario.model import Scenario
from cowlab.scenario.runner import Runner

T = TypeVar("T")


@dataclass
class CorpusResult:
    runs: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (scenario path, kernel)
    # (kernel, property) -> the scenario that expects the property to break there
    expected: dict[tuple[str, str], str] = field(default_factory=dict)


def scenario_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.yaml"))


def expected_breaks(scenario: Scenario, kernels: list[str]) -> dict[tuple[str, str], str]:
    """(kernel, property) the scenario expects broken, for each of `kernels` (its per-kernel
    keys speak for the later kernels too, as when it runs on them)."""
    out: dict[tuple[str, str], str] = {}
    for step in scenario.steps:
        for e in step.expect:
            for kernel in kernels:
                for prop in _broken_by(e.what, e.expected_for(kernel)):
                    out.setdefault((kernel, prop), scenario.path)
    return out


def _broken_by(what: str, expected: object) -> list[str]:
    """The properties an expectation says break: `breaks:` names them; an invariant broken
    (counters, rmap) or an expected kernel BUG is `consistency` broken."""
    if what == "outcome":
        return ["consistency"] if expected == "BUG" else []
    return sorted(implied_breaks(expected)) if what == "breaks" else []


FileVerdict = tuple[int, list[tuple[str, str]], dict[tuple[str, str], str]]
CorpusTask = tuple[Path, frozenset[str], list[str]]  # run_file's arguments


def corpus_tasks(root: Path, kernels: list[str]) -> list[CorpusTask]:
    """The arguments of run_file for each scenario file under `root`, in path order."""
    policies = frozenset(resolve(k).policy_id for k in kernels)
    return [(path, policies, kernels) for path in scenario_files(root)]


def gathered(done: Iterable[FileVerdict]) -> CorpusResult:
    """The corpus's result from each file's (run_file), in path order."""
    result = CorpusResult()
    for runs, failed, expected in done:
        result.runs += runs
        result.failed += failed
        for key, where in expected.items():
            result.expected.setdefault(key, where)
    return result


def run_file(path: Path, policies: frozenset[str], kernels: list[str]) -> FileVerdict:
    """One scenario file: (runs, the kernels it failed on, what it expects broken)."""
    scenario = load_scenario(path)
    mine = [k for k in scenario.kernels if resolve(k).policy_id in policies]
    verdicts = Verdicts(scenario)
    failed = [(scenario.path, k) for k in mine if not verdicts.passes(k)]
    return len(mine), failed, expected_breaks(scenario, kernels)


class SharedRuns(Generic[T]):
    """One scenario's runs, each reduced to a result. A kernel whose policy differs from one
    already run only in attributes that run never read, and which asks under the same key (the
    corpus: what it expects of every step), takes every decision the same way and gets the same
    result without running (as the search's kernels share searches). `alone`: the only kernel
    it will be asked for, whose run no other could share: it is run as `cowlab run` runs it."""

    def __init__(self, scenario: Scenario, alone: bool = False) -> None:
        self.scenario = scenario
        self.alone = alone
        self.runs: list[tuple[str, frozenset[str], object, T]] = []

    def result(self, kernel: str, run: Callable[[Runner], T], key: object = None) -> T:
        if self.alone:
            return run(Runner(self.scenario, kernel))
        # the search's modules, imported only where runs are shared (not by a one-kernel matrix)
        from cowlab.check.search import differences, recording

        for other, read, theirs, value in self.runs:
            if theirs == key and not differences(other, kernel) & read:
                return value
        noted: set[str] = set()
        runner = Runner(self.scenario, kernel)
        runner.k.policy = recording(runner.k.policy, noted)
        value = run(runner)
        if not self.scenario.config.mthp:  # Runner() read a knob before the recording began
            self.runs.append((kernel, frozenset(noted), key, value))
        return value


class Verdicts:
    """A scenario's verdict on each kernel, shared between kernels (SharedRuns) that expect the
    same of every step."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.shared: SharedRuns[bool] = SharedRuns(scenario)

    def passes(self, kernel: str) -> bool:
        wanted = [e.expected_for(kernel) for step in self.scenario.steps for e in step.expect]
        return self.shared.result(kernel, self._run, wanted)

    def _run(self, runner: Runner) -> bool:
        return all(runner.run_step(step).passed for step in self.scenario.steps)
