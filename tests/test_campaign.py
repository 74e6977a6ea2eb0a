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

from cowlab.check.alphabet import Letter
from cowlab.check.campaign import (
    Campaign,
    Drawn,
    Move,
    Params,
    Play,
    Signature,
    ddmin,
    draw,
    letter_signature,
    minimise,
    rebind,
    replay,
    run_campaign,
    shrink,
)
from cowlab.check.counterexample import group, write_all
from cowlab.check.journal import Journal, JournalError
from cowlab.check.properties import PROPERTIES
from cowlab.check.search import Finding, violations
from cowlab.cli import main

ALL = tuple(PROPERTIES)


# a letter as the alphabet offers it: its process ("" for none), the op of its last step and
# some of that step's arguments (the tests name no letter, so the alphabet may rename them)
Spec = tuple[str, str, dict[str, object]]


def pick(play: Play, spec: Spec) -> Letter:
    proc, op, args = spec
    hits = [
        x
        for x in play.offered().values()
        if x.proc == proc
        and x.steps[-1]["op"] == op
        and all(x.steps[-1].get(k) == v for k, v in args.items())
    ]
    assert len(hits) == 1, (spec, [x.name for x in hits])
    return hits[0]


def play_story(
    kernel: str, root: str, specs: list[Spec], prop: str
) -> tuple[list[Move], Signature]:
    """The moves of a program (a root, then letters), and the signature with which its last
    letter breaks `prop` (asserted broken there)."""
    play = Play(kernel, "cow")
    letter = play.offered()[root]
    moves = [Move(root, play.apply(letter))]
    for spec in specs:
        letter = pick(play, spec)
        moves.append(Move(letter.name, play.apply(letter)))
    assert violations(play.runner, (prop,)), f"{prop} holds after {moves}"
    return moves, letter_signature(prop, letter, play.runner)


def names(moves: list[Move]) -> tuple[str, ...]:
    return tuple(m.name for m in moves)


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
    renamed = {"P": "P", "C2": "C1", "p3": "p1"}
    assert rebind("C2 writes page 0", renamed) == "C1 writes page 0"
    assert rebind("DMA into p3", renamed) == "DMA into p1"
    assert rebind("P pins pages 0-1 R/W longterm", renamed) == "P pins pages 0-1 R/W longterm"
    assert rebind("C1 exits", renamed) is None  # C1's fork was dropped
    assert rebind("unpin p2", renamed) is None


# --- minimisation ----------------------------------------------------------------------------

READ: Spec = ("P", "read", {})
WRITE: Spec = ("P", "write", {"at": "buf"})
FORK: Spec = ("P", "fork", {})
SEED_ROOT = "map THP, write pages 0-1"
SEED_STORY: list[Spec] = [
    ("P", "pin", {"flavour": "longterm", "write": True}),
    ("P", "mprotect", {"size": "2M"}),  # write-protect all
    WRITE,
]


def test_minimise_the_seed_story_among_noise() -> None:
    """4.5.0 copies a pinned, write-protected THP on the write (page_count counts the pin):
    each of the pin, the write-protection and the write is needed; the reads are not."""
    noisy = [READ, SEED_STORY[0], READ, *SEED_STORY[1:]]
    moves, sig = play_story("v4.5", SEED_ROOT, noisy, "pin_coherence")
    program, problem = minimise("v4.5", "cow", moves, "pin_coherence", sig)
    story, _ = play_story("v4.5", SEED_ROOT, SEED_STORY, "pin_coherence")
    assert program.names == names(story)
    assert problem.startswith("pin p1: ")


CVE_ROOT = "map 4K, write pages 0-1"
CVE_STORY: list[Spec] = [
    FORK,
    ("C1", "pin", {"flavour": "get"}),
    ("C1", "madvise", {"advice": "dontneed", "at": "buf"}),
    WRITE,
]


def test_minimise_renames_the_processes_of_a_shorter_program() -> None:
    """CVE-2020-29374 on 4.5 (tests/test_properties.py): the child's R/O reference, its
    mapping dropped; the parent's write reuses the page. A first child that writes and exits
    is noise; without its fork, the second child is C1."""
    noise: list[Spec] = [FORK, ("C1", "write", {"at": "buf"}), ("C1", "exit", {})]
    second = [FORK, ("C2", "pin", {"flavour": "get"})]
    second.append(("C2", "madvise", {"advice": "dontneed", "at": "buf"}))
    moves, sig = play_story("v4.5", CVE_ROOT, [*noise, *second, WRITE], "cow_isolation")
    program, _ = minimise("v4.5", "cow", moves, "cow_isolation", sig)
    story, _ = play_story("v4.5", CVE_ROOT, CVE_STORY, "cow_isolation")
    assert program.names == names(story)
    pins = [s for s in program.steps if s["op"] == "pin"]
    assert [(s["proc"], s["name"]) for s in pins] == [("C1", "p1")]


