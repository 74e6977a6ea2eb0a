"""tools/mutation_check.py covers every check of checker.py: each problem the checker can report
comes from a marked check, every marker is registered, and every registered mutation applies.

(The mutation runs themselves are .ci/run's; these tests keep the list honest as checks are
added.)
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "mutation_check", ROOT / "tools/mutation_check.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


tool = _tool()
CHECKER_SOURCE = (ROOT / tool.CHECKER).read_text()
CHECKER_TREE = ast.parse(CHECKER_SOURCE)
PROBLEM_LISTS = {"problems", "out"}


def marked_spans() -> list[tuple[int, int]]:
    """The line spans of the statements right after each `# invariant:` marker."""
    lines = set(tool.marked_lines(CHECKER_SOURCE).values())
    return [
        (s.lineno, s.end_lineno or s.lineno)
        for s in ast.walk(CHECKER_TREE)
        if isinstance(s, ast.stmt) and s.lineno - 1 in lines
    ]


def inside(node: ast.AST, spans: list[tuple[int, int]]) -> bool:
    return any(lo <= node.lineno <= hi for lo, hi in spans)  # type: ignore[attr-defined]


def functions() -> dict[str, ast.FunctionDef]:
    return {f.name: f for f in CHECKER_TREE.body if isinstance(f, ast.FunctionDef)}


def calls_of(name: str) -> list[ast.Call]:
    return [
        c
        for c in ast.walk(CHECKER_TREE)
        if isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id == name
    ]


def _adds_to_problems(node: ast.AST) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        target = node.func.value
        return node.func.attr in ("append", "extend") and _is_problem_list(target)
    return isinstance(node, ast.AugAssign) and _is_problem_list(node.target)


def _is_problem_list(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in PROBLEM_LISTS


def reports(func: ast.FunctionDef) -> list[ast.AST]:
    """The statements of func that put a problem in its result: an append to a problem list, an
    addition to one, or a return of a non-empty list literal."""
    return [
        node
        for node in ast.walk(func)
        if _adds_to_problems(node)
        or (isinstance(node, ast.Return) and isinstance(node.value, ast.List) and node.value.elts)
    ]


def is_aggregation(node: ast.AST) -> bool:
    """`problems += _check_x(...)`: the checks are the callee's."""
    return (
        isinstance(node, ast.AugAssign)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
        and node.value.func.id in functions()
    )


def test_every_marker_is_registered_and_every_registration_has_a_marker() -> None:
    assert set(tool.marked_lines(CHECKER_SOURCE)) == set(tool.CHECKER_INVARIANTS)


def test_every_report_of_the_checker_is_a_marked_check() -> None:
    """A problem is reported inside a marked statement, or by a helper every call of which is
    marked (_compare, _mappings_outside_vmas), or gathered from another check function."""
    spans = marked_spans()
    unmarked = []
    for name, func in functions().items():
        helper_covered = bool(calls_of(name)) and all(inside(c, spans) for c in calls_of(name))
        for node in reports(func):
            if not (inside(node, spans) or helper_covered or is_aggregation(node)):
                unmarked.append(f"{name}: line {node.lineno}")  # type: ignore[attr-defined]
    assert unmarked == []


def test_every_check_function_is_covered() -> None:
    """Every check_*/_check_* function holds a marked check or calls one that does."""
    funcs = functions()
    spans = marked_spans()
    covered = {
        n
        for n, f in funcs.items()
        if any(isinstance(s, ast.stmt) and inside(s, spans) for s in ast.walk(f))
    }
    grew = True
    while grew:
        calling = {
            n
            for n, f in funcs.items()
            for c in ast.walk(f)
            if isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id in covered
        }
        grew = not calling <= covered
        covered |= calling
    checks = {n for n in funcs if n.startswith(("check_", "_check_"))}
    assert checks - covered == set()
    assert {"check_counters", "check_rmap", "check_pin_coherence"} <= checks


@pytest.mark.parametrize("mutant", tool.MUTANTS, ids=lambda m: m.name)
def test_every_registered_mutation_applies(mutant: object) -> None:
    """Applies, removes exactly one statement (now `pass`), and leaves valid Python."""
    source = (ROOT / mutant.path).read_text()  # type: ignore[attr-defined]
    mutated = mutant.apply(source)  # type: ignore[attr-defined]
    assert mutated != source
    assert mutated.count("# mutant: ") == 1


@pytest.mark.parametrize("mutant", tool.MUTANTS, ids=lambda m: m.name)
def test_every_mutant_names_a_breaking_test_the_unmutated_run_passes(mutant: object) -> None:
    """The test a mutant runs is a test function of a file the unmutated copy must pass."""
    path, _, function = mutant.test.partition("::")  # type: ignore[attr-defined]
    assert path in tool.TESTS
    tree = ast.parse((ROOT / path).read_text())
    assert function in {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}


def test_a_mutation_that_no_longer_applies_is_an_error() -> None:
    gone = tool.Mutant("thp.no_such_check", tool.CHECKER)
    with pytest.raises(tool.NotApplicable):
        gone.apply(CHECKER_SOURCE)
    moved = tool.Mutant("no_leak.x", tool.ORACLE, "LogicalMemory.check", "no such message")
    with pytest.raises(tool.NotApplicable):
        moved.apply((ROOT / tool.ORACLE).read_text())


def test_the_marked_statement_is_what_is_removed() -> None:
    mutated = tool.Mutant("thp.tail_count", tool.CHECKER).apply(CHECKER_SOURCE)
    assert "a tail page has a nonzero _count" not in mutated
    assert "_pincount {int(f._pincount[head])}" in mutated
