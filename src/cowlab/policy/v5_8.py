"""Linux 5.8: a shared PMD-mapped THP is no longer copied whole — the PMD is split and only the
faulting 4 KiB is copied (3917c80280c9, "thp: change CoW semantics for anon-THP"); every GUP on
a COW mapping, read pins included, breaks COW first (17839856fd58, "gup: document and work around
'COW can break either way' issue"); FOLL_PIN pins are counted (5.7: GUP_PIN_COUNTING_BIAS)."""

from __future__ import annotations

from typing import ClassVar

from cowlab.policy.v4_14 import V4_14


class V5_8(V4_14):
    id = "v5.8"
    release = "5.8 (2020-08-02)"
    commits: ClassVar[tuple[str, ...]] = ("3917c80280c9", "17839856fd58", "47e29d32afba")
    summary = (
        "PTE/PMD reuse iff page_trans_huge_mapcount == 1; a PMD not reused is split and 4 KiB "
        "copied; GUP breaks COW for reads too"
    )
    foll_pin = True
    pmd_cow_splits = True
    huge_zero_wp_allocates = False
    gup_breaks_cow_on_read = True
    madv_pageout = True  # 5.4
