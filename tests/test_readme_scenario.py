"""The README's first scenario runs and prints what the README shows."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from cowlab.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_first_scenario_output_is_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = README.split("## A first scenario", 1)[1]
    yaml_text, shown = re.findall(r"```(?:yaml)?\n(.*?)```", section, flags=re.S)[:2]
    assert yaml_text == (ROOT / "examples" / "seed_quickstart.yaml").read_text()
    (tmp_path / "seed.yaml").write_text(yaml_text)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["run", "seed.yaml", "--width", "100"])
    assert status == 0
    produced = "\n".join(line.rstrip() for line in out.getvalue().splitlines())
    assert produced.strip() == shown.strip()
