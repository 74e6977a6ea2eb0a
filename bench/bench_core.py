#!/usr/bin/env python3
"""Benchmarks of the core model (not a test): wall time, peak RSS and simulated faults per second.

    python bench/bench_core.py [--quick] [--out docs/benchmarks.md]

Each workload runs in a fresh child process so its peak RSS is its own. Figures are also given
as ratios against baselines measured in the same run:
  - time: a plain Python loop that does one dict update and one NumPy store per 4 KiB page of
    the workload (the least any per-page Python model must spend);
  - memory: the peak RSS of a child that only imports cowlab (interpreter + NumPy).
"""

from __future__ import annotations

import argparse
import platform
import time

from _common import GIB, emit, import_rss_mib
from _common import run_child as run_script

from cowlab.policy import ReleaseError, resolve

WORKLOADS = {
    "rdma-pmd": "RDMA program, 2 x 512 MiB, PMD-mapped THP, fork trigger, 1,000 iterations",
    "rdma-pte": "RDMA program, 2 x 512 MiB, PTE-mapped THP, fork trigger, 1,000 iterations",
    "fork-write-thp": "1 GiB of THP: populate, fork, parent writes every 4 KiB page",
    "fork-write-4k": "1 GiB of 4 KiB pages: populate, fork, parent writes every page",
    "baseline-loop": "a dict update and a NumPy store per 4 KiB page of 1 GiB (time baseline)",
}
# the table's kernels: the seed's versions and one per generation whose rules change the work
KERNELS = "v4.5,v4.5+6d0a07e,v4.5+6d0a07e-early,v4.14,v5.8,v5.9,v5.18,v5.19,v6.15,v6.18"


def fork_write(kernel_id: str, size: int, thp: bool) -> dict[str, float]:
    from cowlab import Kernel

    k = Kernel(kernel_id)
    k.thp_enabled = "always" if thp else "never"
    p = k.spawn()
    addr = p.mmap(size, align=2 << 20)
    for va in range(addr, addr + size, 4096):  # populate
        p.write(va, b"a")
    child = p.fork()
    for va in range(addr, addr + size, 4096):  # the COW faults under test
        p.write(va, b"b")
    assert child.read(addr, 1) == b"a"
    return {"faults": k.vmstat["pgfault"], "cow_copies": len(k.cow_log)}


def baseline_loop(size: int) -> dict[str, float]:
    import numpy as np

    pages = size // 4096
    arr = np.zeros(pages, dtype=np.int32)
    table: dict[int, int] = {}
    for i in range(pages):
        table[i] = i
        arr[i] = i
    return {"faults": 0, "cow_copies": 0}


def child(name: str, kernel_id: str, quick: bool) -> None:
    size = (64 << 20) if quick else GIB
    start = time.perf_counter()
    if name.startswith("rdma"):
        from cowlab.workloads import rdma

        mr = (16 << 20) if quick else 512 << 20
        r = rdma.run(kernel_id, size=mr, mapping=name.split("-")[1])
        out = {"faults": r.faults, "cow_copies": r.cow_copies, "compare_error": r.error is not None}
    elif name.startswith("fork-write"):
        out = fork_write(kernel_id, size, thp=name.endswith("thp"))
    else:
        out = baseline_loop(size)
    emit(out, start)


def run_child(name: str, kernel_id: str, quick: bool) -> dict[str, float]:
    return run_script(__file__, ["--child", name, "--kernel", kernel_id, *(["--quick"] * quick)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--child")
    parser.add_argument("--kernel", default="v4.5")
    parser.add_argument("--out")
    parser.add_argument("--kernels", default=KERNELS, help=f"comma-separated ({KERNELS})")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.kernel, args.quick)
        return
    for kernel_id in args.kernels.split(","):
        try:
            resolve(kernel_id)
        except ReleaseError as e:
            parser.error(f"--kernels: {e}")
    base_mem = import_rss_mib()
    base_loop = run_child("baseline-loop", "v4.5", args.quick)["seconds"]
    lines = [
        f"Machine: {platform.machine()}, Python {platform.python_version()}; "
        f"baselines: import-only peak RSS {base_mem:.0f} MiB, per-page loop {base_loop:.3f} s",
        "",
        "| workload | kernel | wall s | x loop baseline | peak RSS MiB | x import RSS "
        "| faults | faults/s | COW copies |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("rdma-pmd", "rdma-pte", "fork-write-thp", "fork-write-4k"):
        for kernel_id in args.kernels.split(","):
            r = run_child(name, kernel_id, args.quick)
            faults = int(r["faults"])
            rate = f"{faults / r['seconds']:,.0f}" if faults > 0 else "-"
            lines.append(
                f"| {name} | {kernel_id} | {r['seconds']:.2f} | {r['seconds'] / base_loop:.1f} "
                f"| {r['peak_rss_mib']:.0f} | {r['peak_rss_mib'] / base_mem:.1f} "
                f"| {faults if faults > 0 else '-'} | {rate} | {int(r['cow_copies'])} |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
