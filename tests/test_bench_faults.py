"""bench/bench_faults.py at a tiny size: a baseline tree and this one, a row per measure with a
positive median in each tree's column (and in --paired's table), and what each workload did,
derived by hand from bench_live.py's model child (so a bench that measures another workload
fails here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent

# 256 KiB written page by page with THP off: 64 single-page writes fault once each
# (do_anonymous_page, a new frame); fork shares the 64 frames write-protected without a fault;
# the 64 writes after it fault once each, and with the child mapping every page both kernels
# copy (v4.5: page_mapcount 2; v6.18: not PageAnonExclusive after fork, page_count 2); the
# child's exit frees the 64 originals. Operations: spawn, mmap, 64 writes; fork, 64 writes; exit.
PAGE_BY_PAGE = {
    "first touch: faults": 64,
    "COW write: faults": 64,
    "after first touch: operations": 66,
    "after first touch: copies": 0,
    "after first touch: frames": 64,
    "after COW write: operations": 131,
    "after COW write: copies": 64,
    "after COW write: frames": 128,
    "after exit: operations": 132,
    "after exit: copies": 64,
    "after exit: frames": 64,
}
# 4 MiB, THP always, range operations (one fill a phase): the first touch is one huge-PMD
# fault a THP (2, 1,024 frames); the COW write splits each PMD the child still maps and copies
# every 4 KiB page, a fault each (1,024; the split happens in the first page's fault); the
# child's exit unmaps the last mapping of both THPs. Operations: spawn, mmap, fill; fork,
# fill; exit.
THP_RANGE = {
    "first touch: faults": 2,
    "COW write: faults": 1024,
    "after first touch: operations": 3,
    "after first touch: copies": 0,
    "after first touch: frames": 1024,
    "after COW write: operations": 5,
    "after COW write: copies": 1024,
    "after COW write: frames": 2048,
    "after exit: operations": 6,
    "after exit: copies": 1024,
    "after exit: frames": 1024,
}


def test_report_has_both_trees_and_every_measure() -> None:
    cmd = [sys.executable, str(ROOT / "bench" / "bench_faults.py"), "--size", "256K"]
    cmd += ["--reps", "1", "--baseline", str(ROOT / "src"), "--kernels", "v4.5,v6.18"]
    cmd += ["--exit-size", "4M", "--skip-matrix", "--paired", "2", "--paired-thp", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    lines = done.stdout.splitlines()
    assert lines.count("| measure | baseline | this tree |") == 1
    assert lines.count("| workload | baseline | this tree |") == 1
    cells_of = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    rows = {cells[0]: cells[1:] for cells in cells_of if len(cells) > 1}
    measures = [f"{k} {m} µs/fault" for k in ("v4.5", "v6.18") for m in ("first touch", "COW")]
    measures += ["v6.18 THP 4 MiB exit ms", "v6.18 THP 4 MiB COW write µs/page"]
    for measure in measures:
        cells = rows[measure]
        assert len(cells) == 2
        assert all(float(cell.split()[0]) > 0 for cell in cells), (measure, cells)
    expected = {
        f"{k} page by page {m}": n for k in ("v4.5", "v6.18") for m, n in PAGE_BY_PAGE.items()
    }
    expected |= {f"v6.18 THP 4 MiB range {m}": n for m, n in THP_RANGE.items()}
    got = {m: rows[m] for m in expected}
    assert got == {m: [f"{n:,}", f"{n:,}"] for m, n in expected.items()}
    # --paired: each kernel's two phases, a positive ratio and per-fault figure in each cell
    for kernel in ("v4.5", "v6.18"):
        for phase in ("first touch", "COW"):
            ratio, base, new = rows[f"{kernel} {phase}"]
            assert float(ratio.split()[0]) > 0 and float(base) > 0 and float(new) > 0
    # --paired-thp: each round's 8 MiB fill after the fork faults once a page (4 THPs: the PMD
    # split in the first page's fault, 2,048 faults), else the child fails the bench
    ratio, base, new = rows["v6.18 THP COW write"]
    assert float(ratio.split()[0]) > 0 and float(base) > 0 and float(new) > 0


def test_a_round_that_does_not_fault_once_a_page_fails() -> None:
    """timed_faults: a write of 4 pages that faulted 3 times is no round of the workload."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_faults
    finally:
        sys.path.remove(str(ROOT / "bench"))

    counted = SimpleNamespace(vmstat={"pgfault": 0})

    def three_faults() -> None:
        counted.vmstat["pgfault"] += 3

    assert bench_faults.timed_faults("x", counted, 3, three_faults) >= 0
    with pytest.raises(RuntimeError, match="a round of 4 page writes did not fault once each"):
        bench_faults.timed_faults("x", counted, 4, three_faults)