def test_replay_skips_a_letter_whose_process_exited() -> None:
    """A letter of a process that no longer lives is not what the alphabet offers: skipped.
    With the child gone before its pin and its drop, the parent's write reuses its own page
    and nothing breaks."""
    moves, sig = play_story("v4.5", CVE_ROOT, CVE_STORY, "cow_isolation")
    play = Play("v4.5", "cow")
    for move in moves[:2]:
        play.apply(play.offered()[move.name])
    exits = Move(pick(play, ("C1", "exit", {})).name)
    assert replay("v4.5", "cow", [*moves[:2], exits, *moves[2:]], "cow_isolation", sig) is None


def test_minimised_findings_replay_as_scenarios(tmp_path: Path) -> None:
    """Every finding of a few random programs, minimised and written as a scenario file,
    passes `cowlab run FILE --kernel K`: the property breaks at its last step. Each is
    1-minimal: without any one letter after the root, the program no longer breaks it so."""
    drawn = first_drawn("v4.5", Params(0, 20, "cow", ALL))
    findings = [Finding("v4.5", r.prop, *shrink("v4.5", "cow", r), r.signature) for r in drawn.raw]
    examples = group(findings)
    write_all(tmp_path, examples, 0, "cow")
    for ce in examples:
        assert main(["run", str(tmp_path / ce.file_name), "--kernel", "v4.5"]) == 0, ce.names
    for f in findings:
        play = Play("v4.5", "cow")
        moves = []
        for name in f.program.names:
            letter = play.offered()[name]
            moves.append(Move(name, play.apply(letter)))
        assert letter_signature(f.prop, letter, play.runner) == f.signature
        for j in range(1, len(moves)):
            shorter = moves[:j] + moves[j + 1 :]
            assert replay("v4.5", "cow", shorter, f.prop, f.signature) is None


def first_drawn(kernel: str, params: Params) -> Drawn:
    """The first of the campaign's programs that breaks something (most of the first ten do)."""
    runs = (draw(kernel, params, i) for i in range(10))
    return next(r for r in runs if r.raw)


# --- determinism -----------------------------------------------------------------------------


def test_a_program_depends_only_on_seed_and_index() -> None:
    params = Params(7, 12, "cow", ALL)
    assert draw("v5.8", params, 3) == draw("v5.8", params, 3)
    runs = [draw("v5.8", params, i) for i in range(4)]
    assert len({r.raw or r.letters for r in runs}) > 1  # the indices draw different programs


# seed 2: most of its first programs of 20 letters break something on v4.5 or v5.8
BUSY = Params(2, 20, "cow", ALL)


def campaign_run(
    tmp_path: Path, name: str, programs: int, jobs: int, scheduler: str | None
) -> tuple[list[Finding], list[tuple[str, int, int, str]]]:
    """The findings of BUSY's first programs on v4.5 and v5.8, and what each program did; each
    signature was minimised once, by the lowest-indexed program that met it, however many
    workers ran them."""
    campaign = Campaign(BUSY, programs, tmp_path / name, jobs, scheduler)
    with Journal(campaign.journal, BUSY) as journal:
        done = run_campaign(["v4.5", "v5.8"], campaign, journal)
        rows = journal.db.execute("SELECT * FROM programs ORDER BY kernel, idx").fetchall()
        query = "SELECT count(*) FROM findings WHERE program IS NOT NULL"
        assert journal.db.execute(query).fetchone()[0] == len(done.findings)
    assert done.programs == 2 * programs and not done.interrupted
    return done.findings, rows


def test_one_process_or_two_find_the_same(tmp_path: Path) -> None:
    one = campaign_run(tmp_path, "one.sqlite", 6, 1, None)
    two = campaign_run(tmp_path, "two.sqlite", 6, 2, None)
    assert one[0] and one == two
    assert len({(f.kernel, f.signature) for f in one[0]}) == len(one[0])  # one per signature


