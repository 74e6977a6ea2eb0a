"""Linux 6.4: MADV_COLLAPSE reports a userfaultfd-armed hole as EBUSY."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "6.4",
    ("ac492b9c70ca",),
    "mm/khugepaged: skip shmem with userfaultfd",
    "madvise_collapse_errno: SCAN_EXCEED_NONE_PTE is EBUSY",
    "6.3.8 -> 6.4.0 mm/khugepaged.c madvise_collapse_errno (the 6.3.8 stable tree maps "
    "SCAN_EXCEED_NONE_PTE to EINVAL, 6.4.0 to EBUSY); merged for 6.4-rc1 with "
    "mm-stable-2023-04-27 (7fa8a8ee9400)",
    invisible="MADV_COLLAPSE reports SCAN_EXCEED_NONE_PTE only for a userfaultfd-armed range, "
    "and cowlab has no userfaultfd",
)
class CollapseUffdEbusy(Policy):
    def collapse_errno(self, code: str) -> str:
        return "EBUSY" if code == "SCAN_EXCEED_NONE_PTE" else super().collapse_errno(code)
