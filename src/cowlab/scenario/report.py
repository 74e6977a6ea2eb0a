"""Scenario runs as rich tables for people and as JSON for programs (docs/scenarios.md)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from cowlab.policy import resolve
from cowlab.scenario.runner import ExpectResult, RunResult

JSON_VERSION = 1


def show_value(value: Any) -> str:
    if isinstance(value, bytes):
        return repr(value[:24]) + ("..." if len(value) > 24 else "")
    if isinstance(value, tuple) and len(value) == 2:
        here, ref = value
        return f"pfn {_pfn(here)} vs {_pfn(ref)}"
    if isinstance(value, dict):
        parts = [f"{k}: {'broken' if v else 'holds'}" for k, v in value.items()]
        return ", ".join(parts)
    return str(value)


def _pfn(pfn: int | None) -> str:
    return "none" if pfn is None else hex(pfn)


def show_expect(r: ExpectResult) -> str:
    mark = "[green]PASS[/]" if r.passed else "[red]FAIL[/]"
    want = show_value(r.expected) if r.what not in ("holds", "breaks") else ", ".join(r.expected)
    text = f"{mark} {r.what}: {want}"
    if not r.passed or r.what in ("fault", "mapcount", "total_mapcount", "refcount", "mapped"):
        text += f" (got {show_value(r.actual)})"
    return text


SHOWN_FIRST, SHOWN_LAST = 3, 2  # lines of a long "what happened" a table row shows


def shown_happened(happened: list[str]) -> str:
    """A step's "what happened" for a table cell. A 2 MiB write after fork is 512 copies of one
    line each: the cell shows the first lines and the last (the result, outcome or kill come
    last) and how many are left out; --json has them all."""
    if len(happened) <= SHOWN_FIRST + SHOWN_LAST + 1:
        return "\n".join(happened) or "-"
    left_out = len(happened) - SHOWN_FIRST - SHOWN_LAST
    return "\n".join(
        [
            *happened[:SHOWN_FIRST],
            f"... {left_out} more lines (cowlab run --json has them all)",
            *happened[-SHOWN_LAST:],
        ]
    )


def render_run(result: RunResult, console: Console) -> None:
    s = result.scenario
    on = resolve(result.kernel_id).describe()
    table = Table(title=f"{s.path} on {on}: {s.name}", box=box.SIMPLE_HEAD)
    table.add_column("#", justify="right")
    table.add_column("line", justify="right")
    table.add_column("step")
    table.add_column("what happened")
    table.add_column("expectations")
    for sr in result.steps:
        shown = [show_expect(r) for r in sr.results if not (r.implicit and r.passed)]
        table.add_row(
            str(sr.step.index),
            str(sr.step.loc.line),
            sr.step.describe(),
            shown_happened(sr.happened),
            "\n".join(shown) or "-",
        )
    console.print(table)
    explicit = [r for sr in result.steps for r in sr.results if not r.implicit]
    surprises = [r for sr in result.steps for r in sr.results if r.implicit and not r.passed]
    verdict = "[green]PASS[/]" if result.passed else "[red]FAIL[/]"
    held = sum(r.passed for r in explicit)
    tail = f", {len(surprises)} unexpected outcomes" if surprises else ""
    console.print(
        f"{verdict} {s.path} on {resolve(result.kernel_id).describe()}: "
        f"{held}/{len(explicit)} expectations hold{tail}"
    )
    if not result.listed:
        console.print(
            f"  {result.kernel_id} is not in the scenario's kernels (run by --kernel): "
            f"{result.not_applicable} expectations keyed by other kernels not applicable",
            highlight=False,
        )


def expect_to_json(r: ExpectResult) -> dict[str, Any]:
    return {
        "what": r.what,
        "expected": _jsonable(r.expected),
        "actual": _jsonable(r.actual),
        "passed": r.passed,
        "line": r.loc.line,
        "column": r.loc.col,
        "implicit": r.implicit,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def run_to_json(result: RunResult) -> dict[str, Any]:
    s = result.scenario
    return {
        "file": s.path,
        "name": s.name,
        "kernel": result.kernel_id,
        "release": str(resolve(result.kernel_id).release),
        "policy": resolve(result.kernel_id).policy_id,
        "listed": result.listed,
        "not_applicable": result.not_applicable,
        "passed": result.passed,
        "steps": [
            {
                "index": sr.step.index,
                "line": sr.step.loc.line,
                "op": sr.step.op,
                "step": sr.step.describe(),
                "outcome": sr.outcome,
                "happened": sr.happened,
                "rmap_walk_vmas": sr.rmap_walk_vmas,
                "pfn": sr.observed_pfn,
                "expectations": [expect_to_json(r) for r in sr.results],
                "events": [e.to_json() for e in sr.events],
                "passed": sr.passed,
            }
            for sr in result.steps
        ],
    }
