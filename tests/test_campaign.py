"""Random deep campaigns (check/campaign.py, check/journal.py): delta debugging, the renaming of
processes and pins in a shorter program, determinism (a program depends only on the seed and its
index, so one process, two, a Dask cluster, or a run killed with SIGKILL and resumed find the
same), and the command's options.

Minimisation is checked on programs built by hand around a known story plus letters the story
does not need: the minimised program must be the story, renamed as it numbers its processes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cowlab.check.campaign import (
    Campaign,
    Move,
    Params,
    Play,
    ddmin,
    letter_signature,
    minimise,
    rebind,
    replay,
    run_campaign,
    run_one,
)
from cowlab.check.counterexample import group, write_all
from cowlab.check.journal import Journal, JournalError
from cowlab.check.properties import PROPERTIES
from cowlab.check.search import Finding, violations
from cowlab.cli import main

ALL = tuple(PROPERTIES)


def moves_of(kernel: str, names: list[str], prop: str) -> tuple[list[Move], tuple[object, ...]]:
    """The moves of a program given by its letters' names, and the signature with which its
    last letter breaks `prop` (asserted broken there)."""
    play = Play(kernel, "cow")
    moves = []
    for name in names:
        letter = play.offered()[name]
        moves.append(Move(name, play.apply(letter)))
    assert violations(play.runner, (prop,)), f"{prop} holds after {names}"
    return moves, letter_signature(prop, letter, play.runner)


# --- ddmin and renaming ----------------------------------------------------------------------


def test_ddmin_keeps_exactly_what_the_test_needs() -> None:
    """A test that passes while 3 and 7 are both there: ddmin returns [3, 7]."""
    needed = {3, 7}
    calls = []

    def test(items: list[int]) -> list[int] | None:
        calls.append(items)
        return items if needed <= set(items) else None

    assert ddmin(list(range(10)), test) == [3, 7]
    assert len(calls) == len({tuple(c) for c in calls})  # no candidate tried twice


def test_ddmin_takes_the_part_the_test_says_it_used() -> None:
    """A test that answers with less than it was given (a replay stopping at the break, or
    skipping a letter): ddmin continues from that answer."""

    def test(items: list[int]) -> list[int] | None:
        return [x for x in items if x in (2, 5)] if 5 in items else None

    assert ddmin(list(range(8)), test) == [5]


def test_rebind_renames_and_drops() -> None:
    names = {"P": "P", "C2": "C1", "p3": "p1"}
    assert rebind("C2 writes page 0", names) == "C1 writes page 0"
    assert rebind("fork C2", names) == "fork C1"
    assert rebind("DMA into p3", names) == "DMA into p1"
    assert rebind("P pins pages 0-1 R/W longterm", names) == "P pins pages 0-1 R/W longterm"
    assert rebind("C1 exits", names) is None  # C1's fork was dropped
    assert rebind("unpin p2", names) is None


# --- minimisation ----------------------------------------------------------------------------

SEED_STORY = [
    "map THP, write pages 0-1",
    "P pins pages 0-1 R/W longterm",
    "P write-protects all",
    "P writes page 0",
]


def test_minimise_the_seed_story_among_noise() -> None:
    """4.5.0 copies a pinned, write-protected THP on the write (page_count counts the pin):
    each of the pin, the write-protection and the write is needed; the reads are not."""
    noisy = [SEED_STORY[0], "P reads page 0", SEED_STORY[1], "P reads page 0", *SEED_STORY[2:]]
    moves, sig = moves_of("v4.5", noisy, "pin_coherence")
    program, problem = minimise("v4.5", "cow", moves, "pin_coherence", sig)
    assert program.names == tuple(SEED_STORY)
    assert problem.startswith("pin p1: ")


CVE_STORY = [
    "map 4K, write pages 0-1",
    "fork P",
    "C1 pins pages 0-1 R/O get",
    "C1 drops the lower half",
    "P writes page 0",
]


def test_minimise_renames_the_processes_of_a_shorter_program() -> None:
    """CVE-2020-29374 on 4.5 (tests/test_properties.py): the child's R/O reference, its
    mapping dropped; the parent's write reuses the page. A first child that writes and exits
    is noise; without its fork, the second child is C1 and its pin p1."""
    noisy = [
        "map 4K, write pages 0-1",
        "fork P",
        "C1 writes page 1",
        "fork P",
        "C2 pins pages 0-1 R/O get",
        "C1 exits",
        "C2 drops the lower half",
        "P writes page 0",
    ]
    moves, sig = moves_of("v4.5", noisy, "cow_isolation")
    program, _ = minimise("v4.5", "cow", moves, "cow_isolation", sig)
    assert program.names == tuple(CVE_STORY)
    pins = [s for s in program.steps if s["op"] == "pin"]
    assert [(s["proc"], s["name"]) for s in pins] == [("C1", "p1")]


def test_replay_skips_a_letter_whose_process_exited() -> None:
    """A letter of a process that no longer lives is not what the alphabet offers: skipped."""
    moves, sig = moves_of("v4.5", CVE_STORY, "cow_isolation")
    exits = [moves[0], moves[1], Move("C1 exits"), Move("C1 writes page 1"), *moves[2:]]
    done = replay("v4.5", "cow", exits, "cow_isolation", sig)
    assert done is None  # C1 exited: its pin, its drop are skipped too, nothing breaks


def test_minimised_findings_replay_as_scenarios(tmp_path: Path) -> None:
    """Every finding of a few random programs, minimised and written as a scenario file,
    passes `cowlab run FILE --kernel K`: the property breaks at its last step. Each is
    1-minimal: without any one letter after the root, the program no longer breaks it so."""
    params = Params(0, 20, "cow", ALL)
    findings = [
        Finding("v4.5", f.prop, f.program, f.problem, f.signature)
        for i in range(3)
        for f in run_one("v4.5", params, i, frozenset()).found
        if f.program is not None
    ]
    assert findings
    examples = group(findings)
    write_all(tmp_path, examples, 0, "cow")
    for ce in examples:
        assert main(["run", str(tmp_path / ce.file_name), "--kernel", "v4.5"]) == 0, ce.names
    for f in findings:
        moves, sig = moves_of("v4.5", list(f.program.names), f.prop)
        assert sig == f.signature
        for j in range(1, len(moves)):
            assert replay("v4.5", "cow", moves[:j] + moves[j + 1 :], f.prop, sig) is None


# --- determinism -----------------------------------------------------------------------------


def test_a_program_depends_only_on_seed_and_index() -> None:
    params = Params(7, 12, "cow", ALL)
    assert run_one("v5.8", params, 3, frozenset()) == run_one("v5.8", params, 3, frozenset())
    runs = [run_one("v5.8", params, i, frozenset()) for i in range(4)]
    shapes = {(r.letters, tuple(f.signature for f in r.found)) for r in runs}
    assert len(shapes) > 1  # the indices draw different programs


def test_a_known_signature_is_not_minimised_again() -> None:
    params = Params(0, 20, "cow", ALL)
    ran = run_one("v4.5", params, 0, frozenset())
    assert ran.found and all(f.program is not None for f in ran.found)
    again = run_one("v4.5", params, 0, frozenset(f.signature for f in ran.found))
    assert [f.program for f in again.found] == [None] * len(ran.found)


def campaign_findings(
    tmp_path: Path, name: str, params: Params, programs: int, jobs: int, scheduler: str | None
) -> list[Finding]:
    campaign = Campaign(params, programs, tmp_path / name, jobs, scheduler)
    with Journal(campaign.journal, params) as journal:
        done = run_campaign(["v4.5", "v5.8"], campaign, journal)
    assert done.programs == 2 * programs and not done.interrupted
    return done.findings


def test_one_process_or_two_find_the_same(tmp_path: Path) -> None:
    params = Params(1, 10, "cow", ALL)
    one = campaign_findings(tmp_path, "one.sqlite", params, 6, 1, None)
    two = campaign_findings(tmp_path, "two.sqlite", params, 6, 2, None)
    assert one and one == two
    assert len({(f.kernel, f.signature) for f in one}) == len(one)  # one per signature


def test_dask_local_cluster_finds_what_a_local_run_finds(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    params = Params(1, 10, "cow", ALL)
    local = campaign_findings(tmp_path, "local.sqlite", params, 4, 2, None)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        dask = campaign_findings(tmp_path, "dask.sqlite", params, 4, 2, cluster.scheduler_address)
    assert local and dask == local


# --- the journal -----------------------------------------------------------------------------


def test_a_journal_of_another_campaign_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Journal(path, Params(0, 10, "cow", ALL)).close()
    with pytest.raises(JournalError, match="holds another campaign"):
        Journal(path, Params(1, 10, "cow", ALL))


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cowlab.cli", "check", "--no-corpus", "--depth", "0", *args]


def count(journal: Path, table: str) -> int:
    if not journal.exists():
        return 0
    db = sqlite3.connect(journal)
    try:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.OperationalError:  # the tables are not there yet
        return 0
    finally:
        db.close()


def finished(journal: Path) -> int:
    return count(journal, "programs")


def found(journal: Path) -> int:
    return count(journal, "findings")


def test_killed_and_resumed_finds_what_an_uninterrupted_run_finds(tmp_path: Path) -> None:
    """SIGKILL to the campaign's process group once a finding is recorded, then the same
    command again: it runs only what the journal lacks, and the findings are those of the
    same campaign run without a stop."""
    n, params = 16, Params(2, 10, "cow", ALL)
    journal = tmp_path / "killed.sqlite"
    args = cli("--kernel", "v4.5", "--campaign", str(n), "--seed", "2", "--length", "10")
    args += ["--jobs", "1", "--json", "--journal", str(journal), "--out", str(tmp_path / "o")]
    victim = subprocess.Popen(args, stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not found(journal) and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)  # the command and its pool's worker
    victim.wait()
    assert found(journal) and finished(journal) < n, "killed too late to test a resume"
    resumed = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
    assert resumed.returncode in (0, 1), resumed.stderr
    assert finished(journal) == n
    whole = Campaign(params, n, tmp_path / "whole.sqlite", 1)
    with Journal(whole.journal, params) as j:
        expected = run_campaign(["v4.5"], whole, j).findings
    with Journal(journal, params) as j:
        assert j.findings(["v4.5"]) == expected
    doc = json.loads(resumed.stdout)
    assert {tuple(c["program"]) for c in doc["counterexamples"]} == {
        f.program.names for f in expected
    }


# --- the command -----------------------------------------------------------------------------


def test_campaign_findings_are_in_the_output_and_replay(tmp_path: Path) -> None:
    """At depth 0 the search finds nothing (a root alone breaks no property), so the JSON's
    counterexamples are the campaign's, each a file that replays."""
    out = tmp_path / "out"
    args = cli("--kernel", "v4.5", "--campaign", "3", "--length", "12", "--jobs", "1", "--json")
    done = subprocess.run([*args, "--out", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stderr  # --no-corpus: every break is unexpected
    doc = json.loads(done.stdout)
    params = Params(0, 12, "cow", ALL)
    with Journal(out / "campaign.sqlite", params) as j:
        found = j.findings(["v4.5"])
    assert found
    assert {(c["property"], tuple(c["program"])) for c in doc["counterexamples"]} == {
        (f.prop, f.program.names) for f in found
    }
    for c in doc["counterexamples"]:
        assert main(["run", c["file"], "--kernel", "v4.5"]) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--campaign", "-1"], "--campaign must be 0 or more, got -1"),
        (["--campaign", "1", "--length", "0"], "--length must be 1 or more, got 0"),
        (["--campaign", "1", "--journal", "/nonexistent/j.sqlite"], "no directory /nonexistent"),
    ],
)
def test_bad_campaign_options_are_one_line_exit_2(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--no-corpus", "--kernel", "v4.5", "--depth", "0", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_journal_of_another_seed_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "j.sqlite"
    Journal(journal, Params(5, 30, "cow", ALL)).close()
    argv = ["check", "--no-corpus", "--kernel", "v4.5", "--depth", "0", "--campaign", "1"]
    assert main([*argv, "--journal", str(journal), "--out", str(tmp_path)]) == 2
    assert "holds another campaign (seed 5, length 30" in capsys.readouterr().err
