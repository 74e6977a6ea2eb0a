"""Versions of the seed that were reviewed and never released: each is Linux 4.5 plus that
version of 6d0a07edd17c instead of the final one."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "4.5",
    ("6d0a07edd17c (v1 review)",),
    "the review version of the seed (linux-mm, April-May 2016)",
    "reuse as the final patch, but page_move_anon_rmap on every reuse: a THP whose halves are "
    "mapped by parent and child moves to the child's anon_vma, and the rmap walk misses the "
    "parent (Kirill Shutemov's objection)",
    "the seed's review thread (../shared/seeds/000_9d3320adf7caf5ed.txt)",
)
class EarlyMovesAlways(Policy):
    def move_anon_rmap_on_reuse(self, total_mapcount: int) -> bool:
        return True
