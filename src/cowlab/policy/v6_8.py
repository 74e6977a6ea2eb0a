"""Linux 6.8: anonymous multi-size THP."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "6.8",
    ("19eaf44954df",),
    "mm: thp: support allocation of anonymous multi-size THP",
    "a first-touch fault may allocate a large folio of an order enabled in "
    "hugepages-<size>kB/enabled, mapped by PTEs",
    "6.7.3 mm/memory.c do_anonymous_page (one order-0 zeroed folio) and mm/huge_memory.c (no "
    "hugepages-<size>kB directories) -> 6.8.0 do_anonymous_page, alloc_anon_folio (verified; "
    "6.7.3 from xlch88/kernel-6.7.3-cjktty, Makefile 6.7.3, whose cjktty patch is console-only)",
)
class AnonMthp(Policy):
    mthp = True
    new_knobs = frozenset({"mthp"})
