"""Linux 5.16: mremap looks the VMA up before anything else."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "5.16",
    ("550a7d60bd5e",),
    "mm, hugepages: add mremap() support for hugepage backed vma",
    "sys_mremap looks the VMA up at the old address first and, with no VMA there, fails before "
    "anything (the shrink included) - returning EFAULT as +14, which the C library hands back as "
    "the address 0xe with no error",
    "5.15.55 -> 5.16.10 mm/mremap.c SYSCALL_DEFINE5(mremap)",
)
class MremapLooksUpVma(Policy):
    mremap_looks_up_vma = True
    mremap_efault_positive = True
