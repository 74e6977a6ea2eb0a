"""Linux 5.1: a KSM page nobody else references is reused by a write fault."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "5.1",
    ("52d1e606ee73",),
    "mm: reuse only-pte-mapped KSM page in do_wp_page()",
    "do_wp_page reuses a KSM page with its stable node, page_count 1 and not in the swap cache "
    "(reuse_ksm_page), moving it to the VMA's anon_vma",
    "5.0.1 -> 5.1.15 mm/memory.c do_wp_page, mm/ksm.c reuse_ksm_page",
)
class ReuseKsmPage(Policy):
    reuses_ksm_page = True
