"""`cowlab live` refuses clearly, and a SIGKILLed run's knob change is undone by --restore."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowlab.live import cli as live_cli
from cowlab.live import system
from cowlab.live.cli import match_kernel
from cowlab.live.system import read_knob
from tests.live.helpers import needs_live_kernel

ROOT = Path(__file__).resolve().parents[2]
THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def cowlab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cowlab.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


def test_match_kernel_resolves_the_release() -> None:
    assert match_kernel("6.18.44-fc-v669") == "v6.18"
    assert match_kernel("4.5.0") == "v4.5"
    assert match_kernel("4.5.5-custom") == "v4.5+6d0a07e"
    assert match_kernel("6.1.0") == "v6.1" and match_kernel("5.10.0") == "v5.9"
    # 5.10.9 took 9348b73c2e1b and feb889fb40fa (docs/timeline-sources.md, stable backports)
    assert match_kernel("5.10.200") == "v5.10+9348b73+feb889f"
    assert match_kernel("6.180.1") is None and match_kernel("4.4.0") is None
    assert match_kernel("weird") is None


def test_refuses_without_the_interfaces(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(system, "preflight", lambda: ["Not running as root: need root."])
    parser = live_cli.argparse.ArgumentParser()
    live_cli.add_live_command(parser.add_subparsers())
    args = parser.parse_args(["live", "examples/seed_quickstart.yaml"])
    assert live_cli.cmd_live(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cowlab live: refusing to run: Not running as root: need root."]


@needs_live_kernel
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--kernel", "v9.9", "examples/seed_quickstart.yaml"], "unknown kernel 'v9.9'"),
        ([], "give scenario FILEs or --random N"),
        (["--random", "2", "--ops", "fork,teleport"], "teleport"),
        (["missing.yaml"], "missing.yaml"),
    ],
)
def test_bad_input_is_one_line(args: list[str], says: str) -> None:
    run = cowlab("live", *args)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in run.stderr


@pytest.fixture
def thp_mode() -> Iterator[str]:
    """The machine's THP mode, written back whatever the test does."""
    value = read_knob(THP)
    try:
        yield value
    finally:
        if read_knob(THP) != value:
            Path(THP).write_text(value)


def _descendants(pid: int) -> list[int]:
    """Every process below pid (children, grandchildren...), by /proc/*/stat."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier]
        out += kids
        frontier = kids
    return out


def _running(pid: int) -> bool:
    """Alive and not a zombie (init in a container may be slow to reap the orphaned zygote)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@needs_live_kernel
def test_sigkill_mid_change_then_restore(tmp_path: Path, thp_mode: str) -> None:
    other = "never" if thp_mode != "never" else "madvise"
    scenario = tmp_path / "knob.yaml"
    scenario.write_text(
        f"name: knob\nconfig: {{thp: {other}}}\nprocesses: [P]\nsteps:\n"
        "  - {op: mmap, proc: P, name: buf, size: 4K}\n"
    )
    journal = tmp_path / "journal.json"
    env = dict(os.environ, COWLAB_LIVE_PAUSE_AFTER_CHANGE="30")
    cmd = [sys.executable, "-m", "cowlab.cli", "live", "--kernel", "v4.5+6d0a07e"]
    cmd += ["--allow-system-changes", "--journal", str(journal), str(scenario)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "paused after setting" in line, line
    below = _descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert read_knob(THP) == other and journal.exists()  # killed mid-change: left behind
    run = cowlab("live", "--restore", "--journal", str(journal))
    assert run.returncode == 0, run.stderr
    assert read_knob(THP) == thp_mode and not journal.exists()
    assert "restored" in run.stdout
    deadline = time.monotonic() + 10
    while any(_running(p) for p in below) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_running(p) for p in below), "workers left behind"


@needs_live_kernel
def test_restore_with_nothing_to_do(tmp_path: Path) -> None:
    run = cowlab("live", "--restore", "--journal", str(tmp_path / "none.json"))
    assert run.returncode == 0 and "nothing to restore" in run.stdout


# Ctrl-C as a terminal sends it: SIGINT to the whole process group, with SIGINT's default
# handler (a shell running the tests in the background would pass it ignored)
INTERRUPTIBLE = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from cowlab.cli import main; sys.exit(main(sys.argv[1:]))"
)


@needs_live_kernel
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_stops_cleanly_in_one_line(jobs: str, thp_mode: str) -> None:
    """Ctrl-C mid-run: exit 128 + SIGINT, one line on stderr and no traceback, every process
    it started gone, the THP knob as it was."""
    cmd = [sys.executable, "-c", INTERRUPTIBLE, "live", "--random", "5000", "--jobs", jobs]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not _descendants(proc.pid) and time.monotonic() < deadline:  # its workers started
        time.sleep(0.05)
    time.sleep(1.0)  # cases under way
    below = _descendants(proc.pid)
    assert below and proc.poll() is None
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "cowlab: interrupted", err
    deadline = time.monotonic() + 10
    while any(_running(p) for p in below) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_running(p) for p in below), "processes left behind"
    assert read_knob(THP) == thp_mode
