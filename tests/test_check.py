"""`cowlab check` finds the historical COW bugs by itself, on the kernels that had them and not
on those that fixed them, each with a shortest counterexample that replays as a scenario.

What each bug is and where it lives is from the kernel's history (the issue's list, the
commits cited in examples/ and docs/kernels.md); the programs are the search's own. A search
result is cached per (kernel, depth): each kernel is searched once for the whole module.
"""

from __future__ import annotations

import io
import json
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import cache, partial
from pathlib import Path
from typing import Any, cast

import pytest

from cowlab.check import cli as check_cli
from cowlab.check import patch as patch_module
from cowlab.check import report as report_module
from cowlab.check import search as search_module
from cowlab.check.alphabet import letters, root_parts, roots
from cowlab.check.canonical import state_key
from cowlab.check.corpus import Verdicts, expected_breaks, scenario_files
from cowlab.check.counterexample import group, to_yaml
from cowlab.check.patch import Patch, PatchError, load_change, read_patch, register
from cowlab.check.properties import PROPERTIES, Property
from cowlab.check.search import (
    Expander,
    Finding,
    Outcome,
    Program,
    Stats,
    Track,
    _judged,
    _root,
    definitions,
    differing,
    listen,
    merged,
    policy_differences,
    recording,
    run_program,
    search,
    search_kernels,
)
from cowlab.cli import main
from cowlab.policy import timeline
from cowlab.policy.base import Policy
from cowlab.policy.timeline import all_policies, resolve
from cowlab.scenario.loader import load_scenario, parse_scenario
from cowlab.scenario.runner import Runner, run_scenario

CORRECTNESS = ("pin_coherence", "cow_isolation", "no_leak", "consistency", "no_page_leak")


@cache
def searched(kernel: str, depth: int) -> Outcome:
    return search(kernel, depth)


def found(kernel: str, depth: int, prop: str, *letters: str) -> list[Finding]:
    """The findings of `prop` whose program has letters containing each of `letters`."""
    return [
        f
        for f in searched(kernel, depth).findings
        if f.prop == prop and all(any(x in name for name in f.program.names) for x in letters)
    ]


def replays(finding: Finding) -> bool:
    """The counterexample, written as a scenario file, passes `cowlab run` on its kernel: the
    property breaks at its last step there."""
    (ce,) = group([finding])
    scenario = parse_scenario(to_yaml(ce, 0, "cow"), "<counterexample>")
    return run_scenario(scenario, finding.kernel).passed


# --- the seed: RDMA memory registered on a THP, write-protected, then written ---------------


def test_seed_pmd_mapped_thp_loses_pin_coherence_on_4_5_only() -> None:
    """4.5.0 copies a PMD-mapped THP whose page_count the pin raised (do_huge_pmd_wp_page);
    6d0a07edd17c reuses it (page_trans_huge_mapcount 1)."""
    bad = found("v4.5", 3, "pin_coherence", "R/W longterm", "write-protects", "writes")
    assert bad and replays(bad[0])
    assert any("do_huge_pmd_wp_page" in str(f.signature) for f in bad)
    assert not found("v4.5+6d0a07e", 3, "pin_coherence", "R/W longterm", "write-protects")


def test_seed_pte_mapped_thp_loses_pin_coherence_on_4_5_only() -> None:
    """4.5.0's reuse_swap_page refuses every THP subpage: a PTE-mapped THP's pinned subpage is
    copied on write; the fix reuses it."""
    bad = found("v4.5", 3, "pin_coherence", "R/W longterm", "PTE-maps", "writes")
    assert bad and replays(bad[0])
    assert not found("v4.5+6d0a07e", 3, "pin_coherence", "R/W longterm", "PTE-maps")


# --- a pinned page and fork ------------------------------------------------------------------


def letter_before(f: Finding, first: str, then: str) -> bool:
    """Whether the program has a letter containing `first` before one containing `then`."""
    names = f.program.names
    at = [i for i, name in enumerate(names) if first in name]
    return bool(at) and any(then in name for name in names[at[0] + 1 :])


@pytest.mark.parametrize(("kernel", "has_it"), [("v4.5", True), ("v5.8", True), ("v5.9", False)])
def test_fork_while_pinned_until_5_9(kernel: str, has_it: bool) -> None:
    """Until 5.9's 70e806e4e645 fork shares a pinned page with the child (cow_isolation) and
    the parent's next store copies it away from the pin (pin_coherence)."""
    shared = [
        f for f in found(kernel, 3, "cow_isolation") if letter_before(f, "R/W longterm", "forks")
    ]
    moved = [
        f
        for f in found(kernel, 3, "pin_coherence", "writes")
        if letter_before(f, "R/W longterm", "forks")
    ]
    assert bool(shared) == has_it and bool(moved) == has_it
    if has_it:
        assert replays(shared[0]) and replays(moved[0])


# --- read-only pins: 5.9-5.18 -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "has_it"), [("v5.8", False), ("v5.9", True), ("v5.18", True), ("v5.19", False)]
)
def test_ro_pin_of_a_page_fork_shared(kernel: str, has_it: bool) -> None:
    """A R/O long-term pin of a page fork shared, then the process writes: 5.8 broke COW when
    pinning (17839856fd58); 5.9-5.18 copy on the write (page_count) and the pin keeps the old
    page; 5.19 unshares when pinning (PageAnonExclusive, COW fixes part 2)."""
    bad = [
        f
        for f in found(kernel, 3, "pin_coherence", "R/O longterm", "writes")
        if f.program.names[0].endswith("write pages 0-1, fork")  # an anonymous page, shared
    ]
    assert bool(bad) == has_it
    if has_it:
        assert replays(bad[0])


