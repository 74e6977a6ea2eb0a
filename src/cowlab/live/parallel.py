"""Live cases several at a time: `cowlab live --jobs N`.

Each of N workers is a child process with a LiveMachine of its own (its zygote, its processes,
its pins), forked once every case is known; worker i's processes under test run on the i-th
CPU the run may use (counting round), so two cases share a CPU only when N exceeds the CPUs.
The parent hands out one case at a time to a worker that is free and yields the results in the
cases' order, so the report is the one a run of one case at a time gives, case for case,
except for what the live kernel itself does differently
(see docs/live.md, "Several cases at a time").

Only runs that change nothing system-wide may do this (no --allow-system-changes: no swap
device, no ksmd, no khugepaged knobs): two cases at once must not share anything but the
machine's memory. On Ctrl-C, an error or SIGTERM the parent stops every worker with SIGTERM,
which each turns into SystemExit so that its LiveMachine's cleanup (kill, reap, unpin) runs;
a worker that does not stop within STOP_TIMEOUT is killed, and its own processes then see
their sockets close and exit.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any, TypeVar

from cowlab.errors import CowlabError
from cowlab.live.driver import LiveMachine

T = TypeVar("T")
R = TypeVar("R")
STOP_TIMEOUT = 30.0


class WorkerFailed(CowlabError):
    """A worker process died, or its case raised something that is not a verdict."""


def run_in_order(cases: Sequence[T], jobs: int, run: Callable[[LiveMachine, T], R]) -> Iterator[R]:
    """run(machine, case) for every case on min(jobs, len(cases)) workers; the results in order."""
    ctx = multiprocessing.get_context("fork")  # the cases and `run` reach the workers as they are
    workers: list[tuple[BaseProcess, Connection]] = []
    finished = False
    try:
        for index in range(min(jobs, len(cases))):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(theirs, index, cases, run), daemon=True)
            proc.start()
            theirs.close()
            workers.append((proc, mine))
        yield from _dispatch([conn for _proc, conn in workers], len(cases))
        finished = True
    finally:
        _stop(workers, finished)


def _dispatch(conns: list[Connection], n: int) -> Iterator[Any]:
    """Case indices to free workers, results back; yield them in index order."""
    todo = iter(range(n))
    busy: dict[Any, int] = {}
    done: dict[int, Any] = {}
    nxt = 0
    idle: list[Any] = list(conns)
    while nxt < n:
        while idle and (i := next(todo, None)) is not None:
            conn = idle.pop()
            conn.send(i)
            busy[conn] = i
        for ready in wait(list(busy)):
            i = busy.pop(ready)
            done[i] = _receive(ready, i)
            idle.append(ready)
        while nxt in done:
            yield done.pop(nxt)
            nxt += 1


def _receive(conn: Any, i: int) -> Any:
    try:
        ok, value = conn.recv()
    except EOFError:
        raise WorkerFailed(f"a live worker died while it ran case {i + 1}") from None
    if not ok:
        raise WorkerFailed(f"case {i + 1} failed in a live worker:\n{value}")
    return value


def _serve(
    conn: Connection, index: int, cases: Sequence[T], run: Callable[[LiveMachine, T], R]
) -> None:
    """Worker `index`: its own LiveMachine, whose processes run on a CPU of their own (the
    index-th, counting round); one case per index received, until None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when a worker stops
    signal.signal(signal.SIGTERM, _terminated)  # not the parent's handler (its journal)
    with LiveMachine(handle_sigterm=False, cpu_index=index) as machine:
        while (i := conn.recv()) is not None:
            try:
                conn.send((True, run(machine, cases[i])))
            except Exception:  # a bug, not a verdict: the parent raises it
                conn.send((False, traceback.format_exc()))


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _stop(workers: list[tuple[BaseProcess, Connection]], finished: bool) -> None:
    """Idle workers are told to stop; on an error or interrupt every one is sent SIGTERM. Each
    is joined, killed after STOP_TIMEOUT."""
    for proc, conn in workers:
        if finished:
            with contextlib.suppress(OSError):  # a worker that died is joined below
                conn.send(None)
        elif proc.is_alive():
            proc.terminate()
    for proc, conn in workers:
        proc.join(STOP_TIMEOUT)
        if proc.is_alive():
            proc.kill()
            proc.join()
        conn.close()
