"""cowlab show: the text view, and the HTML page rendered by headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cowlab.cli import main
from cowlab.scenario import load_scenario
from cowlab.show import FRAME, memory_at, render_html, render_svg, render_text

ROOT = Path(__file__).resolve().parent.parent
RDMA = ROOT / "examples" / "rdma_pmd.yaml"
SHOTS = ROOT / "build" / "screenshots"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    "--window-size=1100,1400",
]


def test_text_view_after_the_v45_copy() -> None:
    # After step 7 on v4.5: the pinned THP is unmapped (all 512 subpages still pinned), the
    # process maps its 2 MiB copy with one PMD.
    view = memory_at(load_scenario(RDMA), "v4.5", 7)
    assert len(view.folios) == 2
    old, new = view.folios
    assert old.nr == new.nr == 512
    assert old.pmd_by == [] and sum(old.pinned) == 512 and max(old.mapcounts) == 0
    assert new.pmd_by == ["P"] and set(new.mapcounts) == {1} and not any(new.pinned)
    text = render_text(view)
    assert "THP pfn" in text and "PMD-mapped by P" in text and "512 pinned" in text


def test_text_view_with_the_fix_keeps_one_thp() -> None:
    view = memory_at(load_scenario(RDMA), "v4.5+6d0a07e", 7)
    (thp,) = view.folios
    assert thp.pmd_by == ["P"] and sum(thp.pinned) == 512 and thp.refcount == 513


def test_svg_has_one_frame_per_folio() -> None:
    svg = render_svg(memory_at(load_scenario(RDMA), "v4.5", 7))
    assert svg.count('class="folio"') == 2 and svg.startswith("<svg")


def count_frames(png: Path) -> int:
    """Top-left corners of the folio frame colour: one per folio drawn."""
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    want = np.array([int(FRAME[i : i + 2], 16) for i in (1, 3, 5)])
    blue = (rgb == want).all(axis=2)
    corner = blue.copy()
    corner[1:, :] &= ~blue[:-1, :]
    corner[:, 1:] &= ~blue[:, :-1]
    corner[:-1, :] &= blue[1:, :]
    corner[:, :-1] &= blue[:, 1:]
    return int(corner.sum())


def test_html_screenshot_in_headless_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("COWLAB_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required here (COWLAB_REQUIRE_CHROMIUM is set)")
        pytest.skip("no chromium on this machine (.ci/run installs Debian's chromium)")
    page = tmp_path / "rdma.html"
    assert main(["show", str(RDMA), "--kernel", "v4.5", "--step", "7", "--html", str(page)]) == 0
    assert "<script" not in page.read_text() and "http" not in page.read_text().split("<svg")[0]
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / "rdma_pmd_v4.5_step7.png"
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run(
        [*cmd, f"--screenshot={shot}", page.as_uri()], check=True, timeout=120, capture_output=True
    )
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # not blank
    assert count_frames(shot) == 2  # the pinned original THP and its 2 MiB copy


def test_html_is_self_contained() -> None:
    html = render_html(memory_at(load_scenario(RDMA), "v4.5+6d0a07e", 7))
    assert html.startswith("<!DOCTYPE html>") and "<link" not in html and "src=" not in html
    assert html.count('class="folio"') == 1


def test_text_view_of_a_thp_in_the_swap_cache() -> None:
    """5.19, an SSD: the THP is in the swap cache whole (slots 0..511, 4.14+) and the read of
    page 3 mapped only that page (before 6.10): one line for its 512 slots, 511 of them still
    held by a swap PTE, and the THP drawn once with its slot range."""
    scenario = load_scenario(ROOT / "examples" / "timeline" / "4.14_thp_swap_counts.yaml")
    view = memory_at(scenario, "v5.19", 5)
    assert view.swap == [
        "swap slots 0..511: swap PTEs 0 on 1 slot, 1 on 511 slots, swap cache pfn "
        f"{view.folios[0].head:#x} (512-page folio, whole)"
    ]
    (thp,) = view.folios
    assert thp.nr == 512 and thp.swapcache == "slots 0..511" and thp.pte_by == ["P"]
    assert "511 swapped out" in render_text(view)


def test_a_ksm_page_without_a_stable_node_is_titled_so(tmp_path: Path) -> None:
    """ksmd's failed second merge (tests/test_ksm.py) leaves P's page KSM with a NULL stable
    node: the view says so, where it printed ksm.NULL_STABLE_NODE's raw value (2147483648)."""
    path = tmp_path / "no_stable_node.yaml"
    path.write_text(
        "name: a failed second merge\nkernels: ['6.18']\nprocesses: [P]\nsteps:\n"
        "  - {op: mmap, proc: P, name: buf, size: 8K}\n"
        "  - {op: write, proc: P, at: buf+4K, data: same}\n"
        "  - {op: fork, proc: P, child: C}\n"
        "  - {op: write, proc: C, at: buf, data: same}\n"
        "  - {op: pin, proc: C, name: mr, at: buf, size: 4K}\n"
        "  - {op: madvise, proc: C, at: buf, size: 8K, advice: mergeable}\n"
        "  - {op: ksmd, scans: 2}\n"
    )
    view = memory_at(load_scenario(path), "v6.18", None)
    (ksm,) = [folio.title() for folio in view.folios if folio.title().startswith("KSM")]
    assert ksm.startswith("KSM page (no stable node) pfn") and "2147483648" not in render_text(view)
