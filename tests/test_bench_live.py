"""bench/bench_live.py at a tiny size: the C program's output parses, the ctypes path reports
the same keys, and the harness's report has every row, with either live path."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SIZE = 4 << 20
HAVE_CC = shutil.which("cc") is not None


def load() -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module("bench_live")


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(BENCH / "bench_live.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)


def check_live(bl: ModuleType, r: dict[str, int], thp: bool) -> None:
    assert set(bl.LIVE_KEYS) <= set(r)
    pages = SIZE // 4096
    assert (r["size"], r["thp"], r["pages"]) == (SIZE, int(thp), pages)
    for phase in bl.PHASES:
        assert r[f"{phase}_ns"] > 0
    # every page is written after fork: one COW fault a page (a THP is split, then copied 4 KiB
    # at a time), a few more for the program's own stack and data
    assert pages <= r["cow_write_faults"] < pages + 64
    if not thp:
        assert pages <= r["first_touch_faults"] < pages + 64
        assert r["anon_huge_kb"] == 0
    assert r["peak_rss_kb"] >= SIZE // 1024
    assert r["child_peak_rss_kb"] >= SIZE // 1024


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler (cc) on this machine")
@pytest.mark.parametrize("thp", [True, False])
def test_compiled_program_output_parses(thp: bool) -> None:
    bl = load()
    with tempfile.TemporaryDirectory() as tmp:
        binary = bl.compile_workload(Path(tmp))
        assert binary is not None
        r = bl.live_compiled(binary, SIZE, thp)
    check_live(bl, r, thp)


@pytest.mark.parametrize("thp", [True, False])
def test_ctypes_path_reports_the_same_keys(thp: bool) -> None:
    bl = load()
    r = bl.run_child(
        str(BENCH / "bench_live.py"), ["--live-child", str(SIZE), "on" if thp else "off"]
    )
    check_live(bl, {k: int(v) for k, v in r.items()}, thp)


def test_parse_live_output_names_what_is_missing() -> None:
    bl = load()
    with pytest.raises(ValueError, match="cow_write_faults"):
        bl.parse_live_output("size=4096\nfirst_touch_ns=12\n")


@pytest.mark.parametrize(
    "live", [pytest.param("cc", marks=pytest.mark.skipif(not HAVE_CC, reason="no cc")), "ctypes"]
)
def test_report_has_every_row(live: str, tmp_path: Path) -> None:
    bl = load()
    out = tmp_path / "report.md"
    args = ["--size", "4M", "--sizes", "4M,8M", "--model-max", "4M", "--reps", "1"]
    args += ["--kernels", "v6.18", "--live", live, "--no-plot", "--huge-size", "4M"]
    done = harness(*args, "--out", str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "Command: `python bench/bench_live.py --size 4M" in text
    assert ("compiled (cc -O2" if live == "cc" else "ctypes (libc") in text
    for mode in ("on", "off"):
        assert f"### Fork-write, 4 MiB, THP {mode}" in text
        assert f"| 4 MiB | {mode} |" in text
        assert f"| 8 MiB | {mode} |" in text
    for measure in bl.MEASURES:
        rows = [line for line in text.splitlines() if line.startswith(f"| {measure} |")]
        assert len(rows) == 2, measure
        # live, then value and ratio for v6.18 range and per-page
        assert all(len(row.strip("|").split("|")) == 6 for row in rows)
    assert "- model 8 MiB v6.18 range, THP on: above --model-max 4 MiB" in text
    assert "| 8 MiB | on |" in text and "skipped" in text
    huge = [line for line in text.splitlines() if line.startswith("| v6.18 |")]
    assert len(huge) == 1 and "| 1,024 |" in huge[0]  # 4 MiB pinned: 1,024 pages


@pytest.mark.parametrize(
    "flags",
    [
        ["--sizes", "3X"],
        ["--reps", "0"],
        ["--kernels", "v9.9"],
        ["--thp", "maybe"],
        ["--size", "5000"],
    ],
)
def test_flag_errors_are_one_line(flags: list[str]) -> None:
    done = harness(*flags)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("bench_live.py: error: argument ")
