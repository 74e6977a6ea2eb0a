"""Linux 6.11: a large folio found in the swap cache is mapped whole; an exclusive page swapped
in by a read fault is mapped writable; ksmd checksums a page before searching the stable tree."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "6.11",
    ("508758960b8d", "4c3f96643687"),
    "mm: swap: entirely map large folios found in swapcache; mm: swap: make "
    "should_try_to_free_swap() support large-folio (Chuanhua Han, Barry Song)",
    "do_swap_page maps a large folio found in the swap cache whole when it lies in the VMA and "
    "one page table and its PTEs are its consecutive swap PTEs; a write swap-in frees the swap "
    "cache at refcount 1 + the folio's pages",
    "6.10.0 mm/memory.c do_swap_page maps the faulting page only, should_try_to_free_swap wants "
    "refcount 2 (UBC-BPF/linux-6.10-3po, a research fork; Makefile 6.10.0) -> 6.11.11 (the "
    "whole folio, 1 + its pages); the series' v5 was posted on 29 May 2024, after 6.10-rc1, "
    "and was in akpm's mm-unstable on 30 May 2024 (docs/sources-swap.md §3g; placed at 6.10 "
    "before); ids: the revision list of jic23/iio's testing branch, pushed 27 Jul 2024 on "
    "mainline after the 6.11 MM merge, carries the series from ebfba0045176 (swap_free_nr, "
    "also a commit of a korg/linux mirror) to these two, next to c18160dba5ff; the other ids "
    "of the titles (d589b176f0b8, 36428bd5b29f, 401b48e6e087, 9ce613e50598) are mm-unstable "
    "rebases",
)
class SwapinMapsWholeFolio(Policy):
    swapin_maps_whole_folio = True


@landed(
    "6.11",
    ("c18160dba5ff",),
    "mm: swap: reuse exclusive folio directly instead of wp page faults",
    "do_swap_page maps an exclusive page writable on a read fault too (VM_WRITE, no soft-dirty "
    "tracking waiting for the write)",
    "6.10.0 mm/memory.c do_swap_page (writable only on a write fault; UBC-BPF/linux-6.10-3po, a "
    "research fork, Makefile 6.10.0) -> 6.11.11 (VM_WRITE and no uffd-wp or soft-dirty wait: "
    "writable on a read fault too); docs/sources-swap.md",
)
class SwapinWritableOnRead(Policy):
    swapin_maps_writable_on_read = True


@landed(
    "6.11",
    ("d58a361b0350",),
    "mm/ksm: don't waste time searching stable tree for fast changing page",
    "a page not yet KSM must be unchanged for one pass (checksum) before it can join a stable "
    "KSM page too",
    "6.9.0 -> 6.11.11 mm/ksm.c cmp_and_merge_page (bracketed: no 6.10 or 6.11.0 tree; 6.11 "
    "from the merge window: a tree rebased on mainline after the 6.11 merge, pushed 26 Jul "
    "2024, lists d58a361b0350)",
)
class KsmChecksumFirst(Policy):
    ksm_checksum_before_stable = True