@pytest.mark.parametrize(("kernel", "has_it"), [("v5.9", True), ("v5.18", True), ("v5.19", False)])
def test_write_protected_pinned_page_5_9_to_5_18(kernel: str, has_it: bool) -> None:
    """The seed's loss again (O_DIRECT and RDMA alike): a pinned page write-protected by
    mprotect is copied by 5.9-5.18's page_count rule, reused by 5.19 (still exclusive)."""
    bad = found(kernel, 3, "pin_coherence", "R/W", "write-protects", "writes")
    assert bool(bad) == has_it


# --- from fork: Kirill's anon_vma case and CVE-2020-29374 ---------------------------------


def test_kirill_anon_vma_case_on_the_early_review_version_only() -> None:
    """The early version of 6d0a07edd17c moves a THP whose halves parent and child map to the
    child's anon_vma: the rmap walk loses the parent (consistency)."""
    bad = found("v4.5+6d0a07e-early", 3, "consistency", "fork", "drops", "writes")
    assert bad and replays(bad[0])
    assert not found("v4.5+6d0a07e", 3, "consistency")


def reused_under_a_ro_reference(kernel: str, root: str) -> list[Finding]:
    """cow_isolation findings from `root` where a page was reused for a write while a R/O
    GUP reference (a vmsplice FOLL_GET or a R/O pin) of another process still held it."""
    return [
        f
        for f in found(kernel, 3, "cow_isolation", "R/O", "writes")
        if f.program.names[0].startswith(root)
        and any(verdict == "reuse" for _fn, verdict, *_ in f.signature[2])  # type: ignore[misc]
    ]


@pytest.mark.parametrize(("kernel", "has_it"), [("v4.5", True), ("v5.8", False), ("v5.9", False)])
def test_cve_2020_29374(kernel: str, has_it: bool) -> None:
    """A process's R/O GUP reference sees another's later write (CVE-2020-29374: the child's
    vmsplice reference and the parent's write; the search finds both directions): 4.5-5.7
    reuse the page at page_mapcount 1; 5.8 breaks COW when the reference is taken, 5.9
    copies at page_count 2."""
    bad = reused_under_a_ro_reference(kernel, "map 4K")
    assert bool(bad) == has_it
    if has_it:
        assert any("R/O get" in " ".join(f.program.names) for f in bad)
        assert replays(bad[0])


@pytest.mark.parametrize(
    ("kernel", "has_it"),
    [("v4.5", False), ("v4.6", True), ("v5.8", False), ("v5.9", True), ("v5.18", False)],
)
def test_cve_2020_29374_thp(kernel: str, has_it: bool) -> None:
    """The THP variant: do_huge_pmd_wp_page reused a PMD-mapped THP by mapcount alone
    (page_trans_huge_mapcount, 6d0a07edd17c) whatever GUP references it had, until 5.18's
    3bff7e3f1f16 made it count references; 4.5.0 wanted page_count 1, and 5.8 broke COW
    when the reference was taken."""
    bad = reused_under_a_ro_reference(kernel, "map THP")
    assert bool(bad) == has_it
    if has_it:
        assert replays(bad[0])


def test_nothing_of_these_on_6_18() -> None:
    assert [f for f in searched("v6.18", 3).findings if f.prop in CORRECTNESS] == []


# --- the search itself --------------------------------------------------------------------------


def test_canonical_states_visit_fewer_states_for_the_same_findings() -> None:
    plain, canonical = search("v4.5", 2, canonical=False), searched("v4.5", 2)
    assert canonical.stats.states < plain.stats.states
    assert {f.signature for f in plain.findings} == {f.signature for f in canonical.findings}


# depth 1 without canonical states, every program a state. `cow`, THP on: after `map THP` P
# alone, nothing mapped, 11 letters (write, read, write-protect, PTE-map, two drops, fork, four
# pins); after `write pages 0-1` the read is idle (page 0 mapped): 10; after `fork` each of P
# and C1 has 10 (write, write-protect, PTE-map, two drops, four pins, exit; the read idle,
# fork at MAX_PROCS): 20; 41, twice (THP off). `full` adds a swap-out and a MADV_MERGEABLE
# per process and khugepaged, a THP split and ksmd per program, and no read is idle:
# 16 + 16 + 29, twice.
DEPTH_1_PROGRAMS = {"cow": 2 * (11 + 10 + 20), "full": 2 * (16 + 16 + 29)}


@pytest.mark.parametrize(
    ("kernel", "alphabet"), [("v4.5", "cow"), ("v6.18", "cow"), ("v5.10", "full")]
)
def test_programs_counted_from_the_state_graph_are_those_a_plain_search_visits(
    kernel: str, alphabet: str
) -> None:
    """Without canonical states every program is a state; the canonical search counts them
    from its graph (Graph.programs) without running them, exactly: a state decides what may
    follow it."""
    plain = search(kernel, 2, alphabet, canonical=False)
    counted = search(kernel, 2, alphabet, count_programs=True)
    assert plain.stats.depth_states[0] == DEPTH_1_PROGRAMS[alphabet]
    assert counted.stats.programs == plain.stats.depth_states
    assert counted.stats.states < plain.stats.states


def test_a_joint_search_counts_each_kernel_programs_as_its_own() -> None:
    joint = search_kernels(["v4.5", "v6.18"], 2, count_programs=True)
    for kernel in ("v4.5", "v6.18"):
        assert joint[kernel].stats.programs == search(kernel, 2, count_programs=True).stats.programs


