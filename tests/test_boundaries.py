"""Every boundary of the timeline has a scenario that tells its two sides apart, and every
example holds on every policy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cowlab.policy import CHANGES, POLICIES, resolve
from cowlab.policy.release import mainline_releases
from cowlab.policy.timeline import effective, landed_of
from cowlab.scenario import Scenario, load_scenario
from cowlab.scenario.runner import run_scenario

ROOT = Path(__file__).resolve().parent.parent
TIMELINE = ROOT / "examples" / "timeline"
STORIES = sorted(p for p in (ROOT / "examples").rglob("*.yaml") if p.parent.name != "cow")
VISIBLE = [c for c in CHANGES[1:] if effective(c) and not landed_of(c).invisible]


def scenario_of(change: type) -> Path:
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", change.__name__).lower()
    return TIMELINE / f"{landed_of(change).release}_{snake}.yaml"


@pytest.mark.parametrize("change", VISIBLE, ids=[c.__name__ for c in VISIBLE])
def test_every_visible_change_has_a_two_sided_scenario(change: type) -> None:
    """The scenario's first kernel, of the release just before the change's, lacks the change;
    its last has it; both pass; some expectation wants different values on the two."""
    path = scenario_of(change)
    assert path.exists(), f"{path.name}: no scenario for {change.__name__}"
    scenario = load_scenario(path)
    before, after = scenario.kernels[0], scenario.kernels[-1]
    assert change not in resolve(before).policy.changes
    assert change in resolve(after).policy.changes
    assert resolve(after).release.mainline == landed_of(change).release
    releases = list(mainline_releases())  # the before side is the release just before it
    assert resolve(before).release.mainline == releases[releases.index(resolve(after).release) - 1]
    for kernel in (before, after):
        assert run_scenario(scenario, kernel).passed, kernel
    wanted = [
        (e.expected_for(before), e.expected_for(after)) for s in scenario.steps for e in s.expect
    ]
    assert any(b != a for b, a in wanted), "no expectation tells the two sides apart"


@pytest.mark.parametrize("path", STORIES, ids=[f"{p.parent.name}/{p.stem}" for p in STORIES])
def test_every_example_holds_on_every_policy(path: Path) -> None:
    """... on every policy whose release can be built as the scenario's config asks (a config a
    release lacks is refused: tests/test_no_page_mapcount.py)."""
    scenario = load_scenario(path)
    built = [k for k in POLICIES if buildable(scenario, k)]
    failed = [k for k in built if not run_scenario(scenario, k).passed]
    assert failed == []


def buildable(scenario: Scenario, kernel: str) -> bool:
    """CONFIG_NO_PAGE_MAPCOUNT exists from 6.15 only."""
    return not scenario.config.no_page_mapcount or resolve(kernel).policy.no_page_mapcount_option
