#!/usr/bin/env python3
"""Benchmarks of the page lifecycle (issue 9; not a test): the model against this machine's
kernel doing the same, measured in the same run.

    sudo python bench/bench_lifecycle.py [--mib 1024] [--model-only]

Workloads, each over --mib MiB (default 1 GiB) of private anonymous memory, every 4 KiB page
written first:
  swap-4k    MADV_PAGEOUT of 4 KiB pages (MADV_NOHUGEPAGE), then a read of every page (swap-in)
  swap-thp   the same over PMD-mapped THPs (split before swap-out on a swap file)
  collapse   MADV_COLLAPSE of 4 KiB pages into THPs (the model's khugepaged pass is timed too;
             a khugepaged pass cannot be forced on the live kernel)
  ksm        two full ksmd passes over identical pages (live: ksmd at sleep_millisecs=0 until
             full_scans has advanced by 3, as a registered mm may wait one pass for the cursor)

The model is v6.18 (this machine's kernel). The live side needs root; it makes a swap file and
sets the KSM knobs through cowlab's journal (undone at the end, on Ctrl-C, or by `cowlab live
--restore`). Ratios are model time over live time for the same operation.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

PAGE = 4096
HPAGE = 2 << 20
MADV = {"hugepage": 14, "nohugepage": 15, "pageout": 21, "collapse": 25, "mergeable": 12}
KSM = Path("/sys/kernel/mm/ksm")
_libc = ctypes.CDLL(None, use_errno=True)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --- the model ----------------------------------------------------------------------------


def model(size: int) -> dict[str, float]:
    from cowlab import Kernel

    out: dict[str, float] = {}
    for name, thp in (("swap-4k", False), ("swap-thp", True)):
        k = Kernel("v6.18")
        k.thp_enabled = "madvise"
        p = k.spawn()
        addr = p.mmap(size, align=HPAGE)
        p.madvise(addr, size, "hugepage" if thp else "nohugepage")
        for va in range(addr, addr + size, PAGE):
            p.write(va, b"x")
        out[f"{name} out"] = timed(lambda p=p, a=addr: p.swapout(a, size, until="written"))
        out[f"{name} in"] = timed(
            lambda p=p, a=addr: [p.read(v, 1) for v in range(a, a + size, PAGE)]
        )
    for name in ("collapse", "khugepaged"):
        k = Kernel("v6.18")
        k.thp_enabled = "madvise"
        p = k.spawn()
        addr = p.mmap(size, align=HPAGE)
        for va in range(addr, addr + size, PAGE):
            p.write(va, b"x")
        p.madvise(addr, size, "hugepage")
        run = (
            (lambda p=p, a=addr: p.madvise(a, size, "collapse"))
            if name == "collapse"
            else k.khugepaged
        )
        out[name] = timed(run)
    k = Kernel("v6.18")
    p = k.spawn()
    addr = p.mmap(size)
    p.madvise(addr, size, "nohugepage")
    for va in range(addr, addr + size, PAGE):
        p.write(va, b"dup")
    p.madvise(addr, size, "mergeable")
    out["ksm"] = timed(lambda: k.ksmd(2))
    return out


# --- the live kernel ----------------------------------------------------------------------


def _madvise(buf: mmap.mmap, advice: str) -> None:
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    if _libc.madvise(ctypes.c_void_p(addr), ctypes.c_size_t(len(buf)), MADV[advice]) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"madvise({advice}): {os.strerror(err)}")


def _region(size: int, advice: str) -> tuple[mmap.mmap, np.ndarray]:
    buf = mmap.mmap(-1, size + HPAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    _madvise(buf, advice)
    arr = np.frombuffer(buf, dtype=np.uint8)
    return buf, arr


def live(size: int) -> dict[str, float]:
    from cowlab.live.journal import SystemChanges

    out: dict[str, float] = {}
    with SystemChanges(allow_system_changes=True) as changes:
        changes.enable_swap(size + (256 << 20))
        for name, advice in (("swap-4k", "nohugepage"), ("swap-thp", "hugepage")):
            buf, arr = _region(size, advice)
            arr[:] = 1
            out[f"{name} out"] = timed(lambda b=buf: _madvise(b, "pageout"))
            out[f"{name} in"] = timed(lambda a=arr: int(a[::PAGE].sum()))
            del arr
            buf.close()
        buf, arr = _region(size, "nohugepage")
        arr[:] = 1
        _madvise(buf, "hugepage")
        out["collapse"] = timed(lambda: _madvise(buf, "collapse"))
        del arr
        buf.close()
        out["ksm"] = _live_ksm(size, changes)
    return out


def _live_ksm(size: int, changes: object) -> float:
    buf, arr = _region(size, "nohugepage")
    arr[:] = 7
    _madvise(buf, "mergeable")
    set_knob = changes.set  # type: ignore[attr-defined]
    set_knob(KSM / "pages_to_scan", str(size // PAGE))
    set_knob(KSM / "sleep_millisecs", "0")
    start = int((KSM / "full_scans").read_text())
    t0 = time.perf_counter()
    set_knob(KSM / "run", "1")
    while int((KSM / "full_scans").read_text()) < start + 3:
        time.sleep(0.001)
    elapsed = time.perf_counter() - t0
    del arr
    buf.close()
    # run=2 unmerges everything and drops the stable tree, which would otherwise keep its (now
    # stale) nodes in pages_shared with ksmd stopped; the journal then puts run back
    set_knob(KSM / "run", "2")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--model-only", action="store_true")
    args = parser.parse_args()
    size = args.mib << 20
    m = model(size)
    lv = {} if args.model_only else live(size)
    python = platform.python_version()
    print(f"{args.mib} MiB; model v6.18 (CPython {python}) vs live {platform.release()}")
    print("| operation | model s | live s | model / live |")
    print("|---|---|---|---|")
    for key, seconds in m.items():
        other = lv.get(key)
        ratio = f"{seconds / other:,.0f}" if other else "-"
        missing = "not run" if args.model_only else "no live equivalent"
        shown = f"{other:.3f}" if other is not None else f"- ({missing})"
        print(f"| {key} | {seconds:.2f} | {shown} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
