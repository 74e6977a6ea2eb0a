"""Linux 6.12: splitting a THP maps its zero-filled pages to the zero page."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "6.12",
    ("b1f202060afe",),
    "mm: remap unused subpages to shared zeropage when splitting isolated thp",
    "split_huge_page maps the zero-filled subpages of an anonymous THP to the shared zero page "
    "and frees them",
    "6.9.0 -> 6.12.0 mm/huge_memory.c remap_page, RMP_USE_SHARED_ZEROPAGE (bracketed)",
)
class SplitMapsZeropage(Policy):
    split_maps_unused_to_zeropage = True
