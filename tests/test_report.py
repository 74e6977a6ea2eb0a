"""`cowlab run`'s tables are laid out by cowlab as rich's Table would lay them out (issue 11:
rich's own layout cost more than the model on the cow.c matrix)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cowlab.cli import main
from cowlab.scenario import load_scenario
from cowlab.scenario.report import COLUMNS, RIGHT, column_widths, render_table, table_rows
from cowlab.scenario.runner import run_scenario

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = (30, 45, 60, 100, 160, 300)


def rich_lines(title: str, rows: list[list[str]], width: int) -> list[str]:
    """The reference: the same table as a rich Table (box.SIMPLE_HEAD), trailing blanks off."""
    console = Console(width=width, file=io.StringIO(), force_terminal=False)
    table = Table(title=Text(title), box=box.SIMPLE_HEAD)
    for name, right in zip(COLUMNS, RIGHT, strict=True):
        table.add_column(name, justify="right" if right else "left")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return [line.rstrip() for line in out.splitlines()]


@pytest.mark.parametrize(
    "path",
    [
        "examples/seed_quickstart.yaml",
        "examples/cow/cow_fork__swap_pte_thp.yaml",  # a long "what happened", headers wrapped
        "examples/cow/ro_fast_pin_exclusive__partial_shared.yaml",
    ],
)
def test_a_run_table_is_laid_out_as_rich_lays_it_out(path: str) -> None:
    scenario = load_scenario(str(ROOT / path))
    rows = table_rows(run_scenario(scenario, scenario.kernels[0]))
    title = f"{path} on {scenario.kernels[0]}: {scenario.name}"
    for width in WIDTHS:
        mine = [line.rstrip() for line in render_table(Console(width=width), title, rows)]
        assert mine == rich_lines(title, rows, width), width


def test_odd_cells_are_laid_out_as_rich_lays_them_out() -> None:
    """Right-justified, wide characters, an overlong word (an ellipsis), an empty cell, tabs,
    a header taller than the row and a title wider than the table."""
    rows = [
        ["1", "7", "mmap P name=日本語 size=2M", "", "PASS a\tb"],
        ["10", "12345", "x" * 90, "one\ntwo\nthree", "-"],
    ]
    for width in WIDTHS:
        mine = [line.rstrip() for line in render_table(Console(width=width), "t " * 40, rows)]
        assert mine == rich_lines("t " * 40, rows, width), width
    for width in (1, 5, 12, 20):  # narrower than the columns' padding: a table, not a crash
        assert render_table(Console(width=width), "t", rows)


def test_column_widths_collapse_widest_first() -> None:
    assert column_widths([5, 10, 20], 40) == [5, 10, 20]
    assert column_widths([5, 10, 30], 30) == [5, 10, 15]  # the widest down to the limit
    assert column_widths([5, 30, 30], 30) == [5, 12, 13]
    assert column_widths([10, 10, 10], 15) == [5, 5, 5]  # all as wide: reduced evenly


def test_brackets_are_shown_as_they_are(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No markup: a scenario name with [brackets] is printed literally, the verdict too, and
    lines carry no trailing blanks."""
    path = tmp_path / "b.yaml"
    path.write_text(
        "name: a [red]name[/] in brackets\nkernels: [v6.18]\nprocesses: [P]\n"
        "steps:\n  - {op: mmap, proc: P, name: buf, size: 4K}\n"
    )
    assert main(["run", str(path), "--width", "160"]) == 0
    out = capsys.readouterr().out
    assert "a [red]name[/] in brackets" in out
    assert all(line == line.rstrip() for line in out.splitlines())
    assert out.splitlines()[-1].startswith("PASS ") and "0/0 expectations hold" in out
