"""Scenarios on the live kernel against the model: examples agree, other kernels disagree."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowlab.live.cli import match_kernel
from cowlab.live.compare import Options, run_case
from cowlab.live.driver import LiveMachine
from cowlab.live.scenario import Limits
from cowlab.scenario import load_scenario, parse_scenario
from tests.live.helpers import needs_live_kernel

pytestmark = needs_live_kernel
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
MATCHED = match_kernel(platform.release())
needs_matched_model = pytest.mark.skipif(
    MATCHED is None, reason=f"no model kernel matches this machine's {platform.release()}"
)


def cowlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cowlab.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def machine() -> Iterator[LiveMachine]:
    with LiveMachine() as m:
        yield m


# Scenarios name the kernels their *expectations* are written for; the live comparison checks
# observations, not expectations, so every example runs on the model kernel matching uname.
@needs_matched_model
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_agrees_with_the_live_kernel(path: Path, machine: LiveMachine) -> None:
    assert MATCHED is not None
    result = run_case(load_scenario(path), Options(MATCHED), machine, None)
    if result.status == "unsupported":
        assert result.reason
        return
    shown = [d.describe() for d in result.differences]
    assert result.status == "agree", (result.status, result.reason, result.step, shown)


def test_an_older_kernel_disagrees_and_the_report_names_the_step() -> None:
    run = cowlab("live", "--json", "--kernel", "v4.5+6d0a07e", "examples/fork_while_pinned.yaml")
    assert run.returncode == 1, run.stderr
    case = json.loads(run.stdout)["cases"][0]
    assert case["status"] == "disagree"
    # 6.18 copies the pinned page for the child at fork (5.9+); 4.5 shares it.
    assert case["step"]["index"] == 4 and case["step"]["op"] == "fork"
    assert any(d["region"] == "C:buf" and "folio" in d["fields"] for d in case["differences"])
    assert case["live"]["C:buf"] and case["model"]["C:buf"]


def test_ops_without_a_live_equivalent_are_unsupported(machine: LiveMachine) -> None:
    text = """
name: numa
processes: [P]
steps:
  - {op: mmap, proc: P, name: buf, size: 4K}
  - {op: numa_balance, proc: P, at: buf, size: 4K}
"""
    result = run_case(parse_scenario(text), Options("v4.5+6d0a07e"), machine, None)
    assert result.status == "unsupported" and "NUMA" in result.reason


def test_a_knob_change_needs_permission(machine: LiveMachine) -> None:
    have = (machine.facts.thp_enabled if machine.facts else None) or "madvise"
    other = "never" if have != "never" else "madvise"
    text = f"name: k\nconfig: {{thp: {other}}}\nprocesses: [P]\nsteps:\n"
    text += "  - {op: mmap, proc: P, name: buf, size: 4K}\n"
    result = run_case(parse_scenario(text), Options("v4.5+6d0a07e"), machine, None)
    assert result.status == "unsupported" and "--allow-system-changes" in result.reason


def test_sizes_are_capped(machine: LiveMachine) -> None:
    text = "name: big\nprocesses: [P]\nsteps:\n  - {op: mmap, proc: P, name: b, size: 128M}\n"
    opts = Options("v4.5+6d0a07e", Limits(max_bytes=64 << 20))
    result = run_case(parse_scenario(text), opts, machine, None)
    assert result.status == "unsupported" and "cap" in result.reason


def test_random_programs_run_and_report(tmp_path: Path) -> None:
    run = cowlab(
        "live", "--random", "3", "--seed", "7", "--kernel", "v4.5+6d0a07e", "--json",
        "--out", str(tmp_path), "--minimise-budget", "5",
    )  # fmt: skip
    assert run.returncode in (0, 1), run.stderr
    doc = json.loads(run.stdout)
    assert doc["summary"]["cases"] == 3 and doc["summary"]["cases_per_s"] > 0
    for path in doc["written"]:
        assert load_scenario(path).steps  # every disagreement is a valid scenario file
