#!/usr/bin/env python3
"""The fork-write workload on the model and on this machine's kernel, in the same run (issue 11;
not a test).

    python bench/bench_live.py [--size 1G] [--sizes 64M,256M,1G,4G,16G] [--reps 3]
        [--kernels v4.5,v6.18] [--thp on,off] [--paths range,per-page] [--model-max 16G]
        [--live auto|cc|ctypes] [--skip-huge] [--huge-size 64G] [--out FILE]
        [--plot docs/images/scaling.png | --no-plot]

The workload: mmap SIZE private anonymous bytes at a 2 MiB boundary (THP on: MADV_HUGEPAGE, or
"always" in the model; off: MADV_NOHUGEPAGE, "never"), write every 4 KiB page (first touch),
fork, write every page again in the parent (COW faults), the child exits without touching
anything and is reaped.

- live: bench/live_workload.c, compiled with cc -O2 into a temporary directory; without a
  compiler (or with --live ctypes) the same steps through libc by ctypes in a fresh Python child
  (memset over the range where the C program stores one byte a page).
- model: a fresh child process per measurement, Kernel(kernel) for each of --kernels, two ways:
  "range" (Process.fill over the region for each write pass) and "per-page" (a Python loop of
  Process.write(va, b"a"), one per 4 KiB page).

Output (stdout, and --out): for --size, a table per THP mode of the phase times, per-page and
per-fault costs, faults and peak RSS, live against each model configuration with the ratio
model/live; a scaling table over --sizes (range path) plotted log-log into --plot; the model-only
64 GiB workload (a THP region written once per THP and pinned whole). Figures are medians of
--reps repetitions, interleaved: each repetition runs every live and model configuration once.
Nothing in /sys is changed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import errno
import math
import mmap
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

from _common import GIB, MIB, emit, import_rss_mib, peak_rss_mib, run_child, run_reaped

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
C_SOURCE = HERE / "live_workload.c"
PAGE = 4096
HPAGE = 2 << 20
THP_SYSFS = Path("/sys/kernel/mm/transparent_hugepage")
PHASES = {
    "first_touch": "first touch",
    "fork": "fork",
    "cow_write": "COW write",
    "exit": "child exit + reap",
}
# what the C program prints (key=value); the ctypes path reports the same keys
LIVE_KEYS = (
    "size",
    "thp",
    "pages",
    *(f"{phase}_ns" for phase in PHASES),
    *(f"{phase}_faults" for phase in PHASES),
    "anon_huge_kb",
    "peak_rss_kb",
    "child_peak_rss_kb",
)
THP_CHOICES = {"on": True, "off": False}
PATH_CHOICES = ("range", "per-page")
LIVE_CHOICES = ("auto", "cc", "ctypes")
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


# --- sizes and flags ----------------------------------------------------------------------


def parse_size(text: str) -> int:
    """64M, 1G, 4096 (bytes) -> bytes: a positive multiple of 4 KiB."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = UNITS.get(t[-1:], 1)
    digits = t[:-1] if t[-1:] in UNITS else t
    if not digits.isdigit() or int(digits) * mult <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 64M, 1G, 4096)")
    size = int(digits) * mult
    if size % PAGE:
        raise argparse.ArgumentTypeError(f"{text!r} is not a multiple of 4 KiB")
    return size


