"""The timeline: any release resolves to the policy of the changes landed by then; a change
lands once, at its release; the issue's probe tells 6.8 from 6.9."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cowlab.cli import main
from cowlab.kernel import Kernel
from cowlab.mm.constants import PG_dirty
from cowlab.mm.page_alloc import flags_without
from cowlab.mm.pgtable import PTE_DIRTY, pte_without
from cowlab.policy import CHANGES, POLICIES, ReleaseError, resolve
from cowlab.policy.release import LONG_TERM, mainline_releases
from cowlab.policy.timeline import STABLE_ONLY, landed_of, pick_key
from cowlab.scenario import ScenarioError, load_scenario, parse_scenario
from cowlab.scenario.runner import Runner, run_scenario

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "examples" / "timeline" / "6.9_no_large_folio_reuse.yaml"


@pytest.mark.parametrize(
    ("asked", "policy"),
    [
        ("4.5", "v4.5"),
        ("4.5.4", "v4.5"),
        ("4.5.5", "v4.5+6d0a07e"),  # the seed's stable backport, 9d3320adf7ca
        ("v4.5+6d0a07e", "v4.5+6d0a07e"),
        # the old id of 5.4.47 (1027dc04f557), which has 5.4.28's 12e967fd8e4e too
        ("v5.4+1783985", "v5.4+12e967f+1783985"),
        ("4.6", "v4.6"),  # 4.5.5's rules: the seed, the unrounded index assertion
        ("4.19.0", "v4.15"),  # nothing modelled changed from 4.15 to 5.0
        ("v4.14", "v4.14"),
        ("4.13", "v4.13"),
        ("5.4", "v5.4"),
        ("5.5", "v5.4"),  # 12e967fd8e4e is in 5.6-rc7 (and 5.5.12)
        ("5.6", "v5.6"),
        ("v5.10", "v5.9"),
        ("5.15", "v5.11"),
        ("6.1", "v6.1"),
        ("6.2", "v6.2"),
        ("6.3", "v6.3"),  # 07e8c82b5eff: MADV_PAGEOUT by folio_mapcount (6.2.1 lacks it, 6.3.8)
        ("6.4", "v6.4"),  # ac492b9c70ca: 6.3.8 lacks it, 6.4.0 has it
        ("6.4.12", "v6.4"),
        ("6.4.13", "v6.4+2f40626"),  # 63f230177510, the 6.4.y backport of 2f406263e3e9
        ("6.5", "v6.5"),  # 2f406263e3e9: 6.4.6 lacks it, 6.5.0 has it
        ("6.6", "v6.6"),  # 79271476b336: 6.3.8 lacks it, 6.6.9 has it
        ("6.12", "v6.12"),
        ("6.14", "v6.14"),
        ("6.18.44", "v6.18"),
    ],
)
def test_a_release_resolves_to_the_policy_in_force(asked: str, policy: str) -> None:
    assert resolve(asked).policy_id == policy


@pytest.mark.parametrize("bad", ["4.4", "7.0", "5.20", "4.21", "six", "v6", ""])
def test_an_unknown_release_names_the_range(bad: str) -> None:
    with pytest.raises(ReleaseError, match=r"4\.5 to 6\.18"):
        resolve(bad)


def test_changes_are_in_release_order_and_each_landed_once() -> None:
    releases = [landed_of(c).release for c in CHANGES]
    assert releases == sorted(releases)
    assert len(set(CHANGES)) == len(CHANGES)


def test_a_policy_is_the_changes_landed_by_its_release() -> None:
    """v6.9 holds every change up to 6.9 and none after; its MRO puts the newest first."""
    p = POLICIES["v6.9"]
    assert all(
        str(landed_of(c).release) <= "6.9" or landed_of(c).release.major < 6 for c in p.changes
    )
    assert [landed_of(c).release for c in p.changes] == sorted(
        landed_of(c).release for c in p.changes
    )
    assert [c.__name__ for c in p.__mro__[1:3]] == ["PageoutZeroSharersSplits", "NoLargeFolioReuse"]
    assert not p.huge_zero_wp_allocates and p.mthp and not p.mm_ids  # 5.8 .. 6.12; 6.8; 6.15


def test_a_key_speaks_from_its_release_on() -> None:
    keys = {"v4.5": 1, "v4.5+6d0a07e": 2, "v4.6": 3, "v5.9": 4}
    assert pick_key(keys, "4.5.4") == "v4.5"
    assert pick_key(keys, "4.5.5") == "v4.5+6d0a07e"  # a stable key on its own line
    assert pick_key(keys, "4.8") == "v4.6"  # ... and not beyond it
    assert pick_key(keys, "6.6") == "v5.9"
    assert pick_key(keys, "v4.5+6d0a07e-early") == "v4.5+6d0a07e"  # stands in for 4.5.5
    assert pick_key({"v5.1": 1}, "5.0") is None


@pytest.mark.parametrize(
    ("release", "fault"),
    [("6.6", "reuse"), ("6.8", "reuse"), ("6.9", "copy"), ("6.12", "copy"), ("6.18", "copy")],
)
def test_the_probe_reuses_until_6_8_and_copies_from_6_9(release: str, fault: str) -> None:
    """Issue 10's probe, derived from 6.6.9/6.8.0 do_wp_page and 6.9.0 wp_can_reuse_anon_folio."""
    scenario = load_scenario(PROBE)
    result = run_scenario(scenario, release)
    assert result.passed
    write = next(s for s in scenario.steps if s.op == "write" and s.expect and s.index > 3)
    assert next(e for e in write.expect if e.what == "fault").expected_for(release) == fault


