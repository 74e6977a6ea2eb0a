"""The model's canonical observation, and the minimiser: no live kernel needed."""

from __future__ import annotations

import pytest

from cowlab.live.compare import render_runs
from cowlab.live.model_observe import model_snapshot, models_anon_exclusive
from cowlab.live.randomprog import generate, minimise, parse_ops, to_scenario, to_yaml
from cowlab.policy import POLICIES, Release, Resolved
from cowlab.policy.timeline import PATCHED
from tests.live.helpers import run_model

THP = """
name: thp
processes: [P]
steps:
  - {op: mmap, proc: P, name: buf, size: 2M, align: 2M}
  - {op: madvise, proc: P, at: buf, size: 2M, advice: hugepage}
  - {op: write, proc: P, at: buf, data: "x"}
  - {op: fork, proc: P, child: C}
  - {op: mmap, proc: P, name: small, size: 8K}
  - {op: read, proc: P, at: small, size: 1}
"""


def test_thp_after_fork_and_the_zero_page() -> None:
    runner, regions = run_model(THP)
    spec = [
        (view, runner.procs[p], runner.regions[r], regions.size[r])
        for view, p, r in regions.observed()
    ]
    snap = model_snapshot(runner.k, spec)
    p, c, small = snap.regions["P:buf"], snap.regions["C:buf"], snap.regions["P:small"]
    assert [view for view, _p, _r in regions.observed()] == ["P:buf", "P:small", "C:buf"]
    assert (p[0].folio, p[0].nr, p[0].level, p[0].mapcount) == ("F0", 512, "pmd", 2)
    assert p[5].subpage == 5 and c[5].folio == "F0" and p[0].head == b"x" + bytes(7)
    assert p[0].anon_exclusive is None  # 4.5 has no PG_anon_exclusive
    assert (small[0].folio, small[0].level, small[0].mapcount, small[0].zero) == (
        "Z",
        "pte",
        0,
        True,
    )
    assert small[1].folio is None and small[1].level is None
    assert render_runs(p) == [
        "pages 0: F0[0]/512 pmd mc=2 b'x'",
        "pages 1..511: F0[1..511]/512 pmd mc=2",
    ]


def test_anon_exclusive_is_compared_from_5_19() -> None:
    assert models_anon_exclusive("v6.18") and models_anon_exclusive("v5.19")
    assert not models_anon_exclusive("v5.18") and not models_anon_exclusive("v4.5+6d0a07e")


def test_minimise_keeps_a_failing_core() -> None:
    steps = [{"n": i} for i in range(20)]
    fails = lambda s: {3, 11} <= {x["n"] for x in s}  # noqa: E731
    assert [x["n"] for x in minimise(steps, fails, budget=200)] == [3, 11]


def test_generated_programs_are_valid_scenarios() -> None:
    import random

    rng = random.Random(3)
    for i in range(50):
        steps = generate(rng, ("fork", "exit", "write", "read", "mprotect", "munmap", "mremap",
                               "madvise", "pin", "unpin", "dma"))  # fmt: skip
        assert to_scenario(f"r{i}", steps) is not None


def test_anon_exclusive_follows_the_policy_not_the_id(monkeypatch: pytest.MonkeyPatch) -> None:
    for kernel_id, policy in POLICIES.items():
        assert models_anon_exclusive(kernel_id) == policy.anon_exclusive

    class NoFlag(POLICIES["v6.18"]):  # type: ignore[misc,valid-type]
        id = "v9.9+no-anon-exclusive"
        anon_exclusive = False

    monkeypatch.setitem(PATCHED, NoFlag.id, Resolved(NoFlag.id, Release(6, 18), NoFlag))
    assert not models_anon_exclusive(NoFlag.id)  # a "v9.9" without the flag: not shown
    runner, regions = run_model(THP, NoFlag.id)
    spec = [
        (view, runner.procs[p], runner.regions[r], regions.size[r])
        for view, p, r in regions.observed()
    ]
    pages = model_snapshot(runner.k, spec).regions["P:buf"]
    assert {pg.anon_exclusive for pg in pages} == {None}


def test_steps_are_written_as_safe_dump_writes_them() -> None:
    """to_yaml's fast emitter (libyaml, when PyYAML has it) writes what safe_dump writes."""
    import random

    import yaml

    rng = random.Random(5)
    for i in range(300):
        name = f"random-s5-{i:04d}"
        assert to_yaml(name, []).startswith(yaml.safe_dump({"name": name}, width=100))
        for step in generate(rng, parse_ops(None)):
            want = yaml.safe_dump(step, default_flow_style=True, sort_keys=False, width=10**6)
            assert f"  - {want.strip()}\n" in to_yaml(name, [step])


SWAPPED = """
name: swapped
processes: [P]
steps:
  - {op: mmap, proc: P, name: buf, size: 8K}
  - {op: write, proc: P, at: buf, data: {fill: 1, size: 8K}}
  - {op: swapout, proc: P, at: buf, size: 4K, until: written}
  - {op: swapout, proc: P, at: buf+4K, size: 4K}
"""


def test_a_swap_pte_shows_whether_its_slot_has_a_swap_cache_page() -> None:
    """What mincore() tells live of a swap PTE (6.18 mincore_swap): `until: written` leaves the
    written page in the swap cache, `freed` (the default) frees it."""
    runner, _regions = run_model(SWAPPED, "v6.18")
    snap = model_snapshot(runner.k, [("P:buf", runner.procs["P"], runner.regions["buf"], 8192)])
    written, freed = snap.regions["P:buf"]
    assert written.swapped and freed.swapped
    assert (written.swapcache, freed.swapcache) == (True, False)
