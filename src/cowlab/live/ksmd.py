"""Driving the live kernel's ksmd one full pass at a time, through the journal.

ksmd scans up to `pages_to_scan` pages per batch and a batch ends where a full pass ends
(scan_get_next_rmap_item returns nothing after it counts the pass in `full_scans`); then it
sleeps `sleep_millisecs`. With `pages_to_scan` larger than any scenario and a long sleep, each
`run=1` wakes ksmd for exactly one pass: the cursor starts at the list head (it is back there
after every pass), so the pass covers every registered mm. `run=0` during the sleep stops it
before the next, and changing `sleep_millisecs` ends that sleep (ksmd waits on a change of it),
so the next `run=1` finds ksmd waiting for it. That wake can be lost: ksmd may read the new
`sleep_millisecs` just after it decided to sleep (it checked `run` before our `run=0`) and then
sleep the whole SLEEP_MS, deaf to `run=1`. So while a pass has not begun, the wait changes
`sleep_millisecs` again every NUDGE_S, which ends such a sleep. After the case, `run=2` unmerges
everything and drops the stable tree (whose nodes would otherwise outlive the case's processes in
`pages_shared`); the journal puts `run`, `pages_to_scan` and `sleep_millisecs` back at the end
of the run.
"""

from __future__ import annotations

import time
from pathlib import Path

from cowlab.live.journal import SystemChanges

KSM = Path("/sys/kernel/mm/ksm")
PAGES_PER_PASS = 1 << 20  # more than any scenario maps
SLEEP_MS = 5000  # ksmd sleeps this long after a pass: time to stop it
PASS_TIMEOUT_S = 20.0
NUDGE_S = 0.05


def full_scans() -> int:
    return int((KSM / "full_scans").read_text())


def registered_with_ksm(pid: int) -> bool:
    """/proc/PID/ksm_stat's ksm_mergeable (MMF_VM_MERGEABLE): ksmd scans this process."""
    try:
        text = Path(f"/proc/{pid}/ksm_stat").read_text()
    except OSError:
        return False
    return "ksm_mergeable: yes" in text


def ksmd_passes(changes: SystemChanges, passes: int) -> bool:
    """Let ksmd make `passes` full passes; False if one did not end within PASS_TIMEOUT_S."""
    changes.set(KSM / "pages_to_scan", str(PAGES_PER_PASS))
    for _ in range(passes):
        _end_sleep(changes)
        start = full_scans()
        changes.set(KSM / "run", "1")
        ended = _pass_ended(changes, start)
        changes.set(KSM / "run", "0")
        if not ended:
            return False
    # a new sleep_millisecs wakes ksmd from its sleep, so it goes back to waiting for run=1
    _end_sleep(changes)
    return True


def _end_sleep(changes: SystemChanges) -> None:
    """Change sleep_millisecs (between two values): ksmd's timed sleep ends on any change."""
    current = int((KSM / "sleep_millisecs").read_text())
    changes.set(KSM / "sleep_millisecs", str(SLEEP_MS + 1 if current == SLEEP_MS else SLEEP_MS))


def _pass_ended(changes: SystemChanges, start: int) -> bool:
    """Wait for full_scans to pass `start`, ending a sleep that missed its wake-up if need be."""
    now = time.monotonic()
    deadline, nudge_at = now + PASS_TIMEOUT_S, now + NUDGE_S
    while full_scans() == start:
        now = time.monotonic()
        if now > deadline:
            return False
        if now > nudge_at:
            _end_sleep(changes)
            nudge_at = now + NUDGE_S
        time.sleep(0.001)
    return True


def ksm_reset(changes: SystemChanges) -> None:
    """run=2: unmerge every KSM page and empty the stable tree (then stopped)."""
    changes.set(KSM / "run", "2")