def fmt_size(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size >= UNITS[unit] and size % UNITS[unit] == 0:
            return f"{size // UNITS[unit]} {unit}iB"
    return f"{size} B"


def size_list(text: str) -> list[int]:
    if text.strip().lower() == "none":
        return []
    return [parse_size(part) for part in text.split(",") if part.strip()]


def choice_list(choices: tuple[str, ...] | dict[str, bool]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [part.strip() for part in text.split(",") if part.strip()]
        bad = [item for item in items if item not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected a comma-separated list of {', '.join(choices)}"
            )
        return list(dict.fromkeys(items))

    return parse


def kernel_list(text: str) -> list[str]:
    from cowlab.policy import resolve

    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise argparse.ArgumentTypeError("no kernel given")
    for item in items:
        try:
            resolve(item)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return list(dict.fromkeys(items))


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


# --- the live kernel: the compiled program --------------------------------------------------


def compile_workload(directory: Path) -> Path | None:
    """cc -O2 bench/live_workload.c into directory; None if there is no C compiler."""
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        return None
    binary = directory / "live_workload"
    done = subprocess.run(
        [cc, "-O2", "-o", str(binary), str(C_SOURCE)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["(no message)"])[0]
        raise RuntimeError(f"{cc} -O2 {C_SOURCE.name} failed: {first}")
    return binary


def parse_live_output(text: str) -> dict[str, int]:
    """The C program's key=value lines -> ints; every key of LIVE_KEYS must be there."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = int(value.strip())
    missing = [key for key in LIVE_KEYS if key not in out]
    if missing:
        raise ValueError(f"live workload output lacks {', '.join(missing)}")
    return out


def live_compiled(binary: Path, size: int, thp: bool) -> dict[str, int]:
    # the program is killed and reaped if this process is interrupted; its own child dies with
    # it (PR_SET_PDEATHSIG, and the pipe's write end closes)
    done = run_reaped([str(binary), str(size), "1" if thp else "0"])
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[0]
        raise RuntimeError(first)
    return parse_live_output(done.stdout)


# --- the live kernel: the same through ctypes -----------------------------------------------


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.memset.restype = ctypes.c_void_p
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    libc.read.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    libc.waitpid.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    return libc


def _check(result: int, what: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def anon_huge_kb() -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    return -1


Step = tuple[str, Callable[[], object]]


def timed_phases(
    steps: list[Step], faults: Callable[[], int], clock: Callable[[], int]
) -> dict[str, int]:
    """Run the steps in order; a named one is a phase: its nanoseconds and the faults it took
    are recorded as <phase>_ns and <phase>_faults (an unnamed step runs untimed)."""
    out: dict[str, int] = {}
    for phase, step in steps:
        if not phase:
            step()
            continue
        f0 = faults()
        t0 = clock()
        step()
        t1 = clock()
        out[f"{phase}_ns"] = t1 - t0
        out[f"{phase}_faults"] = faults() - f0
    return out


def live_ctypes_child(size: int, thp: bool) -> dict[str, int]:
    """live_workload.c's steps through libc (run in a fresh child: its RSS is its own). The
    write passes are one memset over the region each (every byte, not one a page)."""
    libc = _libc()
    prot = mmap.PROT_READ | mmap.PROT_WRITE
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    raw = libc.mmap(None, size + HPAGE, prot, flags, -1, 0)
    if raw in (None, ctypes.c_void_p(-1).value):
        _check(-1, "mmap")
    p = (raw + HPAGE - 1) & ~(HPAGE - 1)
    state = {"pid": -1, "read_end": -1, "write_end": -1, "huge_kb": -1}
    status = ctypes.c_int(0)
    token = ctypes.create_string_buffer(1)

    def fork() -> None:
        pid = _check(libc.fork(), "fork")
        if pid == 0:  # the child: wait for the parent's writes, touching nothing, then _exit
            libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
            libc.close(state["write_end"])
            libc.read(state["read_end"], token, 1)
            libc._exit(0)
        state["pid"] = pid

    def release_child() -> None:  # the write end closes: the child's read() returns, it exits
        if state["write_end"] >= 0:
            os.close(state["write_end"])
            state["write_end"] = -1
        if state["pid"] > 0:
            while libc.waitpid(state["pid"], ctypes.byref(status), 0) == -1:
                if ctypes.get_errno() != errno.EINTR:
                    _check(-1, "waitpid")
            state["pid"] = -1

    def before_fork() -> None:
        state["huge_kb"] = anon_huge_kb()
        state["read_end"], state["write_end"] = os.pipe()

    try:
        advice = mmap.MADV_HUGEPAGE if thp else mmap.MADV_NOHUGEPAGE
        _check(libc.madvise(p, size, advice), "madvise")
        steps: list[Step] = [
            ("first_touch", lambda: libc.memset(p, 0x61, size)),
            ("", before_fork),
            ("fork", fork),
            ("", lambda: os.close(state["read_end"])),
            ("cow_write", lambda: libc.memset(p, 0x62, size)),
            ("exit", release_child),
        ]
        out = timed_phases(steps, _minflt, time.monotonic_ns)
        if status.value != 0:
            raise RuntimeError(f"the child did not exit cleanly ({status.value:#x})")
    finally:  # on an error or Ctrl-C: let the child go and reap it
        release_child()
        libc.munmap(raw, size + HPAGE)
    out |= {"size": size, "thp": int(thp), "pages": size // PAGE, "anon_huge_kb": state["huge_kb"]}
    out["peak_rss_kb"] = round(peak_rss_mib() * 1024)
    out["child_peak_rss_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return out


# --- the model ------------------------------------------------------------------------------


def model_child(
    kernel_id: str, size: int, thp: bool, path: str, clock: Callable[[], int] = time.perf_counter_ns
) -> dict[str, int]:
    """The workload on the model, phase by phase (the child's peak RSS is added by emit);
    ``clock`` times the phases (bench_faults.py: the process's CPU time)."""
    from cowlab import Kernel

    k = Kernel(kernel_id)
    k.thp_enabled = "always" if thp else "never"
    p = k.spawn()
    addr = p.mmap(size, align=HPAGE)
    children = []

    def write_all(value: int) -> None:
        if path == "range":
            p.fill(addr, size, value)
        else:
            data = bytes([value])
            for va in range(addr, addr + size, PAGE):
                p.write(va, data)

    counts: dict[str, int] = {}  # what the workload did, for bench_faults.py to show

    def count(when: str) -> None:
        counts[f"frames_after_{when}"] = k.frames.nr_allocated
        counts[f"copies_after_{when}"] = len(k.cow_log)
        counts[f"operations_after_{when}"] = len(k.history)

    steps: list[Step] = [
        ("first_touch", lambda: write_all(0x61)),
        ("", lambda: count("first_touch")),
        ("fork", lambda: children.append(p.fork())),
        ("cow_write", lambda: write_all(0x62)),
        ("", lambda: count("cow_write")),
        ("exit", lambda: children[0].exit()),
        ("", lambda: count("exit")),
    ]
    out = timed_phases(steps, lambda: k.vmstat["pgfault"], clock) | counts
    out["pages"] = size // PAGE
    return out


def huge_child(kernel_id: str, size: int) -> dict[str, float]:
    """A THP region written once per THP and pinned whole (FOLL_LONGTERM, write)."""
    from cowlab import Kernel

    k = Kernel(kernel_id)
    k.thp_enabled = "always"
    p = k.spawn()
    addr = p.mmap(size, align=HPAGE)
    t0 = time.perf_counter()
    for va in range(addr, addr + size, HPAGE):
        p.write(va, b"h")
    t1 = time.perf_counter()
    pin = p.get_user_pages(addr, size, write=True)
    t2 = time.perf_counter()
    return {
        "write_s": t1 - t0,
        "pin_s": t2 - t1,
        "faults": k.vmstat["pgfault"],
        "pinned_pages": len(pin.pages),
    }


# --- measurements ---------------------------------------------------------------------------

Key = tuple[str, int, bool, str, str]  # (side, size, thp, kernel, path); side live|model


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


class Runner:
    """Runs the measurements (each in its own process) and keeps every repetition's result."""

    def __init__(self, args: argparse.Namespace, binary: Path | None, base_mib: float) -> None:
        self.args = args
        self.binary = binary
        self.base_mib = base_mib
        self.results: dict[Key, list[dict[str, float]]] = {}
        self.skipped: dict[Key, str] = {}

    def skip_reason(self, key: Key) -> str | None:
        side, size, _thp, _kernel, _path = key
        if side == "model" and size > self.args.model_max:
            return f"above --model-max {fmt_size(self.args.model_max)}"
        if side == "live":
            # the parent's copy and the child's originals are both resident at the end
            need = 2 * size + 256 * MIB
            have = mem_available()
            if need > have:
                return f"needs {need / GIB:.1f} GiB, {have / GIB:.1f} GiB available"
        if side == "model":
            # the memory a modelled page took at the largest smaller size already measured
            smaller = [
                (s, run)
                for (sd, s, t, k, pa), runs in self.results.items()
                if (sd, t, k, pa) == key[:1] + key[2:] and s < size
                for run in runs
            ]
            if smaller:
                s, run = max(smaller, key=lambda item: item[0])
                per_page = (run["peak_rss_mib"] - self.base_mib) * MIB / (s // PAGE)
                need = int(per_page * (size // PAGE) + self.base_mib * MIB)
                have = mem_available()
                if need > have:
                    return (
                        f"would need about {need / GIB:.1f} GiB ({per_page:,.0f} B a page at "
                        f"{fmt_size(s)}), {have / GIB:.1f} GiB available"
                    )
        return None

    def run(self, key: Key) -> None:
        reason = self.skip_reason(key)
        if reason:
            self.skipped[key] = reason
            return
        side, size, thp, kernel_id, path = key
        if side == "live":
            result = self.live(size, thp)
        else:
            args = ["--model-child", kernel_id, str(size), "on" if thp else "off", path]
            result = run_child(__file__, args)
        self.results.setdefault(key, []).append(result)

    def live(self, size: int, thp: bool) -> dict[str, float]:
        if self.binary is not None:
            raw = live_compiled(self.binary, size, thp)
        else:
            child = run_child(__file__, ["--live-child", str(size), "on" if thp else "off"])
            raw = {key: int(child[key]) for key in LIVE_KEYS}
        out: dict[str, float] = {key: float(value) for key, value in raw.items()}
        out["peak_rss_mib"] = raw["peak_rss_kb"] / 1024
        return out

    def median(self, key: Key) -> dict[str, float] | None:
        runs = self.results.get(key)
        if not runs:
            return None
        return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


def derived(m: dict[str, float], base_mib: float | None) -> dict[str, float | None]:
    """The table's measures from one configuration's medians (base_mib: the model's base)."""
    pages = m["pages"]
    total = sum(m[f"{phase}_ns"] for phase in PHASES)

    def per_fault(phase: str, faults: str) -> float | None:
        return m[f"{phase}_ns"] / 1e3 / m[faults] if m[faults] else None

    out: dict[str, float | None] = {
        f"{name} ms": m[f"{phase}_ns"] / 1e6 for phase, name in PHASES.items()
    }
    out["total ms"] = total / 1e6
    out["first touch µs/page"] = m["first_touch_ns"] / 1e3 / pages
    out["COW write µs/page"] = m["cow_write_ns"] / 1e3 / pages
    out["first-touch faults"] = m["first_touch_faults"]
    out["COW faults"] = m["cow_write_faults"]
    out["first touch µs/fault"] = per_fault("first_touch", "first_touch_faults")
    out["COW µs/fault"] = per_fault("cow_write", "cow_write_faults")
    out["peak RSS MiB"] = m["peak_rss_mib"]
    out["B per modelled 4 KiB page"] = (
        (m["peak_rss_mib"] - base_mib) * MIB / pages if base_mib is not None else None
    )
    return out


MEASURES = (
    *(f"{name} ms" for name in PHASES.values()),
    "total ms",
    "first touch µs/page",
    "COW write µs/page",
    "first-touch faults",
    "COW faults",
    "first touch µs/fault",
    "COW µs/fault",
    "peak RSS MiB",
    "B per modelled 4 KiB page",
)
COUNTS = ("first-touch faults", "COW faults")


def fmt(value: float | None, count: bool = False) -> str:
    if value is None:
        return "—"
    if count or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    if value == 0:
        return "0"
    return f"{value:.{2 - math.floor(math.log10(abs(value)))}f}"  # 3 significant digits


def ratio(model: float | None, live: float | None) -> str:
    if model is None or live is None or live == 0:
        return "—"
    r = model / live
    return f"{r:,.0f}" if r >= 100 else f"{r:.1f}" if r >= 1 else f"{r:.2f}"


# --- the report -----------------------------------------------------------------------------


def git_commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def cowlab_dir() -> str:
    """Where the model comes from (the working tree, or a snapshot put first on PYTHONPATH)."""
    import cowlab

    return str(Path(cowlab.__file__).resolve().parent.parent)


def sysfs(name: str) -> str:
    try:
        return (THP_SYSFS / name).read_text().strip()
    except OSError:
        return "unavailable"


def header(args: argparse.Namespace, live_path: str, base_mib: float) -> list[str]:
    command = "python bench/bench_live.py " + shlex.join(sys.argv[1:])
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"Command: `{command.strip()}`",
        "",
        f"Run: {datetime.date.today().isoformat()}, commit {git_commit()}; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"live kernel {platform.release()}, THP enabled `{sysfs('enabled')}`, "
        f"defrag `{sysfs('defrag')}`; live path: {live_path}; load average at start {load}.",
        f"Model: cowlab from `{cowlab_dir()}`. "
        f"Medians of {args.reps} interleaved repetitions; model memory base (a child that only "
        f"imports cowlab): {base_mib:.0f} MiB.",
    ]


def fork_write_tables(runner: Runner, args: argparse.Namespace, base_mib: float) -> list[str]:
    lines: list[str] = []
    configs = [(kernel, path) for kernel in args.kernels for path in args.paths]
    for mode in args.thp:
        thp = THP_CHOICES[mode]
        live_key: Key = ("live", args.size, thp, "", "")
        live = runner.median(live_key)
        live_d = derived(live, None) if live else None
        lines += ["", f"### Fork-write, {fmt_size(args.size)}, THP {mode}", ""]
        if live is not None:
            huge = int(live["anon_huge_kb"])
            lines += [f"Live AnonHugePages after the first touch: {huge:,} KiB.", ""]
        head = "| measure | live |" + "".join(f" {k} {p} | x |" for k, p in configs)
        lines += [head, "|---|---|" + "---|---|" * len(configs)]
        models = []
        for kernel, path in configs:
            m = runner.median(("model", args.size, thp, kernel, path))
            models.append(derived(m, base_mib) if m else None)
        for measure in MEASURES:
            count = measure in COUNTS
            lv = live_d[measure] if live_d else None
            row = f"| {measure} | {fmt(lv, count) if live_d else skipped(runner, live_key)} |"
            for (kernel, path), md in zip(configs, models, strict=True):
                if md is None:
                    row += f" {skipped(runner, ('model', args.size, thp, kernel, path))} | — |"
                    continue
                mv = md[measure]
                x = "—" if measure.startswith("B per") else ratio(mv, lv)
                row += f" {fmt(mv, count)} | {x} |"
            lines.append(row)
    return lines


def skipped(runner: Runner, key: Key) -> str:
    return "skipped" if key in runner.skipped else "—"


def scaling_points(
    runner: Runner, args: argparse.Namespace
) -> Iterator[tuple[str, bool, list[tuple[int, float, float]]]]:
    """(label, thp, [(size, total s, peak RSS MiB)]) per line of the plot."""
    sides = [("live", "", "")] + [("model", kernel, "range") for kernel in args.kernels]
    for mode in args.thp:
        thp = THP_CHOICES[mode]
        for side, kernel, path in sides:
            points = []
            for size in args.sizes:
                m = runner.median((side, size, thp, kernel, path))
                if m is not None:
                    total = sum(m[f"{phase}_ns"] for phase in PHASES) / 1e9
                    points.append((size, total, m["peak_rss_mib"]))
            label = f"live {platform.release().split('-')[0]}" if side == "live" else kernel
            yield f"{label}, THP {mode}", thp, points


def scaling_table(runner: Runner, args: argparse.Namespace) -> list[str]:
    kernels = args.kernels
    lines = [
        "",
        "### Scaling (range path): total time and peak RSS",
        "",
        "| size | THP | live s |"
        + "".join(f" {k} s (x live) |" for k in kernels)
        + " live MiB |"
        + "".join(f" {k} MiB |" for k in kernels),
        "|---|---|---|" + "---|" * (2 * len(kernels) + 1),
    ]
    for size in args.sizes:
        for mode in args.thp:
            thp = THP_CHOICES[mode]
            keys: list[Key] = [("live", size, thp, "", "")]
            keys += [("model", size, thp, k, "range") for k in kernels]
            meds = [runner.median(key) for key in keys]
            totals = [sum(m[f"{phase}_ns"] for phase in PHASES) / 1e9 if m else None for m in meds]
            cells = [fmt(totals[0]) if meds[0] else skipped(runner, keys[0])]
            for key, m, total in zip(keys[1:], meds[1:], totals[1:], strict=True):
                cell = f"{fmt(total)} ({ratio(total, totals[0])})" if m else skipped(runner, key)
                cells.append(cell)
            for key, m in zip(keys, meds, strict=True):
                cells.append(fmt(m["peak_rss_mib"]) if m else skipped(runner, key))
            lines.append(f"| {fmt_size(size)} | {mode} | " + " | ".join(cells) + " |")
    return lines


def plot(runner: Runner, args: argparse.Namespace, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError(
            "matplotlib is not installed (pip install -e '.[bench]'), or pass --no-plot"
        ) from None
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 5))
    colours: dict[str, str] = {}
    for label, thp, points in scaling_points(runner, args):
        if not points:
            continue
        source = label.split(",")[0]
        colour = colours.setdefault(source, f"C{len(colours)}")
        style = {"color": colour, "linestyle": "-" if thp else "--", "marker": "o" if thp else "s"}
        xs = [size / MIB for size, _, _ in points]
        ax_t.plot(xs, [t for _, t, _ in points], label=label, **style)
        ax_m.plot(xs, [m for _, _, m in points], label=label, **style)
    for ax, ylabel in ((ax_t, "wall time, s (all four phases)"), (ax_m, "peak RSS, MiB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("region size, MiB")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize="small")
    fig.suptitle(title, fontsize="small")
    fig.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=100)
    plt.close(fig)


def huge_table(args: argparse.Namespace) -> list[str]:
    lines = [
        "",
        f"### {fmt_size(args.huge_size)} THP region, one write per THP, pinned whole (model only)",
        "",
        "| kernel | writes s | get_user_pages s | wall s | peak RSS MiB | faults | pinned pages |",
        "|---|---|---|---|---|---|---|",
    ]
    for kernel in args.kernels:
        print(f"  huge {fmt_size(args.huge_size)} {kernel}", file=sys.stderr, flush=True)
        r = run_child(__file__, ["--huge-child", kernel, str(args.huge_size)])
        lines.append(
            f"| {kernel} | {fmt(r['write_s'])} | {fmt(r['pin_s'])} | {fmt(r['seconds'])} "
            f"| {fmt(r['peak_rss_mib'])} | {fmt(r['faults'], True)} "
            f"| {fmt(r['pinned_pages'], True)} |"
        )
    return lines


def plan(args: argparse.Namespace) -> list[Key]:
    """One repetition: every configuration once, live first for each size and THP mode."""
    keys: list[Key] = []
    table = [(args.size, path) for path in args.paths]
    scaling = [(size, "range") for size in args.sizes]
    for size in sorted({args.size, *args.sizes}):  # smaller first: they bound the memory
        for mode in args.thp:
            thp = THP_CHOICES[mode]
            paths = [path for s, path in table + scaling if s == size]
            keys.append(("live", size, thp, "", ""))
            keys += [("model", size, thp, k, p) for k in args.kernels for p in dict.fromkeys(paths)]
    return keys


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A flag error is one line (no usage block)."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="bench_live.py",
        description="The fork-write workload on the model and on the live kernel, same run.",
    )
    ap.add_argument("--size", type=parse_size, default=GIB, help="size of the ratio tables (1G)")
    ap.add_argument(
        "--sizes",
        type=size_list,
        default=size_list("64M,256M,1G,4G,16G"),
        help="scaling series, comma-separated, or none (64M,256M,1G,4G,16G)",
    )
    ap.add_argument("--reps", type=positive_int, default=3, help="repetitions (3)")
    ap.add_argument(
        "--kernels", type=kernel_list, default=["v4.5", "v6.18"], help="model kernels (v4.5,v6.18)"
    )
    ap.add_argument("--thp", type=choice_list(THP_CHOICES), default=["on", "off"], help="on,off")
    ap.add_argument(
        "--paths", type=choice_list(PATH_CHOICES), default=list(PATH_CHOICES), help="range,per-page"
    )
    ap.add_argument(
        "--model-max", type=parse_size, default=16 * GIB, help="largest size run on the model (16G)"
    )
    ap.add_argument(
        "--live", choices=LIVE_CHOICES, default="auto", help="live path (auto: cc if found)"
    )
    ap.add_argument("--skip-huge", action="store_true", help="leave out the 64 GiB pinned workload")
    ap.add_argument(
        "--huge-size", type=parse_size, default=64 * GIB, help="size of the pinned workload (64G)"
    )
    ap.add_argument("--out", help="also write the markdown report here")
    ap.add_argument("--plot", default=str(REPO / "docs/images/scaling.png"), help="scaling plot")
    ap.add_argument("--no-plot", action="store_true", help="do not plot")
    ap.add_argument("--model-child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--cpu-clock", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--live-child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--huge-child", nargs=2, help=argparse.SUPPRESS)
    return ap


def run(args: argparse.Namespace) -> str:
    base_mib = import_rss_mib()
    with tempfile.TemporaryDirectory(prefix="bench_live.") as tmp:
        binary = None if args.live == "ctypes" else compile_workload(Path(tmp))
        if binary is None and args.live == "cc":
            raise RuntimeError("--live cc: no C compiler (cc, or $CC) found")
        live_path = (
            "compiled (cc -O2 bench/live_workload.c)"
            if binary
            else "ctypes (libc mmap/memset/fork/waitpid)"
        )
        runner = Runner(args, binary, base_mib)
        keys = plan(args)
        for rep in range(args.reps):
            for i, key in enumerate(keys, 1):
                side, size, thp, kernel, path = key
                what = f"{side} {fmt_size(size)} THP {'on' if thp else 'off'} {kernel} {path}"
                print(
                    f"  rep {rep + 1}/{args.reps}, {i}/{len(keys)}: {what}",
                    file=sys.stderr,
                    flush=True,
                )
                runner.run(key)
    lines = header(args, live_path, base_mib)
    lines += fork_write_tables(runner, args, base_mib)
    if args.sizes:
        lines += scaling_table(runner, args)
        if not args.no_plot:
            plot(runner, args, f"bench_live.py, commit {git_commit()}, {datetime.date.today()}")
            lines += ["", f"Plot: `{os.path.relpath(args.plot, REPO)}`"]
    if runner.skipped:
        lines += ["", "Skipped:"]
        for (side, size, thp, kernel, path), reason in runner.skipped.items():
            what = " ".join(x for x in (side, fmt_size(size), kernel, path) if x)
            lines.append(f"- {what}, THP {'on' if thp else 'off'}: {reason}")
    if not args.skip_huge:
        lines += huge_table(args)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    args = ap.parse_args(argv)
    for flag, path in (("--out", args.out), ("--plot", None if args.no_plot else args.plot)):
        if path and not Path(path).resolve().parent.is_dir():
            ap.error(f"argument {flag}: the directory of {path!r} does not exist")
    try:
        if args.model_child:
            kernel, size, mode, path = args.model_child
            start = time.perf_counter()
            clock = time.process_time_ns if args.cpu_clock else time.perf_counter_ns
            emit(model_child(kernel, int(size), mode == "on", path, clock), start)
        elif args.live_child:
            size, mode = args.live_child
            start = time.perf_counter()
            emit(live_ctypes_child(int(size), mode == "on"), start)
        elif args.huge_child:
            kernel, size = args.huge_child
            start = time.perf_counter()
            emit(huge_child(kernel, int(size)), start)
        else:
            text = run(args)
            if args.out:
                Path(args.out).write_text(text)
            print(text)
    except (RuntimeError, OSError, ValueError) as e:
        ap.exit(1, f"bench_live.py: error: {e}\n")
    except KeyboardInterrupt:
        ap.exit(130, "bench_live.py: interrupted\n")


if __name__ == "__main__":
    main()
