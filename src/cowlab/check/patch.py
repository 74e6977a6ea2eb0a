"""A proposed patch as a policy: `--policy FILE.py:NAME --base 6.18` loads the user's Policy
subclass NAME (the decisions the patch changes) and puts it on top of the base release's
policy, as a rule change of the timeline would be; the result answers to the kernel id
`BASE+NAME` in this process (and in every worker, which registers it again)."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

from cowlab.policy.base import Policy
from cowlab.policy.history import Landed
from cowlab.policy.timeline import PATCHED, Resolved, compose, resolve
from cowlab.scenario.model import Scenario
from cowlab.scenario.runner import run_scenario


class PatchError(Exception):
    """A --policy that cannot be loaded: one line."""


@dataclass(frozen=True)
class Patch:
    spec: str  # FILE.py:NAME
    base: str  # the --base kernel


def load_change(spec: str) -> type[Policy]:
    """The Policy subclass NAME defined in FILE.py."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not name:
        raise PatchError(f"--policy {spec}: expected FILE.py:NAME")
    if not Path(path).is_file():
        raise PatchError(f"--policy {spec}: no file {path}")
    module_name = f"cowlab_patch_{Path(path).stem}"
    loader = importlib.util.spec_from_file_location(module_name, path)
    if loader is None or loader.loader is None:
        raise PatchError(f"--policy {spec}: cannot load {path}")
    module = importlib.util.module_from_spec(loader)
    sys.modules[module_name] = module
    try:
        loader.loader.exec_module(module)
    except Exception as e:  # the user's code: any error is theirs, said in one line
        raise PatchError(f"--policy {spec}: {path} raised {type(e).__name__}: {e}") from None
    change = getattr(module, name, None)
    if not inspect.isclass(change) or not issubclass(change, Policy):
        raise PatchError(f"--policy {spec}: expected {name} to be a subclass of Policy")
    return change


def register(patch: Patch) -> str:
    """Make the patched policy answer to BASE+NAME here; return that id."""
    change = load_change(patch.spec)
    base = resolve(patch.base)
    kernel = f"{base.policy_id}+{change.__name__}"
    if kernel not in PATCHED:
        what = inspect.getdoc(change) or inspect.getdoc(sys.modules[change.__module__]) or ""
        change.landed = Landed(
            base.release, (), f"proposed patch {patch.spec}", what.split("\n")[0], "unreleased"
        )
        changes = (*base.policy.changes, change)
        answers = f"{base.describe()} with the patch {patch.spec}"
        PATCHED[kernel] = Resolved(kernel, base.release, compose(kernel, changes, answers))
    return kernel


def changed_scenarios(scenarios: list[Scenario], base: str, patched: str) -> list[str]:
    """The scenarios whose steps come out otherwise on the patched kernel than on the base:
    another outcome, another fault kind, or an expectation judged otherwise."""
    return [s.path for s in scenarios if _shape(s, base) != _shape(s, patched)]


def _shape(scenario: Scenario, kernel: str) -> list[tuple[object, ...]]:
    """What each step did, without the names of pages: its outcome, how many things it
    reports (copies, results), whether a page was there, and each expectation's verdict."""
    return [
        (s.outcome, len(s.happened), s.observed_pfn is None, tuple(r.passed for r in s.results))
        for s in run_scenario(scenario, kernel).steps
    ]
