"""The README stays true: its Python example runs, its commands are the ones CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_python_example_runs() -> None:
    (code,) = blocks("python")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(1, 1, 0)"


def test_exactly_two_setup_commands() -> None:
    commands = [b.strip() for b in blocks("sh")]
    assert len(commands) == 2
    assert all(c.startswith("python3 -m venv .venv && ") for c in commands)
    assert commands[0].endswith("cowlab rdma --kernel v4.5 --kernel v4.5+6d0a07e")
    assert commands[1].endswith("-m pytest -n auto")


def test_example_output_matches_the_program() -> None:
    from cowlab.workloads import rdma

    shown = re.search(r"Output of the main job.*?```\n(.*?)```", README, flags=re.S)
    assert shown is not None
    text = shown.group(1)
    v45 = rdma.report(rdma.run("v4.5"))
    fixed = rdma.report(rdma.run("v4.5+6d0a07e"))
    strip_time = re.compile(r", \d+\.\d+ s\)")
    assert strip_time.sub(")", v45 + "\n\n" + fixed) == strip_time.sub(")", text.strip())