def test_programs_counted_over_too_coarse_a_state_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    """The count breaks where states that differ in what may follow are taken as one: here
    only the live processes and pins kept (a pinned region's page situation dropped)."""

    def coarse(runner: Runner, region: object, scans: bool) -> bytes:
        live = sorted(name for name, p in runner.procs.items() if p.alive)
        return repr((len(live), len(runner.k.pins))).encode()

    monkeypatch.setattr(search_module, "state_key", coarse)
    counted = search("v6.18", 2, count_programs=True)
    assert counted.stats.programs != search("v6.18", 2, canonical=False).stats.depth_states


def test_findings_are_shortest_first() -> None:
    """Breadth first: no finding of a signature is longer than a program that breaks the same
    property the same way at a smaller depth."""
    shallow = {f.signature: len(f.program.names) for f in searched("v4.5", 2).findings}
    for f in searched("v4.5", 3).findings:
        if f.signature in shallow:
            assert len(f.program.names) == shallow[f.signature]


def test_a_joint_search_in_parts_is_each_kernel_own_search() -> None:
    """search_kernels runs a letter once for the kernels whose policies agree on what it read,
    here from each part of the roots (THP on, THP off) apart; each kernel's parts merged are
    still its own search: the same states, programs and findings in the same order. 5.8
    differs from 4.5 in GUP breaking COW on a read (17839856fd58), 5.9 from 5.8 in do_wp_page's
    reuse (09854ba94c6a) and fork's copy of pinned pages (70e806e4e645), 6.18 from all three
    in how folios count their mappings: a run shared where they differ would give 6.18 a 4.5
    machine, whose counters then fail `consistency`."""
    kernels = ["v4.5", "v5.8", "v5.9", "v6.18"]
    parts = [search_kernels(kernels, 2, part=part) for part in range(len(root_parts()))]
    for kernel in kernels:
        joint, alone = merged([part[kernel] for part in parts]), searched(kernel, 2)
        assert joint.stats.depth_states == alone.stats.depth_states
        assert joint.stats.runs == alone.stats.runs
        assert _findings(joint) == _findings(alone)


def test_merged_parts_count_the_programs_of_all_roots() -> None:
    """The walks from each part's roots add up to those from all roots: a walk starts at one
    root, and no state of one part is one of another's (alphabet.root_parts)."""
    one = partial(search_kernels, ["v6.18"], 2, count_programs=True)
    parts = [one(part=part)["v6.18"] for part in range(len(root_parts()))]
    assert merged(parts).stats.programs == one()["v6.18"].stats.programs


KERNELS = tuple(all_policies())
BEFORE_5_19 = KERNELS[: KERNELS.index("v5.19")]  # all_policies() is in release order


def _met(name: str, kernels: tuple[str, ...] = KERNELS) -> list[tuple[str, ...]]:
    """The kernels of each node the joint search goes on from after the root `name`."""
    first = next(r for r in roots() if r.name == name)
    tracks = {k: Track(k) for k in kernels}
    return [n.kernels for n in _root(first, tracks, partial(state_key, scans=False))]


def test_kernels_that_part_at_a_root_and_meet_again_go_on_together() -> None:
    """Kernels whose policies define something a root read otherwise run it apart; those that
    reach one canonical state go on as one node. By hand: a store to two pages of a VM_NOHUGEPAGE
    region maps two small anonymous pages, marked PG_anon_exclusive from 5.19 on (6c287605fd56)
    and not before: two states. Fork then shares them read-only with the child, mapcount and
    refcount 2 each, and clears PG_anon_exclusive (5.19 on; never set before): one state for
    every kernel, though they run fork apart (5.8 on copies pinned pages, 70e806e4e645)."""
    after = KERNELS[len(BEFORE_5_19) :]
    assert _met("map 4K, write pages 0-1") == [BEFORE_5_19, after]
    assert _met("map 4K, write pages 0-1, fork") == [KERNELS]


def test_kernels_that_part_at_a_letter_and_meet_again_go_on_together() -> None:
    """After fork shared pages 0-1, the parent's store to page 0 copies it on every kernel:
    4.5 by its mapcount 2, 5.9 by its refcount 2, 5.19 as it is not PG_anon_exclusive and its
    refcount is 2 (do_wp_page's rule differs, so they run the store apart). The copy is
    PG_anon_exclusive from 5.19 on: the kernels go on as two nodes, not one per rule."""
    kernels = ("v4.5", "v5.9", "v5.19", "v6.18")
    tracks = {k: Track(k) for k in kernels}
    keyed = partial(state_key, scans=False)
    first = next(r for r in roots() if r.name == "map 4K, write pages 0-1, fork")
    (node,) = _root(first, tracks, keyed)
    base = run_program(node.kernels[0], node.program)
    store = next(x for x in letters(["P", "C1"], [], "cow") if x.name == "P writes page 0")
    seen = {k: t.seen for k, t in tracks.items()}
    expander = Expander(tracks, "cow", tuple(PROPERTIES), keyed, seen, remember=False)
    rans = expander.runs(node.program, node.kernels, store, base, True)
    nodes = list(_judged(node, node.program.then(store), rans, tracks))
    assert [n.kernels for n in nodes] == [("v4.5", "v5.9"), ("v5.19", "v6.18")]


def test_a_letter_property_is_shared_only_by_kernels_that_agree_on_its_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a letter breaks (no_unnecessary_copy, judged per letter) is read with the policy of
    the kernel that ran it, so its reads decide which kernels take the verdict, as the state's
    properties' do. By hand: a stand-in that reads reuses_ksm_page (True up to 5.8, False from
    5.9: no letter of the cow alphabet reads it, so the two run every root letter alike) breaks
    at every letter, saying what it read: each kernel's finding tells its own value."""

    def reads_ksm(runner: Runner) -> list[str]:
        return [f"reuses_ksm_page={runner.k.policy.reuses_ksm_page}"]

    stand_in = Property("no_unnecessary_copy", "performance", reads_ksm)
    monkeypatch.setitem(PROPERTIES, "no_unnecessary_copy", stand_in)
    joint = search_kernels(["v5.8", "v5.9"], 1, wanted=("no_unnecessary_copy",))
    for kernel, value in (("v5.8", True), ("v5.9", False)):
        problems = {f.problem for f in joint[kernel].findings}
        assert problems == {f"reuses_ksm_page={value}"}


