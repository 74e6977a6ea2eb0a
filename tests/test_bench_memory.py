"""bench/bench_memory.py at a tiny size: a baseline tree and this one, every row of the table,
and the pinned region's table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_report_has_both_trees_and_every_row() -> None:
    cmd = [sys.executable, str(ROOT / "bench" / "bench_memory.py"), "--size", "4M", "--reps", "1"]
    cmd += ["--baseline", str(ROOT / "src"), "--kernels", "v4.5", "--huge-size", "8M"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    lines = done.stdout.splitlines()
    header = "| kernel | THP | baseline MiB | baseline B/page | this tree MiB | this tree B/page |"
    assert header in lines
    rows = [line.split(" | ") for line in lines if line.startswith("| v4.5 |")]
    assert [(row[1], len(row)) for row in rows] == [("on", 6), ("off", 6)]
    assert any(line.startswith("Memory base") for line in lines)
    pinned = [line.split(" | ")[1] for line in lines if line.startswith(("| baseline", "| this"))]
    assert pinned == ["v4.5", "v4.5"]
