"""Scenario runs as text tables for people and as JSON for programs (docs/scenarios.md).

A run's table has the layout of a rich Table (box.SIMPLE_HEAD, centred title, columns collapsed
widest first and their cells word-wrapped when the table is wider than the console) but is laid
out here, once, as plain text: rich's Table measures and renders every cell as a renderable,
which cost more than the model on the cow.c matrix (issue 11). The text is written as it is:
no markup, so a name or step with brackets is shown literally. Lines carry no trailing blanks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.cells import cell_len
from rich.console import Console, JustifyMethod, OverflowMethod
from rich.text import Text

from cowlab.policy import resolve
from cowlab.policy.timeline import landed_of
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
    mark = "PASS" if r.passed else "FAIL"
    want = show_value(r.expected) if r.what not in ("holds", "breaks") else ", ".join(r.expected)
    text = f"{mark} {r.what}: {want}"
    if not r.passed or r.what in ("fault", "mapcount", "total_mapcount", "refcount", "mapped"):
        text += f" (got {show_value(r.actual)})"
    return text


SHOWN_FIRST, SHOWN_LAST = 3, 2  # lines of a long "what happened" a table row shows


def shown_happened(happened: Sequence[str]) -> str:
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


COLUMNS = ("#", "line", "step", "what happened", "expectations")
RIGHT = (True, True, False, False, False)  # right-justified columns


def _width(text: str) -> int:
    return len(text) if text.isascii() and text.isprintable() else cell_len(text)


def _ratio_reduce(
    total: int, ratios: list[int], maximums: list[int], values: list[int]
) -> list[int]:
    """rich._ratio.ratio_reduce: take total from values in proportion to ratios, each at most
    its maximum."""
    ratios = [ratio if most else 0 for ratio, most in zip(ratios, maximums, strict=True)]
    total_ratio = sum(ratios)
    if not total_ratio:
        return values[:]
    remaining = total
    result = []
    for ratio, most, value in zip(ratios, maximums, values, strict=True):
        if ratio and total_ratio > 0:
            taken = min(most, round(ratio * remaining / total_ratio))
            result.append(value - taken)
            remaining -= taken
            total_ratio -= ratio
        else:
            result.append(value)
    return result


def column_widths(natural: list[int], max_width: int) -> list[int]:
    """Column widths (padding included) as rich's Table computes them: the natural widths, or,
    when they exceed max_width, the widest columns narrowed to the next widest in turn, then
    all columns evenly."""
    widths = [min(w, max_width) or 1 for w in natural]
    if sum(widths) <= max_width:
        return widths
    excess = sum(widths) - max_width
    while excess > 0:
        widest = max(widths)
        second = max((w for w in widths if w != widest), default=0)
        if not widest - second:
            break
        ratios = [1 if w == widest else 0 for w in widths]
        widths = _ratio_reduce(excess, ratios, [min(excess, widest - second)] * len(widths), widths)
        excess = sum(widths) - max_width
    if excess > 0:
        widths = _ratio_reduce(excess, [1] * len(widths), widths, widths)
    return widths


def _wrap(
    console: Console,
    line: str,
    width: int,
    justify: JustifyMethod,
    overflow: OverflowMethod = "ellipsis",
) -> list[str]:
    """line in cells of width columns: as it is when it fits, else word-wrapped by rich (a word
    longer than width ends in an ellipsis in a table cell, as rich's columns have it)."""
    if _width(line) <= width:
        if justify == "right":
            line = line.rstrip()
            return [" " * (width - _width(line)) + line]
        if justify == "center":
            line = line.rstrip()
            left = (width - _width(line)) // 2
            return [" " * left + line + " " * (width - left - _width(line))]
        return [line + " " * (width - _width(line))]
    wrapped = Text(line).wrap(console, width, justify=justify, overflow=overflow)
    return [w.plain for w in wrapped]


def render_table(console: Console, title: str, rows: list[list[str]]) -> list[str]:
    """The lines of a box.SIMPLE_HEAD table with COLUMNS, as wide as its content or the
    console, whichever is less."""
    cells = [[c.expandtabs(8).split("\n") for c in row] for row in [list(COLUMNS), *rows]]
    max_width = console.width - (2 + len(COLUMNS) - 1)  # edges and column separators
    natural = [
        min(max(_width(line) for row in cells for line in row[col]), max(max_width - 2, 0)) + 2
        for col in range(len(COLUMNS))
    ]
    widths = column_widths(natural, max_width)
    table_width = sum(widths) + 2 + len(COLUMNS) - 1
    out = _wrap(console, title, table_width, "center", "fold") if title.strip() else []
    out.append("")  # the top edge
    for n, row in enumerate(cells):
        shown = [
            [
                f" {text} "
                for line in lines
                for text in _wrap(console, line, max(w - 2, 1), "right" if right else "left")
            ]
            for lines, w, right in zip(row, widths, RIGHT, strict=True)
        ]
        height = max(len(c) for c in shown)
        for c, w in zip(shown, widths, strict=True):
            blank = [" " * w] * (height - len(c))
            if n == 0:
                c[:0] = blank  # a header sits at the bottom of its cell
            else:
                c += blank
        for i in range(height):
            parts = [c[i] for c in shown]
            out.append(" " + " ".join(parts))
        if n == 0:
            out.append(" " + "\u2500" * (table_width - 2))
    out.append("")  # the bottom edge
    return out


def _print(console: Console, lines: list[str]) -> None:
    console.file.write("".join(line.rstrip() + "\n" for line in lines))
    console.file.flush()


def table_rows(result: RunResult) -> list[list[str]]:
    """A run's table: one row of COLUMNS per step."""
    rows = []
    for sr in result.steps:
        shown = [show_expect(r) for r in sr.results if not (r.implicit and r.passed)]
        rows.append(
            [
                str(sr.step.index),
                str(sr.step.loc.line),
                sr.step.describe(),
                shown_happened(sr.happened),
                "\n".join(shown) or "-",
            ]
        )
    return rows


def render_run(result: RunResult, console: Console) -> None:
    s = result.scenario
    on = resolve(result.kernel_id).describe()
    lines = render_table(console, f"{s.path} on {on}: {s.name}", table_rows(result))
    explicit = [r for sr in result.steps for r in sr.results if not r.implicit]
    surprises = [r for sr in result.steps for r in sr.results if r.implicit and not r.passed]
    verdict = "PASS" if result.passed else "FAIL"
    held = sum(r.passed for r in explicit)
    tail = f", {len(surprises)} unexpected outcomes" if surprises else ""
    said = [f"{verdict} {s.path} on {on}: {held}/{len(explicit)} expectations hold{tail}"]
    if not result.listed:
        said.append(
            f"  {result.kernel_id} is not in the scenario's kernels (run by --kernel): "
            f"{result.not_applicable} expectations keyed by other kernels not applicable"
        )
    for text in said:
        fits = _width(text) <= console.width
        lines += [text] if fits else [w.plain for w in Text(text).wrap(console, console.width)]
    _print(console, lines)


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
        "backports": [
            {"stable_commit": commit, "upstream": landed_of(change).commits[0]}
            for change, commit in resolve(result.kernel_id).backports
        ],
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
                "happened": list(sr.happened),
                "rmap_walk_vmas": sr.rmap_walk_vmas,
                "pfn": sr.observed_pfn,
                "expectations": [expect_to_json(r) for r in sr.results],
                "events": [e.to_json() for e in sr.events],
                "passed": sr.passed,
            }
            for sr in result.steps
        ],
    }
