"""The corpus: every scenario in examples/ on the kernels it lists, and what it expects to break.

The corpus is the project's knowledge of the kernels' bugs: a scenario that expects
`breaks: [pin_coherence]` on v4.5 says that loss is known there. `cowlab check` fails only on a
finding the corpus does not expect - a new bug, or a model change that made one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cowlab.policy.timeline import resolve
from cowlab.scenario.loader import load_scenario
from cowlab.scenario.model import Scenario
from cowlab.scenario.runner import run_scenario


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
    if what != "breaks" or not isinstance(expected, (list, tuple)):
        return []
    return [*expected, *(["consistency"] if {"counters", "rmap"} & set(expected) else [])]


def run_corpus(root: Path, kernels: list[str]) -> CorpusResult:
    """Every scenario on each kernel it lists whose policy is one of `kernels`'; what each
    expects broken on each of `kernels`."""
    result = CorpusResult()
    policies = {resolve(k).policy_id for k in kernels}
    for path in scenario_files(root):
        scenario = load_scenario(path)
        for key, where in expected_breaks(scenario, kernels).items():
            result.expected.setdefault(key, where)
        for kernel in scenario.kernels:
            if resolve(kernel).policy_id not in policies:
                continue
            result.runs += 1
            if not run_scenario(scenario, kernel).passed:
                result.failed.append((scenario.path, kernel))
    return result
