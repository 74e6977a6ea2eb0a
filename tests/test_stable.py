"""Stable point releases (issue 13): x.y.z is x.y.0 plus the backports its line had by z; each
recorded backport has a scenario telling its line's release before it from the first with it;
a release past the newest known one of a long-term line is one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cowlab.cli import main
from cowlab.policy import CHANGES, ReleaseError, resolve
from cowlab.policy.history import STABLE_ID_NOT_FOUND
from cowlab.policy.release import LONG_TERM, NEWEST_STABLE, Release, parse_release
from cowlab.policy.timeline import STABLE_ONLY, landed_of
from cowlab.scenario import load_scenario
from cowlab.scenario.runner import run_scenario

ROOT = Path(__file__).resolve().parent.parent
STABLE = ROOT / "examples" / "stable"
CVE = ROOT / "examples" / "timeline" / "5.8_gup_breaks_cow_on_read.yaml"

# (first stable release, stable commit, upstream commit), as read in the stable trees and the
# stable release notes (docs/timeline-sources.md, "Stable backports")
RECORDED = {
    ("4.5.5", "9d3320adf7ca", "6d0a07edd17c"),
    ("4.5.7", STABLE_ID_NOT_FOUND, "0798d3c022dc"),  # stable-queue releases/4.5.7
    ("4.6.2", STABLE_ID_NOT_FOUND, "0798d3c022dc"),  # the 4.6.2 tree; 4.6.1 bracketed
    ("4.9.287", "9bbd42e79720", "17839856fd58"),  # x86 GUP-fast not forced: its own class
    ("4.9.298", "0c29640bdeca", "17839856fd58"),  # Ben Hutchings' redo, after reverting it
    ("4.14.232", "407faed92b4a", "17839856fd58"),
    ("4.19.189", "5e24029791e8", "17839856fd58"),
    ("5.4.28", STABLE_ID_NOT_FOUND, "12e967fd8e4e"),  # the 5.4.28 announcement; 5.4.38 tree
    ("5.5.12", STABLE_ID_NOT_FOUND, "12e967fd8e4e"),  # the 5.5.12 announcement
    ("5.4.47", "1027dc04f557", "17839856fd58"),
    ("5.10.9", "1eea108995a2", "9348b73c2e1b"),
    ("5.10.9", "72c5ce89427f", "feb889fb40fa"),
    ("6.4.13", "63f230177510", "2f406263e3e9"),  # the linux-stable push that released 6.4.13
}
WITH_STABLE_ONLY = (*CHANGES, *STABLE_ONLY)
BACKPORTS = sorted(
    (first, commit, change)
    for change in WITH_STABLE_ONLY
    for first, commit in landed_of(change).stable
    if first != "4.5.5"  # the seed's own story: examples/timeline/4.6_thp_mapcount_on_wp_fault
)


def test_the_recorded_backports_are_the_verified_ones() -> None:
    found = {
        (f, c, landed_of(ch).commits[0]) for ch in WITH_STABLE_ONLY for f, c in landed_of(ch).stable
    }
    assert found == RECORDED


@pytest.mark.parametrize(
    ("asked", "policy"),
    [
        ("4.5.6", "v4.5+6d0a07e"),
        ("4.5.7", "v4.5+6d0a07e+0798d3c"),  # the seed's backport, then 0798d3c022dc's
        ("4.6", "v4.6"),
        ("4.6.1", "v4.6"),
        ("4.6.2", "v4.6+0798d3c"),
        ("4.6.7", "v4.6+0798d3c"),  # 4.6.y never took the refix 5a49973d7143
        ("4.9", "v4.8"),  # x.y alone is x.y.0
        ("4.9.286", "v4.8"),
        ("4.9.287", "v4.9+9bbd42e"),  # 4.9.287's form: slow GUP only on x86
        ("4.9.297", "v4.9+9bbd42e"),
        ("4.9.298", "v4.9+1783985"),  # reverted and redone: GUP-fast too
        ("4.9.337", "v4.9+1783985"),
        ("4.14.231", "v4.14"),
        ("4.14.232", "v4.14+1783985"),
        ("4.19.1", "v4.15"),
        ("4.19.188", "v4.15"),
        ("4.19.189", "v4.19+1783985"),
        ("4.19.222", "v4.19+1783985"),
        ("5.4.6", "v5.4"),
        ("5.4.27", "v5.4"),
        ("5.4.28", "v5.4+12e967f"),  # 12e967fd8e4e's backport: MADV_PAGEOUT skips CoW pages
        ("5.4.46", "v5.4+12e967f"),
        ("5.5.11", "v5.4"),
        ("5.5.12", "v5.5+12e967f"),  # a stable line that is not long-term keeps its own id
        ("5.4.47", "v5.4+12e967f+1783985"),
        ("5.4.286", "v5.4+12e967f+1783985"),
        ("5.10.8", "v5.9"),
        ("5.10.9", "v5.10+9348b73+feb889f"),
        ("5.15.211", "v5.11"),
        ("6.1.120", "v6.1"),
        ("6.4.12", "v6.4"),
        ("6.4.13", "v6.4+2f40626"),
        ("6.4.16", "v6.4+2f40626"),  # the last 6.4.y
        ("6.12.95", "v6.12"),
        ("v4.19+1783985", "v4.19+1783985"),  # a stable policy id names its first release
    ],
)
def test_a_stable_release_is_its_base_plus_its_lines_backports(asked: str, policy: str) -> None:
    assert resolve(asked).policy_id == policy


def test_a_stable_policy_id_resolves_as_its_first_release() -> None:
    assert resolve("v5.4+12e967f+1783985").release == Release(5, 4, 47)
    assert resolve("v5.10+9348b73+feb889f").policy.release == "5.10.y from 5.10.9"


def test_the_report_says_what_a_release_is() -> None:
    assert resolve("5.4").describe() == "5.4 (5.4.0, policy v5.4)"
    assert resolve("5.4.286").describe() == (
        "5.4.286 (policy v5.4+12e967f+1783985: 5.4.0 with stable 12e967fd8e4e's backport "
        "(stable id not found), 1027dc04f557)"
    )
    assert resolve("6.1.120").describe() == (
        "6.1.120 (policy v6.1: 6.1.0, no modelled stable backport)"
    )
    assert resolve("4.6.2").describe() == (
        "4.6.2 (policy v4.6+0798d3c: 4.6.0 with stable 0798d3c022dc's backport "
        "(stable id not found))"
    )


def test_every_long_term_line_has_a_newest_release() -> None:
    assert set(NEWEST_STABLE) == set(LONG_TERM)
    assert str(parse_release("5.4.302")) == "5.4.302"  # the last 5.4.y


@pytest.mark.parametrize(
    ("bad", "newest"),
    [("5.4.999", "5.4.302"), ("4.9.338", "4.9.337"), ("6.12.96", "6.12.95")],
)
def test_an_unknown_stable_release_names_the_newest(
    bad: str, newest: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ReleaseError, match=f"newest .* is {newest}$"):
        resolve(bad)
    assert main(["run", str(CVE), "--kernel", bad]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and newest in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("first", "commit", "change"), BACKPORTS, ids=[f"{f}-{c}" for f, c, _ in BACKPORTS]
)
def test_every_backport_has_a_two_sided_scenario(first: str, commit: str, change: type) -> None:
    """A scenario in examples/stable/ lists the line's release before `first` and `first`, passes
    on both, and some expectation keyed by those stable versions tells them apart."""
    release = parse_release(first)
    before = f"{release.mainline}.{release.sublevel - 1}"
    found = []
    for path in sorted(STABLE.glob("*.yaml")):
        scenario = load_scenario(path)
        if list(scenario.kernels) != [before, first]:
            continue
        assert change not in resolve(before).policy.changes
        assert change in resolve(first).policy.changes
        assert (change, commit) in resolve(first).backports
        for kernel in (before, first):
            assert run_scenario(scenario, kernel).passed, (path.name, kernel)
        wanted = [
            (e.expected_for(before), e.expected_for(first))
            for s in scenario.steps
            for e in s.expect
        ]
        if any(b != a for b, a in wanted) and change.__name__ == _snake_to_camel(path):
            found.append(path.name)
    assert found, f"no examples/stable scenario tells {before} from {first} for {change.__name__}"


def _snake_to_camel(path: Path) -> str:
    return "".join(w.capitalize() for w in path.stem.split("_")[1:])


def test_the_cve_scenario_parts_5_4_0_from_5_4_286(capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's test: on 5.4.0 the child's pipe sees the parent's later write; on 5.4.286
    (5.4.47's backport of 17839856fd58) it keeps the old bytes. Each side as derived in the
    scenario, from the 5.4.6 and 5.4.286 trees' mm/gup.c."""
    scenario = load_scenario(CVE)
    seen = {}
    for kernel in ("5.4.0", "5.4.286"):
        result = run_scenario(scenario, kernel)
        assert result.passed, kernel
        step = next(s for s in result.steps if s.step.op == "dma_read")
        seen[kernel] = {r.what: r.passed for r in step.results if not r.implicit}
    assert seen["5.4.0"]["breaks"] and seen["5.4.286"]["holds"]
    dma = next(s for s in scenario.steps if s.op == "dma_read")
    data = next(e for e in dma.expect if e.what == "data")
    assert (data.expected_for("5.4.0"), data.expected_for("5.4.286")) == (b"public", b"secret")


