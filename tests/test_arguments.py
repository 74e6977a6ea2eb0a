"""Bad option values, refused in one line (exit 2) while the command line is read: never a
traceback at the end of a run, never a value taken silently (cowlab.arguments)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cowlab.arguments import at_least, out_dir, out_file
from cowlab.cli import main

SCENARIO = "examples/seed_quickstart.yaml"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", SCENARIO, "--width", "0"], "--width: expected an integer of 1 or more, got '0'"),
        (["run", SCENARIO, "--json", "--width", "-5"], "--width: expected an integer of 1 or"),
        (["explain", SCENARIO, "--kernel", "6.18", "--width", "0"], "--width: expected an"),
        (["diff", SCENARIO, "--kernel", "4.5", "--kernel", "6.18", "--width", "x"], "got 'x'"),
        (["run", SCENARIO, "--max-memory", "0"], "--max-memory: bad size '0'"),
        (["run", SCENARIO, "--max-memory=-1G"], "--max-memory: bad size '-1G'"),
        (["kernels", "--json", "--markdown"], "--markdown: not allowed with argument --json"),
        (["rdma", "--iterations", "-1"], "--iterations: expected an integer of 0 or more"),
        (["rdma", "--size", "0"], "--size: bad size '0'"),
        (["live", "--random", "1", "--out", "README.md"], "--out: README.md: not a directory"),
        (["live", "--random", "0"], "--random: expected an integer of 1 or more, got '0'"),
        (["live", "--random", "1", "--max-mib", "0"], "--max-mib: expected an integer of 1 or"),
        (["live", "--random", "1", "--retries", "-1"], "--retries: expected an integer of 0 or"),
        (["check", "--length", "x"], "--length: expected an integer of 1 or more, got 'x'"),
    ],
)
def test_a_bad_value_is_one_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        status = main(argv)
    except SystemExit as e:  # `cowlab rdma` exits from its parser, as rdma_mr.py does
        status = e.code
    assert status == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1 and not captured.out


def test_at_least_takes_its_bound_and_above() -> None:
    assert [at_least(0)("0"), at_least(1)("1"), at_least(1)("160")] == [0, 1, 160]


def test_an_output_that_does_not_exist_yet_is_taken_where_it_can_be_made(tmp_path: Path) -> None:
    """--out may name a directory to be made (the run makes it); --junit a new file in a
    directory that is there."""
    assert out_dir(str(tmp_path / "a" / "b")) == str(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()  # checked, not made: a run refused later leaves none
    assert out_file(str(tmp_path / "x.xml")) == str(tmp_path / "x.xml")
    (tmp_path / "f").write_text("")
    for parse, text in [(out_dir, tmp_path / "f" / "a"), (out_file, tmp_path / "no" / "x.xml")]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(str(text))


def test_a_dangling_or_looping_link_is_no_directory_to_write(tmp_path: Path) -> None:
    """A link to nothing, or to itself, is there but no directory: refused while the line
    is read, not found wrong when the run's mkdir meets it."""
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "dir").mkdir()
    (tmp_path / "to-dir").symlink_to(tmp_path / "dir")
    for name in ("dangling", "loop"):
        for parse, text in [(out_dir, name), (out_dir, f"{name}/sub"), (out_file, name)]:
            with pytest.raises(argparse.ArgumentTypeError):
                parse(str(tmp_path / text))
    assert out_dir(str(tmp_path / "to-dir")) == str(tmp_path / "to-dir")
