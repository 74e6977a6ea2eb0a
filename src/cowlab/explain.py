"""`cowlab explain` and `cowlab diff`: the kernel's decisions step by step, and where two part."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from cowlab.scenario.model import Scenario
from cowlab.scenario.runner import RunResult, StepResult, run_scenario


def step_lines(sr: StepResult) -> list[str]:
    """The decision log of one step, then its outcome and the counter changes."""
    lines = []
    for event in sr.events:
        lines.append(event.render())
        if event.rule:
            lines.append(f"  {event.render_rule()}")
    if sr.outcome != "ok":
        lines.append(f"outcome: {sr.outcome}")
    lines += [f"state: {change}" for change in sr.changes]
    for r in sr.results:
        if not r.implicit:
            lines.append(f"expect {r.what}: {'PASS' if r.passed else 'FAIL'}")
    return lines or ["(no kernel function changed anything)"]


def explain(scenario: Scenario, kernel_id: str, step: int | None, console: Console) -> RunResult:
    result = run_scenario(scenario, kernel_id, tracing=True)
    for sr in result.steps:
        if step is not None and sr.step.index != step:
            continue
        console.print(
            f"[bold]step {sr.step.index}[/] (line {sr.step.loc.line}) on {kernel_id}: "
            f"{sr.step.describe()}",
            highlight=False,
        )
        for line in step_lines(sr):
            console.print(f"  {line}", highlight=False, markup=False)
    return result


@dataclass
class Signature:
    """What a step decided (each kernel function's verdict) and what the program observed.

    The reasons are left out: two kernels that copy for different reasons decide alike.
    """

    outcome: str
    decisions: tuple[tuple[str, str], ...]
    observed: tuple[str, ...]


def signatures(result: RunResult) -> list[Signature]:
    out = []
    for sr in result.steps:
        decisions = tuple((e.function, e.verdict) for e in sr.events if e.decision)
        observed = tuple(f"{r.what}={r.actual!r}" for r in sr.results if r.what == "data")
        out.append(Signature(sr.outcome, decisions, observed))
    return out


def diff(scenario: Scenario, kernel_a: str, kernel_b: str, console: Console) -> int | None:
    """The first step whose decisions or observations differ; None when the runs agree."""
    a = run_scenario(scenario, kernel_a, tracing=True)
    b = run_scenario(scenario, kernel_b, tracing=True)
    for sa, sb, ra, rb in zip(signatures(a), signatures(b), a.steps, b.steps, strict=True):
        if sa != sb:
            step = ra.step
            console.print(
                f"first difference at step {step.index} (line {step.loc.line}): {step.describe()}",
                highlight=False,
                markup=False,
            )
            table = Table(show_lines=True)
            table.add_column(kernel_a)
            table.add_column(kernel_b)
            table.add_row("\n".join(step_lines(ra)), "\n".join(step_lines(rb)))
            console.print(table)
            return step.index
    console.print(f"{kernel_a} and {kernel_b} take the same decisions at every step")
    return None
