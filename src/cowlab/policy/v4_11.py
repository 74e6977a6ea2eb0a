"""Linux 4.11: KSM may merge zero-filled pages with the shared zero page."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "4.11",
    ("e86c59b1b12d",),
    "mm/ksm: improve deduplication of zero pages with colouring",
    "/sys/kernel/mm/ksm/use_zero_pages exists: when set, ksmd maps a zero-filled page to the "
    "shared zero page instead of merging it",
    "4.9.0 (absent) -> 4.14.177 mm/ksm.c use_zero_pages (bracketed, docs/sources-ksm.md)",
)
class KsmUseZeroPages(Policy):
    new_knobs = frozenset({"ksm_use_zero_pages"})
