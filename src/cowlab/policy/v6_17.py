"""Linux 6.17: mremap moves several VMAs at once."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "6.17",
    ("d23cb648e365",),
    "mm/mremap: permit mremap() move of multiple VMAs",
    "an MREMAP_FIXED move that keeps the size may span several VMAs and the holes between them",
    "6.14.0 -> 6.18.2 mm/mremap.c vrm_move_only, remap_move (bracketed: no 6.15-6.17 tree); "
    "6.17 from '[GIT PULL] MM updates for 6.17-rc1' (mm-stable-2025-07-30-15-25), which lists "
    "Lorenzo Stoakes' 10-patch series 'mm/mremap: permit mremap() move of multiple VMAs'",
)
class MremapMovesVmas(Policy):
    def mremap_moves_vmas(self, old_len: int, new_len: int) -> bool:
        """Only a move that keeps the size (vrm_move_only(): MREMAP_FIXED, old == new)."""
        return old_len == new_len
