"""The live backend: run programs on the running Linux kernel and observe what it did.

``system`` checks what is available (preflight) and records the kernel's settings; ``journal``
changes sysfs knobs only with a durable undo record; ``driver`` runs real forked worker processes
with cowlab.kernel.Process's API; ``observe`` describes their pages as labelled structure.
"""

from cowlab.live.driver import LiveMachine, LivePin, LiveProcess, LiveWorkerBug, LiveWorkerDied
from cowlab.live.journal import SystemChangeRefused, SystemChanges, restore_from_journal
from cowlab.live.observe import PageObs, Snapshot, snapshot
from cowlab.live.system import KernelFacts, kernel_facts, preflight

__all__ = [
    "KernelFacts",
    "LiveMachine",
    "LivePin",
    "LiveProcess",
    "LiveWorkerBug",
    "LiveWorkerDied",
    "PageObs",
    "Snapshot",
    "SystemChangeRefused",
    "SystemChanges",
    "kernel_facts",
    "preflight",
    "restore_from_journal",
    "snapshot",
]
