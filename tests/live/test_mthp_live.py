"""mTHP scenarios (config: mthp) on the live kernel: the per-size knobs are set through the
journal with --allow-system-changes and put back afterwards; without it the case is unsupported.

The scenarios are every example that configures mTHP and those in tests/live/mthp/; their
expectations (derived from the kernel's rules) are checked on the model here too.
"""

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
from cowlab.live.system import THP_DIR, read_knob
from cowlab.scenario import load_scenario, parse_scenario
from cowlab.scenario.runner import run_scenario
from tests.live.helpers import needs_live_kernel

ROOT = Path(__file__).resolve().parents[2]
MTHP = sorted(
    {p for p in (ROOT / "examples").rglob("*.yaml") if load_scenario(p).config.mthp}
    | set((Path(__file__).parent / "mthp").glob("*.yaml"))
)
MATCHED = match_kernel(platform.release())
KNOBS = [*sorted(THP_DIR.glob("hugepages-*kB/enabled")), THP_DIR / "enabled"]


def _knobs() -> dict[Path, str]:
    return {k: read_knob(k) for k in KNOBS}


@pytest.fixture
def knobs_as_found() -> Iterator[dict[Path, str]]:
    """The THP knobs before the test; written back if the run under test did not."""
    found = _knobs()
    try:
        yield found
    finally:
        for knob, value in found.items():
            if read_knob(knob) != value:
                knob.write_text(value)


def test_there_are_mthp_scenarios() -> None:
    assert any("mthp" in p.name for p in MTHP)


@pytest.mark.parametrize("path", MTHP, ids=[p.stem for p in MTHP])
def test_the_expectations_hold_on_the_model(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.config.mthp
    for kernel_id in scenario.kernels:
        result = run_scenario(scenario, kernel_id)
        failed = [(s.step.index, r) for s in result.steps for r in s.results if not r.passed]
        assert not failed, f"{kernel_id}: {failed}"


@needs_live_kernel
@pytest.mark.skipif(MATCHED is None, reason=f"no model kernel matches {platform.release()}")
@pytest.mark.parametrize("path", MTHP, ids=[p.stem for p in MTHP])
def test_mthp_scenario_agrees_live_and_the_knobs_are_put_back(
    path: Path, tmp_path: Path, knobs_as_found: dict[Path, str]
) -> None:
    journal = tmp_path / "journal.json"
    cmd = [sys.executable, "-m", "cowlab.cli", "live", "--json", "--allow-system-changes"]
    run = subprocess.run(
        [*cmd, "--journal", str(journal), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert _knobs() == knobs_as_found and not journal.exists()  # before the fixture's net
    assert run.returncode == 0, run.stderr
    case = json.loads(run.stdout)["cases"][0]
    shown = case.get("differences", [])[:5]
    assert case["status"] == "agree", (case["status"], case.get("reason"), shown)


@needs_live_kernel
def test_without_permission_an_mthp_knob_change_is_unsupported(
    knobs_as_found: dict[Path, str],
) -> None:
    have = knobs_as_found[THP_DIR / "hugepages-64kB" / "enabled"]
    other = "madvise" if have != "madvise" else "never"
    scenario = parse_scenario(
        f"name: m\nconfig: {{mthp: {{64K: {other}}}}}\nprocesses: [P]\nsteps:\n"
        "  - {op: mmap, proc: P, name: buf, size: 64K}\n"
    )
    with LiveMachine() as machine:
        result = run_case(scenario, Options(MATCHED or "v6.18"), machine, None)
    assert result.status == "unsupported"
    assert f"hugepages-64kB/enabled={other} (the machine has {have})" in result.reason
    assert "--allow-system-changes" in result.reason
    assert _knobs() == knobs_as_found
