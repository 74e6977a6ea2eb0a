"""What can go wrong: a program's outcome (SIGSEGV, errno) versus a broken model or kernel."""

from __future__ import annotations


class CowlabError(Exception):
    """Base class of every error cowlab raises on purpose."""


class SyscallError(CowlabError):
    """A system call failed with an errno, as the kernel would return it (EINVAL, ENOMEM...)."""

    def __init__(self, errno: str, message: str) -> None:
        super().__init__(f"{errno}: {message}")
        self.errno = errno


class Segfault(CowlabError):
    """The program touched an address it may not: the kernel delivers SIGSEGV (an outcome)."""

    def __init__(self, addr: int, access: str, done: int = 0, killed: bool = False) -> None:
        super().__init__(f"SIGSEGV: {access} at {addr:#x}")
        self.addr = addr
        self.access = access
        self.done = done  # bytes of the access that completed before the faulting page
        self.killed = killed  # the default disposition ran: the process exited


class KernelBug(CowlabError):
    """The modelled kernel reached a BUG()/VM_BUG_ON() (with CONFIG_DEBUG_VM)."""


class InvariantViolation(CowlabError):
    """Self-checking found a stored counter or an rmap link that the page tables contradict."""

    def __init__(self, operation: str, problems: list[str]) -> None:
        shown = "; ".join(problems[:5]) + (
            f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        )
        super().__init__(f"after {operation}: {shown}")
        self.operation = operation
        self.problems = problems
