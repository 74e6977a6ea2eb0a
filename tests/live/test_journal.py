"""System changes are journalled first and undone on exit, on signals and after a SIGKILL."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowlab.live.journal import (
    JournalBusy,
    SystemChangeRefused,
    SystemChanges,
    restore_from_journal,
)
from cowlab.live.system import read_knob
from tests.live.helpers import needs_live_kernel

pytestmark = needs_live_kernel
KNOB = "/sys/kernel/mm/transparent_hugepage/khugepaged/scan_sleep_millisecs"

CHILD = """
import sys, time
from cowlab.live.journal import SystemChanges
with SystemChanges(allow_system_changes=True, journal=sys.argv[1]) as changes:
    changes.set(sys.argv[2], sys.argv[3])
    print("ready", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def original() -> Iterator[str]:
    """The knob's value before the test, written back whatever happens."""
    value = read_knob(KNOB)
    try:
        yield value
    finally:
        Path(KNOB).write_text(value)


def _other(value: str) -> str:
    return str(int(value) + 1)


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _child(journal: Path, value: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(journal), KNOB, value],
        stdout=subprocess.PIPE,
        text=True,
        # a runner started in the background by a shell without job control ignores SIGINT,
        # and so would the child (SystemChanges leaves an ignored signal ignored)
        preexec_fn=_sigint_default,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_set_refused_without_permission(tmp_path: Path, original: str) -> None:
    with (
        SystemChanges(journal=tmp_path / "j.json") as changes,
        pytest.raises(SystemChangeRefused, match="scan_sleep_millisecs"),
    ):
        changes.set(KNOB, _other(original))
    assert read_knob(KNOB) == original


def test_restored_on_exit_and_on_exception(tmp_path: Path, original: str) -> None:
    journal = tmp_path / "j.json"
    with pytest.raises(ValueError), SystemChanges(allow_system_changes=True, journal=journal) as c:
        assert c.set(KNOB, _other(original)) == original
        assert read_knob(KNOB) == _other(original)
        assert json.loads(journal.read_text())["entries"][0]["old"] == original
        raise ValueError("boom")
    assert read_knob(KNOB) == original and not journal.exists()


def test_restore_after_sigkill(tmp_path: Path, original: str) -> None:
    journal = tmp_path / "j.json"
    proc = _child(journal, _other(original))
    proc.kill()
    proc.wait()
    assert read_knob(KNOB) == _other(original) and journal.exists()
    undone = restore_from_journal(journal)
    assert [e["old"] for e in undone] == [original]
    assert read_knob(KNOB) == original and not journal.exists()


def test_restored_by_the_sigterm_handler(tmp_path: Path, original: str) -> None:
    journal = tmp_path / "j.json"
    proc = _child(journal, _other(original))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == -signal.SIGTERM
    assert read_knob(KNOB) == original and not journal.exists()


def test_journal_of_a_live_run_is_not_touched(tmp_path: Path, original: str) -> None:
    journal = tmp_path / "j.json"
    proc = _child(journal, _other(original))
    try:
        with pytest.raises(JournalBusy):
            restore_from_journal(journal)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert read_knob(KNOB) == original and not journal.exists()


HOLDER = """
import sys
from cowlab.live.journal import SystemChanges
with SystemChanges(journal=sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


def test_a_second_run_waits_for_the_first(tmp_path: Path) -> None:
    """Two runs at once would each journal the other's changed knobs as the machine's own (a
    CI run beside a user's left THP at `never`): the second waits for the machine lock, and
    says so, until the first has restored everything."""
    first = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "a.json")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert first.stdout is not None and first.stdin is not None
    assert first.stdout.readline().strip() == "held"
    second = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "b.json")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert second.stdout is not None and second.stdin is not None and second.stderr is not None
    try:
        # it reaches the lock (however long its start takes on a loaded machine) and says so
        said, _, _ = select.select([second.stderr], [], [], 60)
        assert said and "waiting for it to finish" in second.stderr.readline()
        entered, _, _ = select.select([second.stdout], [], [], 0.5)
        assert not entered, "the second run went on while the first held the machine"
        first.stdin.write("\n")
        first.stdin.flush()
        assert first.wait(timeout=10) == 0
        assert second.stdout.readline().strip() == "held"
        second.stdin.write("\n")
        second.stdin.flush()
        assert second.wait(timeout=10) == 0
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()


def test_nested_changes_in_one_process_share_the_lock(tmp_path: Path) -> None:
    with SystemChanges(journal=tmp_path / "a.json"), SystemChanges(journal=tmp_path / "b.json"):
        pass
    with SystemChanges(journal=tmp_path / "c.json"):  # released: taken again at once
        pass