def test_kernels_lists_every_release_and_marks_long_term(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["kernels", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    releases = {r["release"]: r for r in doc["releases"]}
    assert len(releases) == 16 + 20 + 19  # 4.5-4.20, 5.0-5.19, 6.0-6.18
    assert {r for r, row in releases.items() if row["long_term"]} == {
        f"{a}.{b}" for a, b in LONG_TERM
    }
    assert releases["6.9"]["policy"] == "v6.9" and releases["6.10"]["policy"] == "v6.10"
    # 0798d3c022dc is a v4.7-rc1 commit (in stable 4.5.7 and 4.6.2), overridden in 4.7 itself
    assert [c["commits"] for c in releases["4.7"]["changes"]] == [
        ["0798d3c022dc"],
        ["5a49973d7143"],
    ]
    assert releases["4.6"]["policy"] == "v4.6" and releases["4.7"]["policy"] == "v4.7"
    first = doc["stable_backports"][0]  # the seed's; the rest: tests/test_stable.py
    assert (first["release"], first["commit"]) == ("4.5.5", "9d3320adf7ca")
    assert main(["kernels"]) == 0
    text = capsys.readouterr().out
    assert "6.6 LTS   v6.6" in text and "5.10 LTS  v5.9" in text


def test_run_json_names_the_release_and_the_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(PROBE), "--kernel", "5.10", "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert (run["kernel"], run["release"], run["policy"]) == ("5.10", "5.10", "v5.9")


def test_a_release_key_is_read_as_written(tmp_path: Path) -> None:
    """`5.10:` is release 5.10 (YAML would read the number 5.1); in a list, where YAML gives the
    number, an unquoted release is refused with the reason."""
    path = tmp_path / "t.yaml"
    path.write_text(PROBE.read_text().replace("v6.9: copy", "6.10: copy"))
    assert main(["run", str(path), "--kernel", "6.9"]) == 1  # 6.9 is before the 6.10 key
    assert main(["run", str(path), "--kernel", "6.10"]) == 0
    path.write_text(PROBE.read_text().replace("kernels: [v6.8, v6.9]", "kernels: [6.10]"))
    assert main(["run", str(path)]) == 2


REVIEW = ROOT / "examples" / "review" / "6d0a07e_uninit_rmap_walk.yaml"


@pytest.mark.parametrize(
    ("kernel", "vmas"),
    [("v4.5+6d0a07e", 1), ("v4.5+6d0a07e-uninit", 3), ("v4.5+6d0a07e-early", 1), ("5.10", 3)],
)
def test_the_uninitialised_review_version_walks_longer(
    kernel: str, vmas: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dean Luick's finding: the reused page stays on P's anon_vma, whose tree holds the VMAs of
    P, C1 and C2; the fix moves it to C1's (one VMA). 5.9-5.18 reuse without moving it too."""
    assert main(["run", str(REVIEW), "--kernel", kernel, "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    swapout = next(s for s in run["steps"] if s["op"] == "swapout")
    assert swapout["rmap_walk_vmas"] == vmas
    assert main(["explain", str(REVIEW), "--kernel", kernel, "--step", str(swapout["index"])]) == 0
    assert f"{vmas} VMAs visited" in capsys.readouterr().out


def test_every_change_is_recorded_in_the_verification_notes() -> None:
    """One row per change, stable-only forms included; a visible change's row names the
    example that tells its two sides apart."""
    text = (ROOT / "docs" / "verification-later.md").read_text()
    for change in (*CHANGES, *STABLE_ONLY):
        name = f"`{change.__module__.rsplit('.', 1)[1]}.{change.__name__}`"
        row = next((line for line in text.splitlines() if f" | {name} | " in line), "")
        assert row, change
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", change.__name__).lower()
        example = f"{landed_of(change).release}_{snake}.yaml"
        if (ROOT / "examples" / "timeline" / example).exists():
            assert f"examples/timeline/{example}" in row, change


def test_the_policy_table_in_the_docs_is_the_timelines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kernels", "--markdown"]) == 0
    table = capsys.readouterr().out
    doc = (ROOT / "docs" / "kernels.md").read_text()
    start, end = "<!-- policies:start -->\n", "<!-- policies:end -->"
    assert doc[doc.index(start) + len(start) : doc.index(end)] == table
    assert table.count("\n") == len(POLICIES) + 2


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("{v5.19: reuse, '5.19': copy}", "one key per release, 'v5.19' and '5.19'"),
        ("{v5.19: reuse, sometimes: copy}", "expected a release, a kernel id or default"),
        ("{v7.3: reuse}", "4.5 to 6.18"),
    ],
)
def test_a_bad_per_release_key_is_one_located_line(keys: str, message: str) -> None:
    text = PROBE.read_text().replace(
        "{v4.5: copy, v4.5+6d0a07e: reuse, v4.6: reuse, v6.9: copy}", keys
    )
    with pytest.raises(ScenarioError, match=re.escape(message)) as info:
        parse_scenario(text, "t.yaml")
    assert str(info.value).startswith("t.yaml:") and "\n" not in str(info.value)


def test_mthp_config_before_6_8_is_a_located_error() -> None:
    """hugepages-<size>kB/enabled exists from 6.8 (19eaf44954df): a 6.7 machine cannot have it."""
    text = PROBE.read_text().replace(
        "processes: [P]", "config: {mthp: {64K: always}}\nprocesses: [P]"
    )
    scenario = parse_scenario(text, "t.yaml")
    assert run_scenario(scenario, "6.8").steps
    with pytest.raises(ScenarioError, match=r"^t\.yaml:\d+:\d+: expected no mthp on 6\.7"):
        run_scenario(scenario, "6.7")


@pytest.mark.parametrize("kernel", ["4.5", "6.1", "6.18"])
def test_a_write_pin_dirties_the_page_not_the_pte(kernel: str) -> None:
    """follow_page_pte() with FOLL_TOUCH|FOLL_WRITE calls set_page_dirty(page) and leaves the
    PTE's dirty bit alone (4.5.0 and 6.1.20 mm/gup.c)."""
    k = Kernel(kernel, selfcheck=True)
    k.thp_enabled = "never"
    p = k.spawn()
    addr = p.mmap(4096)
    p.write(addr, b"x")
    table = p.mm.pmds[addr >> 21]
    table.bits[(addr >> 12) & 511] &= pte_without(PTE_DIRTY)  # as after writeback: clean, writable
    pfn = p.translate(addr)
    k.frames.flags[pfn] &= flags_without(PG_dirty)
    p.get_user_pages(addr, 4096, write=True)
    assert not table.bits[(addr >> 12) & 511] & PTE_DIRTY
    assert k.frames.flags[pfn] & PG_dirty


KNOB = """name: a sysfs knob written
kernels: ["{before}", "{first}"]
processes: [P]
steps:
  - op: set
    {knob}: {value}
    expect: {{outcome: {{"{before}": ENOENT, "{first}": ok}}}}
"""


@pytest.mark.parametrize(
    ("knob", "value", "before", "first"),
    [
        ("max_ptes_swap", 32, "4.7", "4.8"),  # 4.7.4 mm/huge_memory.c: none; 4.9.0 khugepaged.c
        ("ksm_use_zero_pages", "true", "4.10", "4.11"),  # 4.9.0 mm/ksm.c: none; 4.13.4: KSM_ATTR
        ("ksm_max_page_sharing", 2, "4.12", "4.13"),  # 4.9.0: none; 4.13.4: KSM_ATTR
        ("max_ptes_shared", 32, "5.7", "5.8"),  # 5.7.14 mm/khugepaged.c: none; 5.8.1: the attr
        ("mthp", "{64K: always}", "6.7", "6.8"),  # 6.6.9: no hugepages-<size>kB; 6.8.0
    ],
)
def test_a_knob_a_release_lacks_is_enoent(
    knob: str, value: object, before: str, first: str
) -> None:
    """Writing a sysfs file a release does not have fails with ENOENT there and works from the
    release that added it (the attribute tables read in the trees named per case)."""
    text = KNOB.format(knob=knob, value=value, before=before, first=first)
    scenario = parse_scenario(text, "t.yaml")
    for kernel in (before, first):
        assert run_scenario(scenario, kernel).passed, kernel


@pytest.mark.parametrize("kernel", ["4.5", "4.19.0", "6.18"])
@pytest.mark.parametrize("option", ["swap", "transparent_hugepage", "soft_dirty"])
def test_a_build_option_every_release_has_is_accepted(kernel: str, option: str) -> None:
    """CONFIG_SWAP, CONFIG_TRANSPARENT_HUGEPAGE (2.6.38) and CONFIG_MEM_SOFT_DIRTY (3.11) exist
    in every release from 4.5 (4.5.0 and 6.18.2 mm/Kconfig, init/Kconfig): off is a valid
    build of each, never an error."""
    text = PROBE.read_text().replace(
        "processes: [P]", f"config: {{{option}: false}}\nprocesses: [P]"
    )
    scenario = parse_scenario(text, "t.yaml")
    runner = Runner(scenario, kernel)
    field = {"swap": "swap", "transparent_hugepage": "thp", "soft_dirty": "soft_dirty"}[option]
    assert getattr(runner.k.config, field) is False  # the build option reached the kernel
    results = [runner.run_step(step) for step in scenario.steps]
    if option != "transparent_hugepage":  # the probe reads neither swap nor soft-dirty bits
        assert all(r.passed for r in results)


EVERY_RELEASE = [str(r) for r in mainline_releases()] + ["4.19.0", "5.10.7", "6.4.13"]


@pytest.mark.parametrize("release", EVERY_RELEASE)
def test_the_probe_runs_on_every_release(release: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`run --kernel R` for each release 4.5 .. 6.18 (and stable ones): the probe's per-release
    expectations, derived in its description, hold, and the JSON names the policy in force."""
    assert main(["run", str(PROBE), "--kernel", release, "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert (run["kernel"], run["policy"]) == (release, resolve(release).policy_id)
