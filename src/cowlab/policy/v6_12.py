"""Linux 6.12: splitting a THP maps its zero-filled pages to the zero page; ksmd checksums a page
before searching the stable tree."""

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


@landed(
    "6.12",
    ("d58a361b0350",),
    "mm/ksm: don't waste time searching stable tree for fast changing page",
    "a page not yet KSM must be unchanged for one pass (checksum) before it can join a stable "
    "KSM page too",
    "6.9.0 -> 6.12.0 mm/ksm.c cmp_and_merge_page (bracketed 6.10-6.12); upstream 6.11: a tree "
    "rebased on mainline after the 6.11 merge window (26 Jul 2024) lists d58a361b0350; kept at "
    "6.12 until a 6.11 tree is read",
)
class KsmChecksumFirst(Policy):
    ksm_checksum_before_stable = True
