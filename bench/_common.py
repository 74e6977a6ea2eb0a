"""Helpers the benchmark scripts share: a measurement in a fresh child process, peak RSS, and
the import-only memory baseline.

A script's child mode computes a dict and hands it to ``emit``, which adds the wall time and the
child's own peak RSS and prints it as the last line of stdout; ``run_child`` runs such a child
and parses that line.
"""

from __future__ import annotations

import contextlib
import json
import resource
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent

MIB = 1 << 20
GIB = 1 << 30


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB: VmHWM, the high-water mark of its own
    address space (ru_maxrss would also count the process that fork()ed and exec()ed it: Linux
    keeps the larger across execve)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(result: Mapping[str, float], start: float) -> None:
    """Print a child's result with the seconds since ``start`` and the peak RSS."""
    out = {**result, "seconds": time.perf_counter() - start, "peak_rss_mib": peak_rss_mib()}
    print(json.dumps(out), flush=True)


def run_reaped(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """subprocess.run(cmd), capturing output, but on any exception here (Ctrl-C included) the
    child is killed and waited for to the end (subprocess.run gives it only 0.25 s on Ctrl-C)."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, err = proc.communicate()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_child(script: str, args: list[str]) -> dict[str, float]:
    """Run ``python script *args`` in a fresh interpreter and return the dict it emitted (the
    child is killed and reaped if this process is interrupted)."""
    cmd = [sys.executable, script, *args]
    done = run_reaped(cmd)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise RuntimeError(f"{' '.join(cmd[1:])}: {tail[0]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def import_rss_mib() -> float:
    """Peak RSS of a child that only imports cowlab (interpreter + NumPy): the memory base."""
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import cowlab, _common; "
    code += "_common.emit({}, 0.0)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mib"])


def timed(module: ModuleType, name: str) -> list[float]:
    """Wrap module.NAME (a function other modules call through the module) so the CPU seconds
    of its calls add up in the returned one-item list."""
    spent = [0.0]
    inner = getattr(module, name)

    def wrapper(*args: object) -> object:
        start = time.process_time()
        try:
            return inner(*args)
        finally:
            spent[0] += time.process_time() - start

    setattr(module, name, wrapper)
    return spent
