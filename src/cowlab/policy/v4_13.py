"""Linux 4.13: a KSM page is shared by at most max_page_sharing mappings."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "4.13",
    ("2c653d0ee2ae",),
    "ksm: introduce ksm_max_page_sharing per page deduplication limit",
    "a stable KSM page takes at most max_page_sharing (256) sharers, then a new KSM page of the "
    "same contents starts a chain; /sys/kernel/mm/ksm/max_page_sharing exists",
    "4.9.0 (absent) -> 4.14.177 mm/ksm.c stable_node_chain, ksm_max_page_sharing (bracketed, "
    "docs/sources-ksm.md); id: Hugh Dickins on stable@ (2018) names 2c653d0ee2ae Andrea's 4.13 "
    "commit, absent from 4.9-stable",
)
class KsmMaxPageSharing(Policy):
    ksm_max_page_sharing = True
    new_knobs = frozenset({"ksm_max_page_sharing"})