def test_kernels_lists_the_backports_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kernels", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    lines = {line["line"]: line for line in doc["stable_lines"]}
    assert {f"{a}.{b}" for a, b in LONG_TERM} <= set(lines)
    assert [(b["release"], b["commit"]) for b in lines["5.10"]["backports"]] == [
        ("5.10.9", "1eea108995a2"),
        ("5.10.9", "72c5ce89427f"),
    ]
    assert (lines["4.19"]["newest"], lines["4.19"]["newest_policy"]) == (
        "4.19.325",
        "v4.19+1783985",
    )
    assert lines["6.6"]["backports"] == [] and lines["6.6"]["newest_policy"] == "v6.6"
    assert main(["kernels"]) == 0
    text = capsys.readouterr().out
    assert "5.4.y LTS: x.y.0 policy v5.4; newest known 5.4.302, policy v5.4+12e967f+1783985" in text
    assert "5.4.47    1027dc04f557   17839856fd58 (5.8)" in text


def test_run_json_names_the_backports(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(CVE), "--kernel", "4.19.222", "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert (run["release"], run["policy"]) == ("4.19.222", "v4.19+1783985")
    assert run["backports"] == [{"stable_commit": "5e24029791e8", "upstream": "17839856fd58"}]
    assert main(["run", str(CVE), "--kernel", "4.19", "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert (run["release"], run["policy"], run["backports"]) == ("4.19", "v4.15", [])


def test_4_9_287s_form_forces_slow_gup_only() -> None:
    """9bbd42e79720 set FOLL_WRITE in __get_user_pages but not in x86's GUP-fast; 4.9.298's redo
    (0c29640bdeca) replaces it, and is the mainline form."""
    early, redo = resolve("4.9.290").policy, resolve("4.9.300").policy
    assert early.gup_breaks_cow_on_read and early.gup_fast_breaks_cow_on_read is False
    assert redo.gup_breaks_cow_on_read and redo.gup_fast_breaks_cow_on_read is None
    assert [c.__name__ for c, _ in resolve("4.9.300").backports] == ["GupBreaksCowOnRead"]