def _account(outcome: Outcome) -> tuple[object, ...]:
    stats = outcome.stats
    return (_findings(outcome), stats.states, stats.runs, stats.depth_states, stats.programs)


@pytest.mark.parametrize(("kernels", "alphabet"), [(["v4.5", "v6.18"], "cow"), (["v5.10"], "full")])
def test_a_search_spread_over_a_pool_is_the_search_made_here(
    kernels: list[str], alphabet: str
) -> None:
    """The frontier's chunks expanded by two processes, judged here in the frontier's order:
    the same states, runs, findings and programs as one process makes (each worker remembers
    only the states it met, so it judges some states' properties again: the same answers)."""
    here = search_kernels(kernels, 2, alphabet, count_programs=True)
    with ProcessPoolExecutor(2) as pool:
        spread = search_kernels(kernels, 2, alphabet, count_programs=True, pool=pool, workers=2)
    for kernel in kernels:
        assert _account(spread[kernel]) == _account(here[kernel])
        assert spread[kernel].findings or kernel != "v4.5"  # 4.5 breaks pin coherence by 2


def test_a_search_spread_over_a_dask_cluster_is_the_search_made_here() -> None:
    distributed = pytest.importorskip("distributed")
    here = search_kernels(["v4.5"], 2)["v4.5"]
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        pool = client.get_executor(pure=False)
        assert _account(search_kernels(["v4.5"], 2, pool=pool, workers=2)["v4.5"]) == _account(here)


def test_a_search_spread_over_the_threads_of_one_worker_is_the_search_made_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Dask worker runs its tasks in threads, all of one process's expand_chunk: a chunk at
    a time (the drivers of the worker's Expander note what each run reads, and listen empties
    them), so no run agrees on another's reads. Threads switched as often as they can be; the
    worker's memory this process's for the test only."""
    monkeypatch.setattr(search_module, "_EXPANDERS", {})
    kernels = ["v4.5", "v5.9", "v6.18"]
    here = search_kernels(kernels, 2)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        with ThreadPoolExecutor(4) as pool:
            spread = search_kernels(kernels, 2, pool=pool, workers=4)
    finally:
        sys.setswitchinterval(interval)
    for kernel in kernels:
        assert _account(spread[kernel]) == _account(here[kernel])


def test_a_worker_keeps_one_search_and_forgets_states_past_its_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker's memory of states' properties is a cache: emptied past KNOWN_CAP states the
    search is the same; a new search's chunks drop the last one's expander (a long-lived Dask
    worker would otherwise keep every search it served)."""
    monkeypatch.setattr(search_module, "_EXPANDERS", {})
    monkeypatch.setattr(search_module, "KNOWN_CAP", 20)
    monkeypatch.setattr(search_module, "CHUNK", 1)  # a chunk is a node: at most 20 letters
    here = search_kernels(["v6.18"], 2)["v6.18"]
    with ThreadPoolExecutor(1) as pool:
        spread = search_kernels(["v6.18"], 2, pool=pool)["v6.18"]
        assert _account(spread) == _account(here)
        (expander,) = search_module._EXPANDERS.values()
        assert 0 < sum(map(len, expander.known.values())) <= 20 + 20  # one chunk past the cap
        search_kernels(["v4.5"], 1, pool=pool)
    assert [spec[0] for spec, _patch in search_module._EXPANDERS] == [("v4.5",)]


def _document(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    *extra: str,
    kernels: tuple[str, ...] = ("--kernel", "v4.5"),
    depth: str = "2",
) -> dict[str, Any]:
    """`cowlab check`'s JSON document, but its seconds and its directory."""
    out = tmp_path / "-".join(extra).replace(":", "").replace("/", "")
    argv = ["check", *kernels, "--depth", depth, "--no-corpus", "--json", "--out"]
    main([*argv, str(out), *extra])
    doc = json.loads(capsys.readouterr().out)
    doc.pop("seconds")
    for stats in doc["stats"].values():
        stats.pop("seconds")
    return cast(dict[str, Any], json.loads(json.dumps(doc).replace(str(out), "OUT")))


