"""Versions of the seed that were reviewed and never released: each is Linux 4.5 plus that
version of 6d0a07edd17c instead of the final one."""

from __future__ import annotations

from cowlab.mm.mm import PageTransCompound, page_mapcount
from cowlab.mm.page_alloc import PageFrames
from cowlab.policy.base import Policy, Reads, ReuseCount
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


UNSET = -1  # what the model reads for a total_mapcount nobody wrote: never 1


@landed(
    "4.5",
    ("6d0a07edd17c (review version)",),
    "a review version of the seed with total_mapcount unset for small pages (Dean Luick's finding)",
    "as the final patch, but page_trans_huge_mapcount leaves total_mapcount unwritten for a "
    "page that is not a THP, so do_wp_page never moves a reused small page to the faulting "
    "VMA's anon_vma: rmap walks of that page go on visiting the older anon_vma's VMAs",
    "the seed's changelog (../shared/seeds/000_9d3320adf7caf5ed.txt): 'an uninitialized "
    "variable that could result in a rmap inefficiency for the non-THP case'",
)
class UninitTotalMapcount(Policy):
    def reuse_mapcount(self, f: PageFrames, pfn: int) -> ReuseCount:
        if PageTransCompound(f, pfn):
            return super().reuse_mapcount(f, pfn)
        count = page_mapcount(f, pfn)
        read: Reads = (("page_mapcount", count), ("total_mapcount (never written)", UNSET))
        return ReuseCount(count, UNSET, read, "page_trans_huge_mapcount <= 1")
