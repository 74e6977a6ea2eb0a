"""Linux 6.8: anonymous multi-size THP; ksm_might_need_to_copy returns a large folio as it is."""

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


@landed(
    "6.8",
    (),
    "mm: ksm: use more folio api in ksm_might_need_to_copy()",
    "do_swap_page maps a page of a large folio found in the swap cache as it is: "
    "ksm_might_need_to_copy returns a large folio untested; before, it tested the page as a "
    "small one, and a THP's tail page, whose own ->index no path sets (the second tail's holds "
    "the deferred-split list, 4.14-6.1; the first tail's the pin count and folio size, "
    "6.6-6.7), was copied (ksm_swpin_copy), its head mapped as it is where its anon_vma root "
    "and linear index are the fault's",
    "6.7.3 mm/ksm.c ksm_might_need_to_copy (the page's own ->index), include/linux/mm_types.h "
    "struct folio -> 6.8.0 ksm_might_need_to_copy(folio) returns a large folio first "
    "(verified); the same page test in 4.14.177, 5.10.7, 6.1.20, 6.6.9; Kefeng Wang's "
    "posting (v2, 13 Nov 2023) adds the test; mainline id not confirmed "
    "(docs/sources-ksm.md section 4)",
)
class KsmSwapinLargeFolio(Policy):
    ksm_swapin_large_as_is = True