def test_check_of_fewer_kernels_than_jobs_spreads_each_search(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One kernel on three processes: each part's search spread over the pool (_check_all);
    the same document as one process makes, but the seconds."""
    spread = _document(tmp_path, capsys, "--jobs", "3")
    assert spread == _document(tmp_path, capsys, "--jobs", "1")


def test_a_patch_spread_over_the_pool_is_searched_as_in_one_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --policy patch beside its base, two kernels on three processes: the workers expand
    the patched kernel's states with the patch (each learns it), as one process does; the
    patch brings back CVE-2020-29374's break, found in both."""
    patch = ("--policy", f"{PATCHES / 'reuse_by_mapcount.py'}:ReuseByMapcount", "--base")
    kernels = (*patch, "v6.18", "--no-live")
    spread = _document(tmp_path, capsys, "--jobs", "3", kernels=kernels, depth="3")
    assert spread == _document(tmp_path, capsys, "--jobs", "1", kernels=kernels, depth="3")
    assert spread["patch"]["breaks"]


def test_check_on_a_dask_cluster_spreads_each_search(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--scheduler without --campaign: the searches' chunks run on the cluster's workers."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        spread = _document(tmp_path, capsys, "--scheduler", cluster.scheduler_address)
        assert "expand_chunk" in cluster.scheduler.task_prefixes  # the workers expanded it
    assert spread == _document(tmp_path, capsys, "--jobs", "1")


def test_a_patch_on_a_dask_cluster_is_searched_as_in_one_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--policy with --scheduler: the patch goes to the cluster's worker processes as its text
    (Patch.source), each registers it and expands the patched kernel's states with it; the
    same document as one process makes, CVE-2020-29374's break found in both."""
    distributed = pytest.importorskip("distributed")
    patch = ("--policy", f"{PATCHES / 'reuse_by_mapcount.py'}:ReuseByMapcount", "--base")
    kernels = (*patch, "v6.18", "--no-live")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        spread = _document(tmp_path, capsys, "--scheduler", address, kernels=kernels, depth="3")
        assert "expand_chunk" in cluster.scheduler.task_prefixes
    assert spread == _document(tmp_path, capsys, "--jobs", "1", kernels=kernels, depth="3")
    assert spread["patch"]["breaks"]


def test_merged_parts_come_breadth_first() -> None:
    """The search from all roots meets depth 2 of every part before depth 3 of any: merged
    orders findings by depth, then part, and keeps a signature's shallowest program even
    when a later part found it."""

    def finding(sig: str, letters: int) -> Finding:
        return Finding("v4.5", "no_leak", Program(("x",) * letters, ()), "-", (sig,))

    thp = Outcome([finding("a", 2), finding("b", 3)], Stats(3, 5, 1.0, [1, 2]))
    small = Outcome([finding("c", 2), finding("b", 2)], Stats(4, 6, 2.0, [2, 2, 1]))
    out = merged([thp, small])
    assert [(f.signature, len(f.program.names)) for f in out.findings] == [
        (("a",), 2),
        (("c",), 2),
        (("b",), 2),
    ]
    assert (out.stats.states, out.stats.runs, out.stats.depth_states) == (7, 11, [3, 4, 1])


def _findings(outcome: Outcome) -> list[tuple[object, ...]]:
    return [(f.prop, f.program, f.problem, f.signature) for f in outcome.findings]


def test_the_root_parts_hold_every_root_once() -> None:
    """A root in no part would never be searched; one in two would be searched twice."""
    names = [r.name for part in root_parts() for r in part]
    assert sorted(names) == sorted(r.name for r in roots()) and len(set(names)) == len(names)


def test_policy_differences() -> None:
    assert policy_differences("v4.5", "v4.5") == set()
    assert "gup_breaks_cow_on_read" in policy_differences("v5.7", "v5.8")


def test_policies_differ_below_a_shared_definition() -> None:
    """Two policies whose decision is the same method calling super() into different older
    rules decide differently: a letter that reads it may not be shared between them."""

    class Old:
        def decide(self) -> int:
            return 1

    class Older:
        def decide(self) -> int:
            return 2

    class Later:
        def decide(self) -> int:
            return super().decide()  # type: ignore[misc]

    a = type("A", (Later, Old), {"changes": (Later, Old)})
    b = type("B", (Later, Older), {"changes": (Later, Older)})
    assert a().decide() != b().decide()
    assert differing(a, b) == {"decide"}
    assert differing(a, type("A2", (Later, Old), {"changes": (Later,)})) == set()


# --- the command -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--depth", "-1"], "--depth: expected an integer of 0 or more, got '-1'"),
        (["--jobs", "0"], "--jobs: expected an integer of 1 or more, got '0'"),
        (["--policy", "x.py:Y"], "--policy and --base go together"),
        (["--policy", "nothing.py:Y", "--base", "6.18"], "no file nothing.py"),
        (["--policy", "examples/policies/exclusive_first.py", "--base", "6.18"], "FILE.py:NAME"),
        (["--kernel", "9.9"], "unknown kernel"),
        (["--corpus", "no-such-dir"], "no corpus directory"),
        (["--out", "README.md"], "--out: README.md: not a directory"),
        (["--out", "README.md/sub"], "--out: README.md/sub: not a directory"),
        (["--junit", "no-such-dir/x.xml"], "--junit: no-such-dir/x.xml: expected a file"),
        (["--junit", "examples"], "--junit: examples: expected a file"),
        (["--json", "--tap"], "not allowed with argument --json"),
    ],
)
def test_bad_arguments_one_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_check_a_kernel_table_and_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Depth 2 on 4.5: the fork-while-pinned break is found and expected by the corpus
    (examples/check/fork_while_pinned.yaml), so the run passes; its file replays."""
    out = tmp_path / "out"
    code = main(["check", "--kernel", "v4.5", "--depth", "2", "--out", str(out), "--jobs", "1"])
    text = capsys.readouterr().out
    assert text.startswith("kernel ") and "cow_isolation" in text.splitlines()[0]
    row = next(line for line in text.splitlines() if line.startswith("v4.5 "))
    assert "!" not in row and code == 0
    files = sorted(out.glob("cow_isolation-*.yaml"))
    assert files and main(["run", str(files[0]), "--kernel", "v4.5"]) == 0


# --- a proposed patch ---------------------------------------------------------------------------

PATCHES = Path(__file__).resolve().parent.parent / "examples" / "policies"


def test_a_patch_that_brings_cve_2020_29374_back_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """do_wp_page trusting the mapcount on 6.18: a process's R/O GUP reference sees another's
    write again (cow_isolation, no_leak), which 6.18 keeps."""
    spec = f"{PATCHES / 'reuse_by_mapcount.py'}:ReuseByMapcount"
    argv = ["check", "--policy", spec, "--base", "6.18", "--no-corpus", "--no-live"]
    code = main([*argv, "--out", str(tmp_path), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    assert {"cow_isolation", "no_leak"} <= set(doc["patch"]["breaks"])
    assert doc["kernels"]["v6.18"]["cow_isolation"]["verdict"] == "holds"


@pytest.fixture
def patch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The patched kernels this test registers are forgotten after it."""
    monkeypatch.setattr(patch_module, "_REGISTERED", {})
    monkeypatch.setattr(timeline, "PATCHED", dict(timeline.PATCHED))
    monkeypatch.setattr(patch_module, "PATCHED", timeline.PATCHED)


