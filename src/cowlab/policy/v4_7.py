"""Linux 4.7: page_move_anon_rmap() rounds the address for a THP head in its assertion
(0798d3c022dc, also in stable 4.5.7 and 4.6.2), then, in the same release, takes no address and
asserts nothing about the index (5a49973d7143, never in a 4.6.y release)."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import STABLE_ID_NOT_FOUND, landed


@landed(
    "4.7",
    ("0798d3c022dc",),
    "mm: thp: avoid false positive VM_BUG_ON_PAGE in page_move_anon_rmap()",
    "with CONFIG_DEBUG_VM, page_move_anon_rmap rounds the address to the PMD for a THP head "
    "before comparing it with the head's index",
    "4.5.0 -> 4.6.2 mm/rmap.c page_move_anon_rmap (docs/timeline-sources.md 4.7); a v4.7-rc1 "
    "commit (27 May 2016, after 4.6's release), overridden in 4.7 itself by 5a49973d7143",
    stable=(("4.5.7", STABLE_ID_NOT_FOUND), ("4.6.2", STABLE_ID_NOT_FOUND)),
    stable_evidence="4.5.7: stable-queue releases/4.5.7 holds the patch (commit 0798d3c022dc "
    "upstream), releases/4.5.6/series does not. 4.6.2: the 4.6.2 tree's page_move_anon_rmap "
    "rounds; 4.6.1 is bracketed (no tree; 4.5.6, reviewed and released with it, lacks the "
    "patch). 4.6.y never took 5a49973d7143 (not in 4.6.5's or 4.6.7's series): 4.6.2-4.6.7 "
    "keep the rounded assertion. The stable commit ids were not found.",
)
class MoveAnonRmapRoundsAddress(Policy):
    move_anon_rmap_check = "pmd_rounded"


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
