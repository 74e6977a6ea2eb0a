"""Random programs over the operation alphabet, for the stateful and minimisation tests.

A program works on one 4 MiB, 2 MiB-aligned MADV_HUGEPAGE region (two THPs, pages 0..1023)
that the first process maps; later processes come from fork. Operations address processes and
pins by their index among the live ones, so every generated program is executable.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from hypothesis import strategies as st

from cowlab import Kernel, Process, Segfault, SyscallError
from cowlab.kernel import Pin

REGION = 0x7E0000000000
PAGES = 1024
PAGE = 4096
BOUNDARIES = [0, 1, 2, 255, 256, 257, 511, 512, 513, 767, 768, 1022, 1023]


KERNEL_OPS = (
    "split_huge_pages",
    "shrink",
    "thp_alloc_fail",
    "end_writeback",
    "shrink_swapcache",
    "khugepaged",
    "ksmd",
)


@dataclass(frozen=True)
class Op:
    name: str
    who: int = 0
    start: int = 0
    pages: int = 1
    arg: str | int | bool = 0

    def __str__(self) -> str:
        if self.name in KERNEL_OPS or self.name in ("fork", "exit", "clear_refs", "unpin"):
            return f"{self.name}(proc {self.who})"
        rng = f"pages {self.start}..{self.start + self.pages - 1}"
        return f"{self.name}(proc {self.who}, {rng}, {self.arg!r})"


@dataclass
class World:
    k: Kernel
    procs: list[Process] = field(default_factory=list)
    pins: list[Pin] = field(default_factory=list)


def start(kernel_id: str) -> World:
    k = Kernel(kernel_id, selfcheck=True)
    k.thp_enabled = "madvise"
    k.mthp_enabled.update({16: "madvise", 64: "always"})  # used by kernels with mTHP
    p = k.spawn()
    p.mmap(PAGES * PAGE, addr=REGION, align=2 << 20)
    p.madvise(REGION, PAGES * PAGE, "hugepage")
    return World(k, [p])


def apply(w: World, op: Op) -> str:
    """Run one operation; a syscall error or SIGSEGV is an outcome, anything else propagates."""
    if op.name in KERNEL_OPS:
        return _kernel_op(w, op)
    if op.name in ("unpin", "dma_write"):
        return _pin_op(w, op)
    if not w.procs:
        return "no process"
    p = w.procs[op.who % len(w.procs)]
    addr = REGION + op.start * PAGE
    length = min(op.pages, PAGES - op.start) * PAGE
    try:
        _proc_op(w, p, op, addr, length)
    except (SyscallError, Segfault) as e:
        return str(e)
    return "ok"


def _kernel_op(w: World, op: Op) -> str:
    if op.name == "split_huge_pages":
        return f"split {w.k.split_huge_pages()}"
    if op.name == "shrink":
        return f"split {w.k.shrink_deferred_split()}"
    if op.name == "end_writeback":
        return f"written {w.k.end_writeback()}"
    if op.name == "shrink_swapcache":
        return f"freed {w.k.shrink_swapcache()}"
    if op.name == "khugepaged":
        return f"collapsed {w.k.khugepaged()}"
    if op.name == "ksmd":
        return f"merged {w.k.ksmd()}"
    w.k.thp_alloc_fail = bool(op.arg)
    return "ok"


def _pin_op(w: World, op: Op) -> str:
    if not w.pins:
        return "no pin"
    pin = w.pins[op.who % len(w.pins)]
    if op.name == "unpin":
        w.pins.remove(pin)
        w.k.unpin(pin)
    elif pin.write:
        pin.dma_write(0, bytes([int(op.arg) & 0xFF]) * min(pin.length, 64))
    return "ok"


def _proc_op(w: World, p: Process, op: Op, addr: int, length: int) -> None:
    if op.name == "write":
        p.write(addr, bytes([int(op.arg) & 0xFF]) * 16)
    elif op.name == "read":
        p.read(addr, 16)
    elif op.name == "fork":
        w.procs.append(p.fork())
    elif op.name == "exit":
        p.exit()
        w.procs.remove(p)
    elif op.name == "mprotect":
        p.mprotect(addr, length, str(op.arg))
    elif op.name == "munmap":
        p.munmap(addr, length)
    elif op.name == "madvise":
        p.madvise(addr, length, str(op.arg))
    elif op.name == "mremap":  # move the range to the same offset of a second 4 MiB window
        p.mremap(
            addr, length, length, fixed_addr=addr + (PAGES * PAGE if op.arg else -PAGES * PAGE)
        )
    elif op.name == "pin":
        w.pins.append(p.get_user_pages(addr, length, write=bool(op.arg)))
    elif op.name == "clear_refs":
        p.clear_refs(4)
    elif op.name == "numa_balance":
        p.numa_balance(addr, length)
    elif op.name == "swapout":
        p.swapout(addr, length, until=str(op.arg))
    else:
        raise ValueError(op.name)


def run(kernel_id: str, program: list[Op]) -> World:
    w = start(kernel_id)
    for op in program:
        apply(w, op)
    return w


who = st.integers(0, 3)
page = st.sampled_from(BOUNDARIES)
npages = st.sampled_from([1, 2, 255, 256, 511, 512, 513, 1024])


def op_strategy() -> st.SearchStrategy[Op]:
    def ranged(name: str, arg: st.SearchStrategy[str | int | bool]) -> st.SearchStrategy[Op]:
        return st.builds(Op, st.just(name), who, page, npages, arg)

    return st.one_of(
        ranged("write", st.integers(1, 255)),
        ranged("read", st.just(0)),
        st.builds(Op, st.just("fork"), who),
        st.builds(Op, st.just("exit"), who),
        ranged("mprotect", st.sampled_from(["r", "rw", "none"])),
        ranged("munmap", st.just(0)),
        ranged(
            "madvise",
            st.sampled_from(
                [
                    "dontneed",
                    "dontfork",
                    "dofork",
                    "nohugepage",
                    "collapse",
                    "mergeable",
                    "unmergeable",
                ]
            ),
        ),
        ranged("mremap", st.booleans()),
        ranged("pin", st.booleans()),
        st.builds(Op, st.just("unpin"), who),
        st.builds(Op, st.just("dma_write"), who, st.just(0), st.just(1), st.integers(1, 255)),
        st.builds(Op, st.just("clear_refs"), who),
        ranged("numa_balance", st.just(0)),
        st.builds(Op, st.just("split_huge_pages")),
        st.builds(Op, st.just("shrink")),
        st.builds(Op, st.just("thp_alloc_fail"), arg=st.booleans()),
        ranged("swapout", st.sampled_from(["swapcache", "writeback", "written", "freed"])),
        st.builds(Op, st.just("end_writeback")),
        st.builds(Op, st.just("shrink_swapcache")),
        st.builds(Op, st.just("khugepaged")),
        st.builds(Op, st.just("ksmd")),
    )


T = TypeVar("T")


def shortest_violation(
    breaks: Callable[[list[T]], bool],
    alphabet: Sequence[T],
    max_len: int,
    prefix: Sequence[T] = (),
) -> list[T] | None:
    """The first program (prefix + ops, fewest ops first, alphabet order) for which ``breaks``
    holds; None when no program up to max_len ops does."""
    for length in range(max_len + 1):
        for ops in itertools.product(alphabet, repeat=length):
            program = [*prefix, *ops]
            if breaks(program):
                return program
    return None
