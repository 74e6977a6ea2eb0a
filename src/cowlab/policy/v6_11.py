"""Linux 6.11: an exclusive page swapped in by a read fault is mapped writable."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "6.11",
    ("c18160dba5ff",),
    "mm: swap: reuse exclusive folio directly instead of wp page faults",
    "do_swap_page maps an exclusive page writable on a read fault too (VM_WRITE, no soft-dirty "
    "tracking waiting for the write)",
    "6.9.0 -> 6.12.0 mm/memory.c do_swap_page (bracketed, docs/sources-swap.md)",
)
class SwapinWritableOnRead(Policy):
    swapin_maps_writable_on_read = True