def _answer_patch(tmp_path: Path, answer: int) -> Patch:
    path = tmp_path / "answer.py"
    path.write_text(
        f"from cowlab.policy.base import Policy\n\nclass Answer(Policy):\n    answer = {answer}\n"
    )
    return read_patch(f"{path}:Answer", "6.18")


def test_a_worker_learns_a_patch_from_its_text_without_the_file(
    tmp_path: Path, patch_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Dask worker in another directory or on another machine has no FILE.py: the patch's
    text is what it registers. Once per patch and process, however many tasks bring it."""
    patch = _answer_patch(tmp_path, 1)
    (tmp_path / "answer.py").unlink()
    loads: list[str] = []
    load = patch_module.load_change
    monkeypatch.setattr(patch_module, "load_change", lambda p: loads.append(p.spec) or load(p))
    assert register(patch) == register(patch) == "v6.18+Answer"
    assert resolve("v6.18+Answer").policy().answer == 1 and len(loads) == 1


def test_an_edited_patch_is_learned_anew(tmp_path: Path, patch_registry: None) -> None:
    """A long-lived worker that knew the patch's first text answers with the edited one (the
    kernel id is the same: BASE+NAME)."""
    register(_answer_patch(tmp_path, 1))
    assert register(_answer_patch(tmp_path, 2)) == "v6.18+Answer"
    assert resolve("v6.18+Answer").policy().answer == 2


BROKEN = """from cowlab.policy.base import Policy


class Broken(Policy):
    def wp_reuse(self, k, vma, pfn):
        return 1 // 0
