"""A journal of system changes (sysfs knobs, a swap area) that are undone on every way out.

The old value is written to the journal file *before* a knob changes, so that a run killed with
SIGKILL can still be undone afterwards by restore_from_journal().
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from cowlab.live.swapdev import (
    DEFAULT_SIZE as DEFAULT_SWAP_SIZE,
)
from cowlab.live.swapdev import (
    LOOP_FILE,
    PAGE_CLUSTER,
    SWAPFILE,
    ZRAM,
    ZRAM_ALGORITHM,
    free_loop_device,
    make_loop_swap,
    make_swapfile,
    make_zram_swap,
    rotational_knob,
    swapfile_problem,
    undo_loop_swap,
    undo_swapfile,
    undo_zram_swap,
    zram_problem,
)
from cowlab.live.system import read_knob

DEFAULT_JOURNAL = Path("/var/tmp/cowlab-live-journal.json")
# one run at a time changes this machine's settings, whatever journal each keeps: two at once
# would each take the other's changed values for the machine's own and "restore" them
MACHINE_LOCK = Path(tempfile.gettempdir()) / "cowlab-live.lock"
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class SystemChangeRefused(PermissionError):
    """A system change was asked for without allow_system_changes=True."""


class JournalBusy(RuntimeError):
    """The journal belongs to another live process that may still restore it itself."""


def _write_journal(path: Path, owner: int, entries: list[dict[str, str]]) -> None:
    """Replace the journal atomically and durably (write, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"pid": owner, "entries": entries}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_knob(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


SWAP_KINDS = ("swapfile", "loopswap", "zram")  # the journal entries of a swap area


def undo_entry(entry: dict[str, str]) -> None:
    """Undo one journal entry: write the old knob value back, or take a swap area away."""
    if entry["kind"] == "sysfs":
        _write_knob(entry["path"], entry["old"])
    elif entry["kind"] == "swapfile":
        undo_swapfile(entry["path"])
    elif entry["kind"] == "loopswap":
        undo_loop_swap(entry["loop"], entry["old_rotational"], entry["path"])
    elif entry["kind"] == "zram":
        undo_zram_swap()
    else:
        raise ValueError(f"unknown journal entry kind {entry['kind']!r}")


def describe_entry(entry: dict[str, str]) -> str:
    """What undoing the entry did, for `cowlab live --restore`."""
    if entry["kind"] == "swapfile":
        return f"restored {entry['path']}: swapped off and deleted"
    if entry["kind"] == "loopswap":
        return (
            f"restored /dev/{entry['loop']}: swapped off, detached from {entry['path']} (deleted),"
            f" queue/rotational {entry['old_rotational']}"
        )
    if entry["kind"] == "zram":
        return "restored /dev/zram0: swapped off and reset"
    return f"restored {entry['path']} = {entry['old']!r}"


def _undo_all(entries: list[dict[str, str]]) -> list[str]:
    """Undo entries newest first; collect failures instead of stopping at the first."""
    failures = []
    for entry in reversed(entries):
        try:
            undo_entry(entry)
        except OSError as e:
            failures.append(f"{entry['kind']} {entry['path']}: {e}")
    return failures


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def restore_from_journal(
    path: str | Path = DEFAULT_JOURNAL, *, force: bool = False
) -> list[dict[str, str]]:
    """Undo what a killed run left in its journal; returns the entries undone (none if no file)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    owner = int(data.get("pid", 0))
    if not force and owner not in (0, os.getpid()) and _pid_alive(owner):
        raise JournalBusy(f"{path} belongs to live pid {owner}; pass force=True to restore anyway")
    entries: list[dict[str, str]] = data.get("entries", [])
    failures = _undo_all(entries)
    if failures:
        raise OSError("could not restore: " + "; ".join(failures))
    path.unlink()
    return entries


class MachineLock:
    """An exclusive flock on MACHINE_LOCK for as long as any SystemChanges of this process is
    open (nested ones share it); another process waits for it, saying so once on stderr. The
    kernel drops the lock when its holder dies, SIGKILL included."""

    fd: int | None = None
    depth = 0

    @classmethod
    def acquire(cls) -> None:
        if cls.depth == 0:
            fd = os.open(MACHINE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(
                    f"cowlab live: another run is changing this machine's settings "
                    f"({MACHINE_LOCK}); waiting for it to finish",
                    file=sys.stderr,
                    flush=True,
                )
                fcntl.flock(fd, fcntl.LOCK_EX)
            cls.fd = fd
        cls.depth += 1

    @classmethod
    def release(cls) -> None:
        cls.depth -= 1
        if cls.depth == 0 and cls.fd is not None:
            os.close(cls.fd)
            cls.fd = None


class SystemChanges:
    """Changes to sysfs knobs that are journalled first and undone on every way out.

    Use as a context manager. On SIGINT/SIGTERM the handlers restore first, then hand the
    signal to whatever handled it before (KeyboardInterrupt, or the default death).
    """

    def __init__(
        self,
        *,
        allow_system_changes: bool = False,
        journal: str | Path = DEFAULT_JOURNAL,
        handle_signals: bool = True,
    ) -> None:
        self.allowed = allow_system_changes
        self.journal = Path(journal)
        self.handle_signals = handle_signals
        self.entries: list[dict[str, str]] = []
        self._old_handlers: dict[int, Handler] = {}

    def __enter__(self) -> SystemChanges:
        MachineLock.acquire()
        try:
            # A journal left by a killed run must be undone before we record new old values.
            restore_from_journal(self.journal)
        except BaseException:
            MachineLock.release()
            raise
        if self.handle_signals:
            self._install_handlers()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.restore()
        finally:
            self._remove_handlers()
            MachineLock.release()

    def _refuse_unless_allowed(self, what: str) -> None:
        if not self.allowed:
            raise SystemChangeRefused(
                f"refusing to change {what}: pass allow_system_changes=True to let cowlab change "
                "(and afterwards restore) system settings"
            )

    def _journal_then(self, entry: dict[str, str]) -> None:
        """Record entry durably before the caller makes the change it undoes."""
        self.entries.append(entry)
        _write_journal(self.journal, os.getpid(), self.entries)

    def set(self, path: str | Path, value: str | int) -> str:
        """Write value to a sysfs/procfs knob, journalling its old value first; returns it."""
        path = str(path)
        self._refuse_unless_allowed(path)
        old = read_knob(path)
        if not any(e["kind"] == "sysfs" and e["path"] == path for e in self.entries):
            # Only the first old value is the one to go back to.
            self._journal_then({"kind": "sysfs", "path": path, "old": old})
        _write_knob(path, str(value))
        return old

    def enable_swap(self, device: str = "file", size: int = DEFAULT_SWAP_SIZE) -> None:
        """A swap area of `size` bytes for the run, of the kind `device` (file, hdd, ssd, zram:
        cowlab.live.swapdev), journalled before it is made, and swap readahead off
        (vm.page-cluster 0: the model has none); idempotent. One area at a time: one of another
        kind made earlier in the run is taken away first. Raises SystemChangeRefused without
        permission, OSError when it cannot be made."""
        current = next((e for e in self.entries if e["kind"] in SWAP_KINDS), None)
        if current is not None and current.get("device", "file") == device:
            return
        self._refuse_unless_allowed(f"swap ({device})")
        if current is not None:
            undo_entry(current)
            self.entries.remove(current)
            _write_journal(self.journal, os.getpid(), self.entries)
        self.set(PAGE_CLUSTER, 0)
        problem = zram_problem() if device == "zram" else None
        problem = problem or swapfile_problem(SWAPFILE if device == "file" else LOOP_FILE)
        if problem:
            raise OSError(problem)
        if device == "file":
            self._journal_then({"kind": "swapfile", "path": SWAPFILE, "device": device})
            make_swapfile(size=size)
        elif device == "zram":
            self.set(ZRAM / "comp_algorithm", ZRAM_ALGORITHM)
            self._journal_then({"kind": "zram", "path": str(ZRAM), "device": device})
            make_zram_swap(size)
        else:
            loop = free_loop_device()
            old = read_knob(rotational_knob(loop))
            entry = {"kind": "loopswap", "path": LOOP_FILE, "device": device, "loop": loop}
            self._journal_then(dict(entry, old_rotational=old))
            make_loop_swap(loop, device == "hdd", LOOP_FILE, size)

    def get(self, path: str | Path) -> str:
        """The knob's current value (the [selected] word of a choice list)."""
        return read_knob(path)

    def restore(self) -> None:
        """Undo every change now (newest first) and drop the journal; idempotent."""
        if not self.entries:
            return
        failures = _undo_all(self.entries)
        self.entries = []
        if failures:
            raise OSError("could not restore: " + "; ".join(failures))
        with contextlib.suppress(FileNotFoundError):
            self.journal.unlink()

    def _install_handlers(self) -> None:
        for sig in HANDLED_SIGNALS:
            try:
                old = signal.getsignal(sig)
                if old is signal.SIG_IGN:
                    continue  # an ignored signal stays ignored
                signal.signal(sig, self._on_signal)
            except ValueError:
                return  # not the main thread: only the context manager protects us
            self._old_handlers[sig] = old

    def _remove_handlers(self) -> None:
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        self._old_handlers = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Restore, then let the signal do what it did before we were installed."""
        old = self._old_handlers.get(signum, signal.SIG_DFL)
        try:
            self.restore()
        finally:
            self._remove_handlers()
            if callable(old):
                old(signum, frame)
            else:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
