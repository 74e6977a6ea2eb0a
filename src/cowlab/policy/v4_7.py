"""Linux 4.7: page_move_anon_rmap() takes no address and asserts nothing about the index."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "4.7",
    ("5a49973d7143",),
    "mm: thp: refix false positive BUG in page_move_anon_rmap()",
    "page_move_anon_rmap(page, vma) goes to the head itself and has no index assertion: "
    "CONFIG_DEBUG_VM never BUGs on a reuse",
    "4.6.2 -> 4.7.4 mm/rmap.c page_move_anon_rmap, mm/memory.c do_wp_page",
)
class MoveAnonRmapWithoutAddress(Policy):
    move_anon_rmap_check = ""