"""


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_patch_that_raises_in_the_search_is_one_line_at_its_line(
    jobs: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], patch_registry: None
) -> None:
    """The user's code failing at a write fault, in this process or in a pool's worker (its
    traceback comes back as text): one line naming FILE.py:LINE and the error, exit 2."""
    path = tmp_path / "broken.py"
    path.write_text(BROKEN)
    argv = ["check", "--policy", f"{path}:Broken", "--base", "6.18", "--no-corpus", "--no-live"]
    assert main([*argv, "--depth", "1", "--jobs", jobs, "--out", str(tmp_path / "out")]) == 2
    said = "ZeroDivisionError: integer division or modulo by zero"
    line = f"cowlab check: --policy {path}:Broken: {path}:6 (wp_reuse): {said}\n"
    assert capsys.readouterr().err == line  # nothing else: no progress bar off a terminal


@pytest.mark.parametrize(
    ("method", "answer", "expected"),
    [
        ("wp_reuse(self, k, vma, pfn)", "True", "returned True, expected WpDecision"),
        ("wp_reuse(self, k, vma, pfn)", "(True, False, False, (), 'x')", "expected WpDecision"),
        ("mprotect_writable(self, *args)", "'yes'", "returned 'yes', expected bool"),
        ("mprotect_writable(self, *args)", "np.True_", None),
        ("pageout_skips(self, *args)", "(True, 'x')", "expected tuple[bool, Reads, str]"),
        ("pageout_skips(self, *args)", "(True, (), 'x')", None),
        ("fork_must_copy(self, *args)", "[True]", "expected npt.NDArray[np.bool_]"),
    ],
)
def test_a_patch_answering_the_wrong_kind_is_its_error_at_its_line(
    method: str, answer: str, expected: str | None, tmp_path: Path
) -> None:
    """A decision of another kind than Policy's method declares (a bool where do_wp_page
    takes a WpDecision) is the patch's error, named at its method's line; the kinds it
    declares pass (a NumPy bool is a bool)."""
    path = tmp_path / "wrong.py"
    path.write_text(
        "import numpy as np\nfrom cowlab.policy.base import Policy\n\n\nclass Wrong(Policy):\n"
        f"    def {method}:\n        return {answer}\n"
    )
    decide = getattr(load_change(read_patch(f"{path}:Wrong", "6.18")), method.split("(")[0])
    if expected is None:
        decide(object(), None, None, 0)
        return
    with pytest.raises(PatchError) as said:
        decide(object(), None, None, 0)
    assert str(said.value).startswith(f"--policy {path}:Wrong: {path}:6 (")
    assert str(said.value).endswith(expected)


@pytest.mark.parametrize(
    ("method", "called", "expected"),
    [
        ("@staticmethod\n    def soft_dirty_tracking(k, vma)", (None, None), "expected bool"),
        ("@classmethod\n    def has_knob(cls, name)", ("x",), "expected bool"),
    ],
)
def test_a_static_or_class_method_of_a_patch_is_checked_too(
    method: str, called: tuple[object, ...], expected: str, tmp_path: Path
) -> None:
    path = tmp_path / "wrong.py"
    path.write_text(
        "from cowlab.policy.base import Policy\n\n\nclass Wrong(Policy):\n"
        f"    {method}:\n        return 'yes'\n"
    )
    change = load_change(read_patch(f"{path}:Wrong", "6.18"))
    name = method.split("def ")[1].split("(")[0]
    with pytest.raises(PatchError, match=expected):  # through the descriptor it stays
        getattr(change, name)(*called)


def test_a_patch_method_taking_other_arguments_is_refused_where_it_loads(tmp_path: Path) -> None:
    path = tmp_path / "sig.py"
    path.write_text(BROKEN.replace("(self, k, vma, pfn)", "(self, k, vma)"))
    with pytest.raises(PatchError) as said:
        load_change(read_patch(f"{path}:Broken", "6.18"))
    wrong = "(wp_reuse) takes (self, k, vma), expected (self, k, vma, pfn)"
    assert str(said.value) == f"--policy {path}:Broken: {path}:5 {wrong}"


def test_a_checked_patch_method_that_calls_super_stands_on_the_base(
    tmp_path: Path, patch_registry: None
) -> None:
    """search.definitions sees through the answer check to the patch's own super() call: the
    patched kernel's wp_reuse stands on the base's (the chain search.differing compares)."""
    spec = f"{PATCHES / 'exclusive_first.py'}:ExclusiveFirst"
    patched = resolve(register(read_patch(spec, "6.18")))
    chain = definitions(patched.policy, "wp_reuse")
    assert len(chain) >= 2 and chain[1:] == definitions(resolve("6.18").policy, "wp_reuse")


def test_a_patch_answering_the_wrong_kind_in_the_search_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], patch_registry: None
) -> None:
    path = tmp_path / "wrong.py"
    path.write_text(BROKEN.replace("1 // 0", "True"))
    argv = ["check", "--policy", f"{path}:Broken", "--base", "6.18", "--no-corpus", "--no-live"]
    assert main([*argv, "--depth", "1", "--jobs", "2", "--out", str(tmp_path / "out")]) == 2
    said = "(wp_reuse) returned True, expected WpDecision"
    line = f"cowlab check: --policy {path}:Broken: {path}:5 {said}\n"
    assert capsys.readouterr().err == line


@pytest.mark.parametrize(
    ("text", "says"),
    [("x = (\n", ":1: SyntaxError: "), ("import os\nraise RuntimeError('no')\n", ":2 (<module>)")],
)
def test_a_patch_that_cannot_load_is_one_line_at_its_line(
    text: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.py"
    path.write_text(text)
    assert main(["check", "--policy", f"{path}:X", "--base", "6.18", "--no-corpus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cowlab check: --policy {path}:X: {path}{says}") and err.count("\n") == 1


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_is_shown_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off a terminal (a pipe, a file, CI's log) the bar would leave only a blank line, also
    where FORCE_COLOR makes rich take stderr for a terminal."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert report_module.progress(False).disable and report_module.progress(True).disable
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert not report_module.progress(False).disable and report_module.progress(True).disable


def test_a_failure_in_the_patch_keeps_the_notes_that_say_where(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], patch_registry: None
) -> None:
    """A campaign notes which program on which kernel failed (campaign._result): the one line
    says it too."""

    def fails(*_: object) -> int:
        error = PatchError("--policy p.py:P: p.py:3 (wp_reuse) returned 1, expected WpDecision")
        error.add_note("program 7 on v6.18+P")
        raise error

    monkeypatch.setattr(check_cli, "_check_and_report", fails)
    spec = f"{PATCHES / 'exclusive_first.py'}:ExclusiveFirst"
    assert main(["check", "--policy", spec, "--base", "6.18", "--no-corpus", "--no-live"]) == 2
    assert capsys.readouterr().err.endswith("expected WpDecision (program 7 on v6.18+P)\n")


def test_a_harmless_patch_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = f"{PATCHES / 'exclusive_first.py'}:ExclusiveFirst"
    argv = ["check", "--policy", spec, "--base", "6.18", "--no-live", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "the patch breaks nothing v6.18 keeps" in out
    assert "scenarios whose outcome the patch changes: 0" in out


def test_a_recording_policy_notes_each_name_at_its_first_read_after_listen() -> None:
    """Two reads of a knob note it once; a name the policy lacks is noted as it fails (another
    policy may define it), a private one is not (differing never names one); after listen
    nothing is noted until a name is read again."""
    reads: set[str] = set()
    policy = recording(resolve("v4.5").policy(), reads)
    assert policy.double_map and policy.double_map and not policy.anon_exclusive
    assert getattr(policy, "no_such_rule", None) is None and not hasattr(policy, "_private")
    assert reads == {"double_map", "anon_exclusive", "no_such_rule"}
    listen(policy, reads)
    assert reads == set()
    assert policy.double_map and reads == {"double_map"}


def _noting_every_read(policy: Policy, reads: set[str]) -> Policy:
    """The reference: a policy whose every attribute read of an instance notes its name."""

    def note(self: Policy, name: str) -> object:
        reads.add(name)
        return object.__getattribute__(self, name)

    cls = type(policy)
    return type(cls.__name__, (cls,), {"__getattribute__": note})()  # type: ignore[no-any-return]


@pytest.mark.parametrize("kernel", ["v4.5", "v5.8", "v5.11", "v6.18"])
@pytest.mark.parametrize("name", ["swap/pinned_swapout.yaml", "cow/iouring_fork__base.yaml"])
def test_a_run_notes_the_public_names_every_read_would(name: str, kernel: str) -> None:
    """A run's noted names are the public ones among those noted by intercepting every
    attribute read (only a public name can differ between policies: differing), the run's
    verdicts alike; the files pin, fork, write and swap out a page or a THP, so they read the
    decisions of the fault, GUP, fork and reclaim paths."""
    scenario = load_scenario(Path(__file__).resolve().parent.parent / "examples" / name)
    got = []
    for noting in (_noting_every_read, recording):
        runner, reads = Runner(scenario, kernel), set[str]()
        runner.k.policy = noting(runner.k.policy, reads)
        passed = [runner.run_step(step).passed for step in scenario.steps]
        got.append((passed, {n for n in reads if not n.startswith("_")}))
    assert got[0] == got[1] and len(got[0][1]) >= 3  # at least fork's, GUP's and PAE's


def test_corpus_shares_a_run_only_where_no_decision_could_differ() -> None:
    """One expectation on two kernels: 5.8 and 5.9 differ in fork's copying of pinned pages,
    which the run reads (5.8's fork shares the pinned page: P's store copies; 5.9's fork copies
    it for the child: P's store takes no fault); 4.11 and 4.13 differ only in KSM knobs, which
    a program without KSM never reads, so 4.13 takes 4.11's verdict without running."""
    text = """name: t
kernels: [v5.8, v5.9, v4.11, v4.13]
processes: [P]
steps:
  - {op: mmap, proc: P, name: buf, size: 4K}
  - {op: write, proc: P, at: buf, data: x}
  - {op: pin, proc: P, name: mr, at: buf, size: 4K}
  - {op: fork, proc: P, child: C}
  - {op: write, proc: P, at: buf, data: y, expect: {fault: copy}}
"""
    verdicts = Verdicts(parse_scenario(text))
    assert [verdicts.passes(k) for k in ("v5.8", "v5.9", "v4.11", "v4.13")] == [
        True,
        False,
        True,
        True,
    ]
    assert [run[0] for run in verdicts.shared.runs] == ["v5.8", "v5.9", "v4.11"]


def test_corpus_runs_a_kernel_whose_sysfs_files_differ() -> None:
    """A `set` step reads has_knob(), which looks through every change's new_knobs: 4.13 has
    /sys/kernel/mm/ksm/max_page_sharing (4.13.4 mm/ksm.c), 4.11 does not (4.11's mm/ksm.c),
    so the step is ok on 4.13 and ENOENT on 4.11, and 4.11 cannot take 4.13's verdict even
    where the run reads no other attribute the two define differently."""
    text = """name: t
kernels: [v4.13, v4.11]
processes: [P]
steps:
  - op: set
    ksm_max_page_sharing: 2
    expect: {outcome: ok}
"""
    verdicts = Verdicts(parse_scenario(text))
    assert [verdicts.passes(k) for k in ("v4.13", "v4.11")] == [True, False]


def test_corpus_verdicts_come_in_path_order_from_the_shared_pool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The corpus runs in the search's pool, its files in whatever order workers finish them,
    and is reported in path order. A write to a mapped page succeeds, so a step expecting
    EFAULT of it fails on every kernel; a.yaml writes 64 MiB, so b.yaml (4 KiB) ends first.
    Runs: a on v6.18, b on v4.5 and v6.18, c on v4.5 = 4; failed: a, then b's two kernels in
    its kernels: order."""
    steps = (
        "steps:\n  - {op: mmap, proc: P, name: m, size: %s}\n"
        "  - {op: write, proc: P, at: m, data: {fill: 1, size: %s}, expect: {outcome: %s}}\n"
    )
    files = {
        "a.yaml": ("[v6.18]", "64M", "EFAULT"),
        "b.yaml": ("[v4.5, v6.18]", "4K", "EFAULT"),
        "c.yaml": ("[v4.5]", "4K", "ok"),
    }
    for name, (kernels, size, outcome) in files.items():
        head = f"name: {name}\nkernels: {kernels}\nprocesses: [P]\n"
        (tmp_path / name).write_text(head + steps % (size, size, outcome))
    argv = ["check", "--kernel", "v4.5", "--kernel", "v6.18", "--depth", "0", "--jobs", "2"]
    code = main([*argv, "--corpus", str(tmp_path), "--out", str(tmp_path / "out"), "--json"])
    corpus = json.loads(capsys.readouterr().out)["corpus"]
    assert code == 1 and corpus["runs"] == 4
    assert [(Path(f["file"]).name, f["kernel"]) for f in corpus["failed"]] == [
        ("a.yaml", "v6.18"),
        ("b.yaml", "v4.5"),
        ("b.yaml", "v6.18"),
    ]


def test_a_bad_corpus_file_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A scenario the corpus cannot load is reported as `cowlab run` reports it: its file and
    line and what was expected, exit 2 (the worker's ScenarioError reaches the parent whole,
    not as a broken process pool's traceback)."""
    (tmp_path / "bad.yaml").write_text(
        "name: bad\nkernels: [v6.18]\nprocesses: [P]\nsteps:\n  - {op: no_such_op, proc: P}\n"
    )
    argv = ["check", "--kernel", "v6.18", "--depth", "0", "--corpus", str(tmp_path)]
    assert main([*argv, "--out", str(tmp_path / "out"), "--jobs", "2", "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'bad.yaml'}:5:" in err


def test_the_full_alphabet_breaks_nothing_the_corpus_does_not_expect() -> None:
    """Swap-out, KSM (mergeable, ksmd), khugepaged and THP splits - the full alphabet - two deep on
    every kernel: a correctness property breaks only on a kernel where a hand-written scenario
    says the kernel breaks it (as `cowlab check --alphabet full` judges; it found the model's
    KSM blind spot, 576f10c, where this fails)."""
    kernels = list(all_policies())
    corpus = Path(__file__).resolve().parent.parent / "examples"
    expected: set[tuple[str, str]] = set()
    for path in scenario_files(corpus):
        expected |= set(expected_breaks(load_scenario(path), kernels))
    outcomes = search_kernels(kernels, 2, "full")
    unexpected = [
        f"{f.prop} on {k}: {', '.join(f.program.names)}"
        for k, outcome in outcomes.items()
        for f in outcome.findings
        if PROPERTIES[f.prop].kind == "correctness" and (k, f.prop) not in expected
    ]
    assert not unexpected
    assert all(o.stats.states > 100 for o in outcomes.values())  # the search ran
