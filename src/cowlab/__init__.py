"""cowlab: an executable, page-accurate model of Linux anonymous memory (COW, THP, pinning)."""

from cowlab.errors import CowlabError, InvariantViolation, KernelBug, Segfault, SyscallError
from cowlab.kernel import Config, Kernel, Process

__all__ = [
    "Config",
    "CowlabError",
    "InvariantViolation",
    "Kernel",
    "KernelBug",
    "Process",
    "Segfault",
    "SyscallError",
]
