"""The review version of 6d0a07edd17c (linux-mm, April-May 2016): reuse as the final patch, but
page_move_anon_rmap() on every reuse. Kirill Shutemov showed the flaw: a THP whose halves are
mapped by parent and child moves wholesale to the child's anon_vma, and the rmap walk then
misses the parent's mappings."""

from __future__ import annotations

from cowlab.policy.v4_5_6d0a07e import V4_5_6d0a07e


class V4_5_6d0a07e_early(V4_5_6d0a07e):
    id = "v4.5+6d0a07e-early"
    release = "never released (review version, linux-mm 2016-05)"
    commits = ("6d0a07edd17c (v1 review)",)
    summary = "as v4.5+6d0a07e, but every reuse moves the THP to the faulting VMA's anon_vma"

    def move_anon_rmap_on_reuse(self, total_mapcount: int) -> bool:
        return True