def test_dask_local_cluster_finds_what_a_local_run_finds(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    local = campaign_run(tmp_path, "local.sqlite", 4, 2, None)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        dask = campaign_run(tmp_path, "dask.sqlite", 4, 2, cluster.scheduler_address)
    assert local[0] and dask == local


# --- the journal -----------------------------------------------------------------------------


def test_a_journal_of_another_campaign_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Journal(path, Params(0, 10, "cow", ALL)).close()
    with pytest.raises(JournalError, match="holds another campaign"):
        Journal(path, Params(1, 10, "cow", ALL))


def test_a_smaller_campaign_on_a_larger_ones_journal(tmp_path: Path) -> None:
    """The first 4 programs of a journal of 8 are a campaign of 4: the same findings as a
    campaign of 4 from a fresh journal, with nothing run again."""

    def findings(name: str, programs: int) -> tuple[list[Finding], int]:
        campaign = Campaign(BUSY, programs, tmp_path / name, 2)
        with Journal(campaign.journal, BUSY) as journal:
            done = run_campaign(["v4.5"], campaign, journal)
            return done.findings, len(journal.done)

    large, ran = findings("large.sqlite", 8)
    small, again = findings("large.sqlite", 4)
    assert small == findings("small.sqlite", 4)[0] and ran == again == 8
    assert len(large) > len(small)  # programs 4-7 met a signature 0-3 did not


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
    assert resumed.returncode in (0, 1) and "Traceback" not in resumed.stderr, resumed.stderr
    assert finished(journal) == n
    whole = Campaign(params, n, tmp_path / "whole.sqlite", 1)
    with Journal(whole.journal, params) as j:
        expected = run_campaign(["v4.5"], whole, j).findings
    with Journal(journal, params) as j:
        assert j.findings(["v4.5"], n) == expected
    doc = json.loads(resumed.stdout)
    assert {tuple(c["program"]) for c in doc["counterexamples"]} == {
        f.program.names for f in expected
    }


# Ctrl-C as a terminal sends it: SIGINT to the process group, the command run with SIGINT's
# default handler (a shell running the tests in the background would pass it ignored)
INTERRUPTIBLE = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from cowlab.cli import main; sys.exit(main(sys.argv[1:]))"
)


def test_ctrl_c_prints_what_was_found_so_far(tmp_path: Path) -> None:
    """SIGINT once a finding is in the journal: the command stops within seconds, without a
    traceback, and its table names every finding the journal holds, marked interrupted."""
    journal = tmp_path / "j.sqlite"
    args = cli("--kernel", "v4.5", "--campaign", "500", "--seed", "2", "--length", "20")
    args = [sys.executable, "-c", INTERRUPTIBLE, *args[3:]]
    args += ["--jobs", "2", "--journal", str(journal), "--out", str(tmp_path / "o")]
    command = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while not found(journal) and command.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(command.pid, signal.SIGINT)
    out, err = command.communicate(timeout=30)
    assert command.returncode == 1 and "Traceback" not in err, err
    assert "interrupted: what was found so far" in out
    with Journal(journal, Params(2, 20, "cow", ALL)) as j:
        findings = j.findings(["v4.5"], 500)
        assert findings and len(j.done) < 500
    correct = [f for f in findings if PROPERTIES[f.prop].kind == "correctness"]
    assert all("; ".join(f.program.names) in out for f in correct)  # its UNEXPECTED: lines


# --- the command -----------------------------------------------------------------------------


def test_campaign_findings_are_in_the_output_and_replay(tmp_path: Path) -> None:
    """At depth 0 the search finds nothing (a root alone breaks no property), so the JSON's
    counterexamples are the campaign's, each a file that replays."""
    out = tmp_path / "out"
    args = cli("--kernel", "v4.5", "--campaign", "6", "--length", "12", "--jobs", "1", "--json")
    done = subprocess.run([*args, "--out", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 1 and not done.stderr, done.stderr  # --no-corpus: all unexpected
    doc = json.loads(done.stdout)
    params = Params(0, 12, "cow", ALL)
    with Journal(out / "campaign.sqlite", params) as j:
        found = j.findings(["v4.5"], 6)
    assert found
    assert {(c["property"], tuple(c["program"])) for c in doc["counterexamples"]} == {
        (f.prop, f.program.names) for f in found
    }
    for c in doc["counterexamples"]:
        assert main(["run", c["file"], "--kernel", "v4.5"]) == 0
    # the files and the JSON say the campaign found them, not a search at depth 0
    origins = {c["found_by"] for c in doc["counterexamples"]}
    assert all(o.startswith("campaign seed 0, random program ") for o in origins), origins
    assert all("depth" not in Path(c["file"]).read_text() for c in doc["counterexamples"])
    summary = doc["campaign"]
    assert (summary["programs"], summary["kernels"]) == (6, 1)
    assert summary["findings"] == summary["beyond_search"] == len(found)
    assert summary["params"] == {"seed": 0, "length": 12, "alphabet": "cow", "props": list(ALL)}


ONE_OR_MORE = "expected an integer of 1 or more"
A_FILE = "expected a file in a writable directory"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--campaign", "-1"], "--campaign: expected an integer of 0 or more, got '-1'"),
        (["--campaign", "1", "--length", "0"], f"--length: {ONE_OR_MORE}, got '0'"),
        (["--campaign", "1", "--journal", "/no/j.sqlite"], f"--journal: /no/j.sqlite: {A_FILE}"),
        (["--campaign", "1", "--scheduler", "nonsense::"], "--scheduler nonsense::: invalid"),
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
