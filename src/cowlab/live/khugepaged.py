"""Forcing khugepaged passes on the live kernel, through the journal, and when that is faithful.

Between commands every worker keeps khugepaged away with PR_SET_THP_DISABLE (the fence,
worker.khugepaged_fence): 6.18's khugepaged_scan_mm_slot() skips an mm with
MMF_DISABLE_THP_COMPLETELY (hpage_collapse_test_exit_or_disable) but keeps its slot on the list
(collect_mm_slot() frees only exited mms). A forced scan opens the fences of the case's
processes, sets `khugepaged/` to scan without sleeping (`scan_sleep_millisecs=0`, a
`pages_to_scan` above any case, `alloc_sleep_millisecs=0`) and the `max_ptes_*` limits to the
model's, waits until `full_scans` has moved by two (one whole pass began after the fences
opened), puts the scan knobs back and closes the fences (the prctl takes mmap_lock for writing,
so a collapse under way ends first; one started after it fails its VMA re-check). The journal
restores every knob at the end of the run.

The live kernel makes one or more passes over the mms in the order they registered
(__khugepaged_enter() adds at the tail; the first pass may begin in the middle), the model one
pass in pid order. These agree only if the model's pass ends the same in every order and a
second pass changes nothing: pass_reason() checks it on copies of the model kernel.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cowlab.check.clone import deep_copy
from cowlab.live.journal import SystemChanges
from cowlab.live.system import THP_DIR, read_knob
from cowlab.mm.khugepaged import hugepage_vma_check, khugepaged_scan_mm

if TYPE_CHECKING:
    from cowlab.kernel import Kernel
    from cowlab.mm.mm_types import MmStruct

KHUGEPAGED = THP_DIR / "khugepaged"
PAGES_PER_PASS = 1 << 24  # more than any case maps (pages_to_scan is an unsigned int)
SCAN_KNOBS = {"scan_sleep_millisecs": "0", "pages_to_scan": str(PAGES_PER_PASS)}
SCAN_KNOBS["alloc_sleep_millisecs"] = "0"
LIMITS = ("max_ptes_none", "max_ptes_swap", "max_ptes_shared")
PASSES = 2  # full_scans moves at the end of a pass: two mean one whole pass after the start
PASS_TIMEOUT_S = 20.0


def full_scans() -> int:
    return int((KHUGEPAGED / "full_scans").read_text())


def khugepaged_passes(changes: SystemChanges, limits: dict[str, int]) -> bool:
    """Let khugepaged run until one whole pass has begun and ended (the caller has opened the
    fences); the scan knobs are as before afterwards, the limits stay. False on timeout."""
    for name, limit in limits.items():
        changes.set(KHUGEPAGED / name, str(limit))
    before = {name: read_knob(KHUGEPAGED / name) for name in SCAN_KNOBS}
    start = full_scans()
    try:
        for name, value in SCAN_KNOBS.items():  # scan_sleep_millisecs first: it wakes khugepaged
            changes.set(KHUGEPAGED / name, value)
        return _wait_for(start + PASSES)
    finally:
        for name, value in before.items():
            changes.set(KHUGEPAGED / name, value)


def _wait_for(scans: int) -> bool:
    deadline = time.monotonic() + PASS_TIMEOUT_S
    while full_scans() < scans:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def model_limits(k: Kernel) -> dict[str, int]:
    """The model's khugepaged/max_ptes_* (a `set` step may have changed them)."""
    return {name: int(getattr(k, name)) for name in LIMITS}


def pass_reason(k: Kernel) -> str | None:
    """Why the live passes may end elsewhere than the model's one pass, or None.

    Only the mms khugepaged could collapse something in count. One pass in each order of them
    runs on a copy of the model kernel, and the blocks collapsed must be the same. Then a second
    pass changes nothing either: a block it would collapse was enabled by a collapse in another
    mm scanned after it (a collapse changes only its own block's pages), so the order with that
    mm first would have collapsed it in the first pass.
    """
    n = len(_scannable_mms(k))
    if n < 2:
        return None  # one mm: its blocks do not depend on each other
    results = {_collapsed_in_order(k, order) for order in itertools.permutations(range(n))}
    if len(results) > 1:
        return (
            "the blocks a khugepaged pass collapses depend on the order of the processes "
            "(the live kernel scans them in the order they registered, one or more times)"
        )
    return None


def _scannable_mms(k: Kernel) -> list[MmStruct]:
    """The mms, by pid, with a VMA khugepaged may collapse."""
    mms = [p.mm for p in sorted(k.processes.values(), key=lambda p: p.pid)]
    return [mm for mm in mms if any(hugepage_vma_check(k, v, True) is None for v in mm.vmas)]


def _collapsed_in_order(k: Kernel, order: tuple[int, ...]) -> frozenset[tuple[int, int]]:
    """(position by pid, block) of every collapse of one pass, on a copy, in the given order."""
    kc = deep_copy(k, {})  # copy.deepcopy's copy, faster
    mms = _scannable_mms(kc)
    return frozenset((i, haddr) for i in order for haddr in khugepaged_scan_mm(kc, mms[i]))


def knob_paths() -> list[Path]:
    """Every khugepaged knob a forced scan may change (for tests: the machine's state)."""
    return [KHUGEPAGED / name for name in (*SCAN_KNOBS, *LIMITS)]
