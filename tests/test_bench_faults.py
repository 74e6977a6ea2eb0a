"""bench/bench_faults.py at a tiny size: a baseline tree and this one, a row per measure with a
positive median in each tree's column."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_report_has_both_trees_and_every_measure() -> None:
    cmd = [sys.executable, str(ROOT / "bench" / "bench_faults.py"), "--size", "256K"]
    cmd += ["--reps", "1", "--baseline", str(ROOT / "src"), "--kernels", "v4.5"]
    cmd += ["--exit-size", "4M", "--skip-matrix"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    lines = done.stdout.splitlines()
    assert "| measure | baseline | this tree |" in lines
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in lines if "|" in line}
    measures = ["v4.5 first touch µs/fault", "v4.5 COW µs/fault", "v6.18 THP 4 MiB exit ms"]
    measures.append("v6.18 THP 4 MiB COW write µs/page")
    for measure in measures:
        cells = rows[measure]
        assert len(cells) == 2
        assert all(float(cell.split()[0]) > 0 for cell in cells), (measure, cells)
