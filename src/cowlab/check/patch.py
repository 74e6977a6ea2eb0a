"""A proposed patch as a policy: `--policy FILE.py:NAME --base 6.18` loads the user's Policy
subclass NAME (the decisions the patch changes) and puts it on top of the base release's
policy, as a rule change of the timeline would be; the result answers to the kernel id
`BASE+NAME` in this process (and in every worker, which registers it again)."""

from __future__ import annotations

import functools
import inspect
import re
import sys
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cowlab.mm import decision
from cowlab.policy.base import Policy
from cowlab.policy.history import Landed
from cowlab.policy.timeline import PATCHED, Resolved, compose, resolve
from cowlab.scenario.model import Scenario
from cowlab.scenario.runner import run_scenario


class PatchError(Exception):
    """A --policy that cannot be loaded, or whose code failed: one line."""


@dataclass(frozen=True)
class Patch:
    """A --policy patch as a worker needs it: its text goes with it, so a worker in another
    directory or on another machine (Dask) needs no copy of the file, and one that outlives a
    run learns an edited file anew."""

    spec: str  # FILE.py:NAME
    base: str  # the --base kernel
    source: str  # FILE.py's text, read where the command runs


def read_patch(spec: str, base: str) -> Patch:
    """The patch --policy SPEC --base BASE names, its file read."""
    path = _split(spec)[0]
    if not Path(path).is_file():
        raise PatchError(f"--policy {spec}: no file {path}")
    return Patch(spec, base, Path(path).read_text())


def _split(spec: str) -> tuple[str, str]:
    path, sep, name = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not name:
        raise PatchError(f"--policy {spec}: expected FILE.py:NAME")
    return path, name


def load_change(patch: Patch) -> type[Policy]:
    """The Policy subclass NAME the patch's FILE.py defines."""
    path, name = _split(patch.spec)
    module_name = f"cowlab_patch_{Path(path).stem}"
    module = types.ModuleType(module_name)
    module.__file__ = path
    sys.modules[module_name] = module  # dataclasses and pickling look their module up
    try:
        exec(compile(patch.source, path, "exec"), module.__dict__)
    except Exception as e:  # the user's code: any error is theirs, said in one line
        raise (raised_in(patch, e) or PatchError(f"--policy {patch.spec}: {_said(e)}")) from None
    change = getattr(module, name, None)
    if not inspect.isclass(change) or not issubclass(change, Policy):
        raise PatchError(f"--policy {patch.spec}: expected {name} to be a subclass of Policy")
    _check_methods(patch, change)
    return change


def _check_methods(patch: Patch, change: type[Policy]) -> None:
    """Each method the patch defines in place of one the base's policy has, checked where it
    is loaded: it must take the arguments the replaced one takes, and its answers are checked
    against the kind the replaced one declares (wrapped: a staticmethod or classmethod stays
    one)."""
    in_force = resolve(patch.base).policy
    for method, definition in list(vars(change).items()):
        decide = getattr(definition, "__func__", definition)
        replaced = getattr(in_force, method, None)
        replaced = getattr(replaced, "__func__", replaced)
        if not (inspect.isfunction(decide) and inspect.isfunction(replaced)):
            continue
        _same_arguments(patch, decide, replaced)
        declared = inspect.get_annotations(replaced).get("return")
        named = getattr(declared, "__name__", None) if inspect.isclass(declared) else declared
        kind = _kind(str(named)) if named else None
        if kind:
            checked = _checked(patch, decide, str(named), kind)
            setattr(change, method, checked if definition is decide else type(definition)(checked))


def _same_arguments(patch: Patch, decide: Callable[..., Any], replaced: Callable[..., Any]) -> None:
    """DECIDE takes the positional arguments the model gives the method it replaces."""
    taken = inspect.signature(replaced).parameters.values()
    given = [p.name for p in taken if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    try:
        inspect.signature(decide).bind(*given)
    except TypeError:
        takes = ", ".join(inspect.signature(decide).parameters)
        said = f"takes ({takes}), expected ({', '.join(given)})"
        raise PatchError(f"--policy {patch.spec}: {_where(patch, decide)} {said}") from None


def _where(patch: Patch, decide: Callable[..., Any]) -> str:
    return f"{_split(patch.spec)[0]}:{decide.__code__.co_firstlineno} ({decide.__name__})"


def _checked(
    patch: Patch, decide: Callable[..., Any], declared: str, kind: Callable[[object], bool]
) -> Callable[..., Any]:
    """The patch's method DECIDE, its answer checked against what the replaced one declares:
    a wrong kind of answer is the patch's error at its line, not a traceback deep in the
    model that took it."""

    @functools.wraps(decide)
    def checked(*args: Any, **kwargs: Any) -> Any:
        answer = decide(*args, **kwargs)
        if not kind(answer):
            said = f"returned {answer!r:.60}, expected {declared}"
            raise PatchError(f"--policy {patch.spec}: {_where(patch, decide)} {said}")
        return answer

    return checked


def _kind(declared: str) -> Callable[[object], bool] | None:
    """A test of an answer against a return annotation of Policy's (a string: its module
    postpones annotations): a class of mm/decision.py, bool, str, a tuple of N, an array."""
    if declared in ("bool", "str"):
        plain = (bool, np.bool_) if declared == "bool" else str
        return lambda answer: isinstance(answer, plain)
    if declared.startswith("tuple["):
        n = _top_level_args(declared[len("tuple[") : -1])
        return lambda answer: isinstance(answer, tuple) and len(answer) == n
    if declared.startswith("npt.NDArray"):
        return lambda answer: isinstance(answer, np.ndarray)
    named = getattr(decision, declared, None)
    return (lambda answer: isinstance(answer, named)) if inspect.isclass(named) else None


def _top_level_args(args: str) -> int:
    """How many arguments `A, B[C, D], E` holds: 3."""
    depth, n = 0, 1
    for c in args:
        depth += (c == "[") - (c == "]")
        n += c == "," and depth == 0
    return n


def raised_in(patch: Patch, error: BaseException) -> PatchError | None:
    """ERROR in one line at the innermost line of the patch's file it passed through, here or
    in a worker (a pool's or Dask's error carries the worker's traceback); None if it never
    went through the patch's code."""
    path = _split(patch.spec)[0]
    text = "".join(traceback.format_exception(error))
    where = re.findall(rf'File "{re.escape(path)}", line (\d+)(?:, in (\S+))?', text)
    if not where:
        return None
    line, function = where[-1]
    at = f"{path}:{line}" + (f" ({function})" if function else "")
    return PatchError(f"--policy {patch.spec}: {at}: {_said(error)}")


def _said(error: BaseException) -> str:
    first = str(error).split("\n")[0]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


_REGISTERED: dict[str, Patch] = {}  # kernel id -> the patch it answers with here


def register(patch: Patch) -> str:
    """Make the patched policy answer to BASE+NAME here; return that id. Once per patch and
    process: a worker learns it with every task, the file's code runs once."""
    base = resolve(patch.base)
    kernel = f"{base.policy_id}+{_split(patch.spec)[1]}"
    if _REGISTERED.get(kernel) != patch:
        change = load_change(patch)
        what = inspect.getdoc(change) or inspect.getdoc(sys.modules[change.__module__]) or ""
        change.landed = Landed(
            base.release, (), f"proposed patch {patch.spec}", what.split("\n")[0], "unreleased"
        )
        changes = (*base.policy.changes, change)
        answers = f"{base.describe()} with the patch {patch.spec}"
        PATCHED[kernel] = Resolved(kernel, base.release, compose(kernel, changes, answers))
        _REGISTERED[kernel] = patch
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
