"""The range path against the page-by-page path: the same random program runs on
``Kernel(kid, range_ops=True)`` and ``Kernel(kid, range_ops=False)``, and after every operation
the two must have the same outcome (return value, or exception type and message, a SIGSEGV's
address, bytes done and kill included) and the same full state (tests/statecmp.py), on every
policy. The range kernel self-checks its invariants after each operation.

Programs lean on what a range path handles: writes, fills, reads and touches of up to a few MiB,
page-unaligned at either end, crossing VMA ends and holes (SIGSEGV partway kills the process),
over THPs, mTHPs, forked, pinned, swapped-out, read-only and KSM pages. See docs/testing.md.

The second half shows the comparison can fail: one deliberate difference in each part of the
state is reported, and every part of a rich state is hit by one of those differences.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import heapq
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cowlab import Kernel, Process, Segfault, SyscallError
from cowlab import kernel as kernel_module
from cowlab.errors import InvariantViolation
from cowlab.kernel import OpRecord, Pin
from cowlab.mm import gup, range_fault, rmap, swapfile, vmscan
from cowlab.mm.constants import (
    FOLL_NUMA,
    FOLL_WRITE,
    PG_anon_exclusive,
    PG_dirty,
    PG_head,
    PG_ksm,
    PG_mm_ids_shared,
    PG_swapcache,
    PG_tail,
    PG_writeback,
)
from cowlab.mm.page_alloc import RowField, flags_without
from cowlab.mm.pgtable import (
    PTE_DIRTY,
    PTE_MIGRATION,
    PTE_PROTNONE,
    PTE_SPECIAL,
    PTE_WRITE,
    HugePmd,
    PteTable,
)
from cowlab.mm.trace import CowEvent, CowLog
from cowlab.policy import v5_18
from cowlab.policy.base import Policy
from cowlab.policy.timeline import all_policies
from cowlab.policy.v6_15 import LargeFolioReuse

from .statecmp import covers, describe, diff, frame_fields, leaves, reported, snapshot

POLICY_IDS = list(all_policies())
# the review version whose rmap bug the stateful test finds: its invariant break is an outcome
# here (both kernels self-check), not a failure
BREAKS_INVARIANTS = {"v4.5+6d0a07e-early"}
PAGE = 4096
MIB = 1 << 20
ARENA = 0x600000000000  # MAP_FIXED mappings go here (auto ones sit below 0x7f0000000000)
CI_PROGRAMS = 8
MIN_STEPS = 10
MAX_STEPS = 30


# --- programs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One operation, with addresses relative to the state it runs in: process ``who`` (index
    among the live ones), its VMA ``vma`` (index), the range starting ``page`` pages into it
    (page -1 is the page before it) plus ``sub`` bytes, ``length`` bytes long, or, with
    ``to_end``, reaching the VMA's end plus ``length`` bytes; ``inside`` keeps the range inside
    the VMA (start page modulo its size, length cut at its end), otherwise it may run off either
    end into a hole or the next VMA."""

    name: str
    who: int = 0
    vma: int = 0
    page: int = 0
    sub: int = 0
    length: int = 0
    to_end: bool = False
    inside: bool = True
    arg: Any = None


@dataclass(frozen=True)
class Call:
    """A step resolved to one concrete call, the same for both kernels."""

    kind: str
    who: int = 0
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        shown = [_short(a) for a in self.args] + [f"{k}={_short(v)}" for k, v in self.kwargs]
        return f"{self.kind}[proc {self.who}]({', '.join(shown)})"


def _short(value: Any) -> str:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, int) and not isinstance(value, bool) and value >= PAGE:
        return hex(value)
    return repr(value)


who = st.integers(0, 3)
vma_index = st.integers(0, 5)
start_page = st.one_of(
    st.sampled_from([0, 1, 2, 255, 256, 511, 512, 513, 767, 1023, 1024, 1025]),
    st.integers(0, 1100),
)
sub_page = st.one_of(st.just(0), st.sampled_from([1, 8, 2048, 4095]), st.integers(1, 4095))
# a third small (the range path takes accesses over 16 pages), the rest up to 4.3 MiB
length = st.one_of(
    st.integers(0, 3 * PAGE),
    st.builds(
        lambda n, d: max(0, n * PAGE + d),
        st.sampled_from([1, 2, 3, 16, 17, 18, 64, 100, 255, 256, 511, 512, 513, 1024, 1100]),
        st.sampled_from([0, 0, 0, -1, 1, -100, 2048]),
    ),
    st.integers(17 * PAGE, 4 * MIB + 100 * PAGE),
)
to_end_delta = st.sampled_from([-PAGE - 1, -PAGE, -1, 0, 0, 1, PAGE - 1, PAGE, 2 * PAGE])


inside = st.sampled_from([True, True, True, False])


def ranged(
    name: str, arg: st.SearchStrategy[Any], aligned: bool = False
) -> st.SearchStrategy[Step]:
    """A step over a range of some process's VMA, either of a given length or to its end."""
    sub = st.just(0) if aligned else sub_page
    to_end = st.booleans()
    return to_end.flatmap(
        lambda end: st.builds(
            Step,
            st.just(name),
            who,
            vma_index,
            start_page,
            sub,
            to_end_delta if end else length,
            st.just(end),
            inside,
            arg,
        )
    )


def weighted(*choices: tuple[int, st.SearchStrategy[Step]]) -> st.SearchStrategy[Step]:
    """one_of with integer weights (each strategy listed that many times)."""
    return st.one_of(*(strategy for weight, strategy in choices for _ in range(weight)))


mmap_size = st.one_of(
    st.sampled_from([1, 2, 16, 255, 256, 511, 512, 512, 513, 1024, 1024]), st.integers(1, 1024)
)
mmap_step = st.builds(
    Step,
    st.just("mmap"),
    who,
    page=mmap_size,
    arg=st.tuples(
        st.sampled_from([0, 2 * MIB]),  # align
        st.one_of(st.none(), st.none(), st.integers(0, 2047)),  # MAP_FIXED page in ARENA
        st.sampled_from(["rw", "rw", "rw", "rw", "rw", "rw", "r", "none"]),
    ),
)
KERNEL_CALLS = (
    "end_writeback",
    "shrink_swapcache",
    "khugepaged",
    "ksmd",
    "split_huge_pages",
    "shrink_deferred_split",
)


# data: 0 writes zeros; other seeds a pattern that differs from page to page
write_seed = st.sampled_from([0, 1, 2, 3, 0x5A])


def step_strategy() -> st.SearchStrategy[Step]:
    kernel_ops = st.sampled_from(KERNEL_CALLS)
    # range accesses are about half of all steps
    return weighted(
        (5, ranged("write", write_seed)),
        (4, ranged("fill", st.sampled_from([0, 1, 0x7F, 0xFF]))),
        (3, ranged("read", st.none())),
        (3, ranged("touch", st.booleans())),
        (2, mmap_step),
        (3, st.builds(Step, st.just("fork"), who)),
        (1, st.builds(Step, st.just("exit"), who)),
        (1, ranged("munmap", st.none(), aligned=True)),
        (1, ranged("mprotect", st.sampled_from(["r", "rw", "rw", "none"]), aligned=True)),
        (
            2,
            ranged(
                "madvise",
                st.sampled_from(["dontneed", "dontneed", "hugepage", "nohugepage", "mergeable"]),
                aligned=True,
            ),
        ),
        (
            2,
            ranged(
                "pin",
                st.tuples(
                    st.sampled_from(["get", "pin", "longterm"]),
                    st.booleans(),  # write
                    st.booleans(),  # fast
                    st.sampled_from([False, False, False, True]),  # force
                ),
            ),
        ),
        (1, st.builds(Step, st.just("unpin"), who)),
        (2, ranged("swapout", st.sampled_from(["swapcache", "writeback", "written", "freed"]))),
        (2, st.builds(Step, kernel_ops)),
        (1, st.builds(Step, st.just("thp"), arg=st.sampled_from(["always", "madvise", "never"]))),
        # a kernel without mTHP (policy.mthp) skips it
        (
            1,
            st.builds(
                Step,
                st.just("mthp"),
                arg=st.tuples(st.sampled_from([16, 64]), st.sampled_from(["always", "never"])),
            ),
        ),
    )


# what a program may start with: PTE-mapped large folios a fork shares, for its range steps to
# write across (do_wp_page of a large folio's pages: range_fault._wp_large_run) — a THP split by
# a zap of its last page, or 64 KiB mTHPs
LARGE_FOLIO_PRELUDES = [
    [
        Step("thp", arg="always"),
        Step("mmap", page=1024, arg=(2 * MIB, None, "rw")),
        Step("fill", length=0, to_end=True, arg=0x21),
        Step("madvise", page=511, length=PAGE, arg="dontneed"),
        Step("fork"),
    ],
    [
        Step("mthp", arg=(64, "always")),
        Step("thp", arg="never"),
        Step("mmap", page=256, arg=(2 * MIB, None, "rw")),
        Step("fill", length=0, to_end=True, arg=0x21),
        Step("fork"),
    ],
]


def programs() -> st.SearchStrategy[list[Step]]:
    return st.builds(
        lambda prelude, first, rest: [*prelude, first, *rest],
        st.sampled_from([[], [], *LARGE_FOLIO_PRELUDES]),
        mmap_step,
        st.lists(step_strategy(), min_size=MIN_STEPS, max_size=MAX_STEPS),
    )


@functools.lru_cache(maxsize=8)
def pattern(n: int, seed: int) -> bytes:
    """n bytes of data: zeros for seed 0, else bytes that change every 64 and every 4096."""
    if seed == 0:
        return bytes(n)
    page = ((np.arange(PAGE) // 64 * 37 + seed) % 256).astype(np.uint8)
    step = (np.arange(-(-n // PAGE)) * 11 % 256).astype(np.uint8)
    return (page[None, :] + step[:, None]).tobytes()[:n]


# --- running a program on both kernels ----------------------------------------------------


@dataclass
class Side:
    """One kernel and the program's handles on it: live processes and pins held."""

    k: Kernel
    procs: list[Process] = field(default_factory=list)
    pins: list[Pin] = field(default_factory=list)


def boot(kernel_id: str, range_ops: bool, selfcheck: bool, tracing: bool = True) -> Side:
    k = Kernel(kernel_id, selfcheck=selfcheck, range_ops=range_ops, tracing=tracing)
    return Side(k, [k.spawn()])


def resolve(side: Side, step: Step) -> Call | None:
    """The concrete call a step makes in this state (None: nothing to do). With no process
    left the step spawns one; on a process without VMAs a range step maps one first."""
    if step.name == "mthp" and not side.k.policy.mthp:
        return None
    if step.name in ("thp", "mthp") or step.name in KERNEL_CALLS:
        return Call(step.name, 0, (step.arg,) if step.arg is not None else ())
    if step.name == "unpin":
        return Call("unpin", step.who % len(side.pins)) if side.pins else None
    if not side.procs or step.name == "spawn":
        return Call("spawn")
    i = step.who % len(side.procs)
    if step.name in ("fork", "exit"):
        return Call(step.name, i)
    if step.name == "mmap":
        align, fixed, prot = step.arg
        kwargs: dict[str, Any] = {"align": align}
        if fixed is not None:
            kwargs["addr"] = ARENA + fixed * PAGE
            kwargs["align"] = 0 if (ARENA + fixed * PAGE) % max(align, PAGE) else align
        return Call("mmap", i, (step.page * PAGE, prot), tuple(kwargs.items()))
    vmas = side.procs[i].mm.vmas
    if not vmas:
        return Call("mmap", i, (min(max(step.length, PAGE), 4 * MIB), "rw"))
    vma = vmas[step.vma % len(vmas)]
    base, end = vma.vm_start, vma.vm_end
    pages = (end - base) // PAGE
    if step.inside:
        start = base + (step.page % pages) * PAGE + min(step.sub, end - base - 1)
        start = min(start, end - 1)
    else:
        start = base + (step.page % (pages + 2) - 1) * PAGE + step.sub
    n = max(0, end - start + step.length) if step.to_end else step.length
    if step.inside:
        n = min(n, end - start)
    if step.name == "write":
        return Call("write", i, (start, pattern(n, step.arg)))
    if step.name == "fill":
        return Call("fill", i, (start, n, step.arg))
    if step.name == "read":
        return Call("read", i, (start, n))
    if step.name == "touch":
        return Call("touch", i, (start, n), (("write", step.arg),))
    if step.name == "pin":
        flavour, write, fast, *force = step.arg  # force: when given
        kwargs = {"write": write, "flavour": flavour, "fast": fast, "force": any(force)}
        return Call("get_user_pages", i, (start, n), tuple(kwargs.items()))
    if step.name == "swapout":
        return Call("swapout", i, (start, n), (("until", step.arg),))
    assert step.name in ("munmap", "mprotect", "madvise"), step
    args = (start, n) if step.arg is None else (start, n, step.arg)
    return Call(step.name, i, args)


def perform(side: Side, call: Call, invariant_outcome: bool) -> tuple[Any, ...]:
    """Run the call; its outcome as a comparable tuple. A syscall error and SIGSEGV are
    outcomes; any other exception is kept with its traceback (the caller fails on it)."""
    try:
        value = _dispatch(side, call)
    except Segfault as e:
        outcome: tuple[Any, ...] = ("SIGSEGV", str(e), e.addr, e.access, e.done, e.killed)
    except SyscallError as e:
        outcome = ("error", e.errno, str(e))
    except InvariantViolation as e:
        if not invariant_outcome:
            outcome = ("crash", repr(e), traceback.format_exc())
        else:
            outcome = ("invariant", str(e))
    except Exception as e:
        outcome = ("crash", repr(e), traceback.format_exc())
    else:
        outcome = ("ok", _value(value))
    side.procs = [p for p in side.procs if p.alive]
    return outcome


def _dispatch(side: Side, call: Call) -> Any:
    k = side.k
    kwargs = dict(call.kwargs)
    if call.kind in KERNEL_CALLS:
        return getattr(k, call.kind)()
    if call.kind == "thp":
        k.thp_enabled = call.args[0]
        return None
    if call.kind == "mthp":
        size, mode = call.args[0]
        k.mthp_enabled[size] = mode
        return None
    if call.kind == "spawn":
        side.procs.append(k.spawn())
        return side.procs[-1]
    if call.kind == "unpin":
        pin = side.pins.pop(call.who)
        k.unpin(pin)
        return None
    proc = side.procs[call.who]
    if call.kind == "fork":
        child = proc.fork()
        side.procs.append(child)
        return child
    result = getattr(proc, call.kind)(*call.args, **kwargs)
    if isinstance(result, Pin):
        side.pins.append(result)
    return result


def _value(value: Any) -> Any:
    if isinstance(value, Pin):
        return ("pin", value.id, [int(p) for p in value.pages])
    if isinstance(value, Process):
        return ("pid", value.pid)
    return value


def run_both(kernel_id: str, program: list[Step], tracing: bool = True) -> None:
    """Run the program on the range path (self-checking) and the page-by-page path; after
    every step the outcomes and the states must be the same (without the trace events when
    both run untraced: paths only taken so)."""
    expected_breaks = kernel_id in BREAKS_INVARIANTS
    ranged_side = boot(kernel_id, range_ops=True, selfcheck=True, tracing=tracing)
    ref = boot(kernel_id, range_ops=False, selfcheck=expected_breaks, tracing=tracing)
    done: list[str] = []
    for step in program:
        call = resolve(ref, step)
        if call is None:
            continue
        done.append(str(call))
        got = perform(ranged_side, call, expected_breaks)
        want = perform(ref, call, expected_breaks)
        where = f"{kernel_id}, after:\n    " + "\n    ".join(done)
        if got != want:
            raise AssertionError(
                f"outcomes differ on {where}\n"
                f"  range_ops=True:  {_brief(got)}\n  range_ops=False: {_brief(want)}"
                + (f"\n{got[2]}" if got[0] == "crash" else "")
            )
        if got[0] == "crash":
            raise AssertionError(f"the model crashed on both paths, {where}\n{got[2]}")
        a, b = snapshot(ranged_side.k), snapshot(ref.k)
        if a != b:
            raise AssertionError(
                f"{where}\n{describe(a, b, ('range_ops=True', 'range_ops=False'))}"
            )


def _brief(outcome: tuple[Any, ...]) -> str:
    return " ".join(_short(v) if not isinstance(v, str) else v.splitlines()[0] for v in outcome)


def program_examples() -> int:
    """A few fixed programs per policy in CI; the explore profile's own count otherwise."""
    chosen = settings()
    return CI_PROGRAMS if chosen.derandomize else chosen.max_examples


# Hand-written programs every policy runs too: each reaches a case the range path must get right
S = Step
HAND_WRITTEN = [
    # a THP-aligned 4 MiB region written whole, forked, then COW-written across the boundary of
    # its two THPs with unaligned ends, read back whole, touched, and written on into the hole
    # beyond its end (SIGSEGV partway)
    [
        S("mmap", page=1024, arg=(2 * MIB, None, "rw")),
        S("fill", page=1, sub=0, length=4 * MIB, arg=0x11),
        S("fork"),
        S("write", page=400, sub=100, length=200 * PAGE + 5, arg=2),
        S("read", who=1, page=0, sub=7, length=4 * MIB - 7),
        S("touch", who=1, page=500, length=30 * PAGE, arg=True),
        S("write", who=1, page=1000, sub=5, length=PAGE, to_end=True, inside=False, arg=3),
    ],
    # small pages (THP off), swapped out part by part, pinned, forked, then written over all
    [
        S("thp", arg="never"),
        S("mmap", page=300, arg=(0, None, "rw")),
        S("write", page=1, length=300 * PAGE, arg=1),
        S("swapout", page=101, length=100 * PAGE, arg="freed"),
        S("swapout", page=201, length=50 * PAGE, arg="writeback"),
        S("pin", page=51, sub=9, length=150 * PAGE, arg=("longterm", False, False)),
        S("pin", page=251, length=PAGE, arg=("get", True, True)),
        S("fork"),
        S("fill", page=1, length=0, to_end=True, arg=0),
        S("touch", who=1, page=0, length=0, to_end=True, arg=True),
        S("end_writeback"),
        S("read", who=1, page=1, sub=1, length=0, to_end=True),
        S("unpin"),
        S("write", who=1, page=90, sub=4095, length=100 * PAGE, arg=2),
    ],
    # three adjacent VMAs (rw, r, none) and a child: a read through them to the PROT_NONE one
    # kills the parent partway; the child makes the r one writable and writes on into none
    [
        S("mmap", page=64, arg=(0, 0, "rw")),
        S("mmap", page=64, arg=(0, 64, "r")),
        S("mmap", page=64, arg=(0, 128, "none")),
        S("fill", vma=0, page=2, sub=17, length=0, to_end=True, arg=0x7F),
        S("fork"),
        S("read", vma=0, page=2, sub=9, length=130 * PAGE, inside=False),
        S("mprotect", vma=1, page=0, length=64 * PAGE, arg="rw"),
        S("write", vma=0, page=60, sub=3, length=200 * PAGE, inside=False, arg=5),
    ],
    # KSM pages under a range write, in the process that merged them and in a child
    [
        S("thp", arg="never"),
        S("mmap", page=32, arg=(0, None, "rw")),
        S("madvise", page=0, length=0, to_end=True, arg="mergeable"),
        S("fill", page=0, length=0, to_end=True, arg=0x42),
        S("ksmd"),
        S("ksmd"),
        S("fork"),
        S("write", page=3, sub=1, length=20 * PAGE, arg=3),
        S("fill", who=1, page=1, sub=5, length=0, to_end=True, arg=0),
    ],
    # khugepaged collapsing a sparsely written region, then a fork and range writes over the THP
    [
        S("thp", arg="never"),
        S("mmap", page=512, arg=(2 * MIB, None, "rw")),
        S("write", page=7, sub=3, length=40 * PAGE, arg=1),
        S("madvise", page=0, length=0, to_end=True, arg="hugepage"),
        S("thp", arg="madvise"),
        S("khugepaged"),
        S("fork"),
        S("fill", page=100, sub=1, length=20 * PAGE, arg=0xFF),
        S("touch", who=1, page=0, length=0, to_end=True, arg=False),
        S("write", who=1, page=509, sub=1, length=0, to_end=True, arg=2),
    ],
]
# MADV_DONTNEED from a small page's table into a THP it covers all but the last page of: the
# table before the PMD is zapped before the PMD is split (found by the property on v4.7)
ZAP_BEFORE_SPLIT = [
    S("mmap", page=513, arg=(0, None, "rw")),
    S("write", length=-4097, to_end=True, arg=0),
    S("madvise", length=-4097, to_end=True, arg="dontneed"),
    S("write", length=-4097, to_end=True, arg=0),
]
MTHP_PROGRAM = [
    S("mthp", arg=(16, "always")),
    S("mthp", arg=(64, "always")),
    S("thp", arg="never"),
    S("mmap", page=300, arg=(2 * MIB, None, "rw")),
    S("write", page=3, sub=5, length=100 * PAGE, arg=1),
    S("fork"),
    S("fill", page=1, sub=1, length=0, to_end=True, arg=9),
    S("munmap", who=1, page=21, length=8 * PAGE),
    S("touch", who=1, page=1, length=0, to_end=True, arg=True),
]

# read-only pins of pages a fork shared (5.19+: FAULT_FLAG_UNSHARE, the unshare range path):
# the pages of a THP the parent maps by PTEs after the fork (its PMD split by a zap), then the
# same THP's pages once the child is gone, then small pages, some of them in the swap cache
UNSHARE_PROGRAM = [
    S("thp", arg="always"),
    S("mmap", page=1024, arg=(2 * MIB, 0, "rw")),
    S("fill", page=0, length=0, to_end=True, arg=0x33),
    S("fork"),
    S("madvise", page=511, length=PAGE, arg="dontneed"),
    S("pin", page=10, length=200 * PAGE, arg=("pin", False, False)),
    S("pin", who=1, page=5, length=100 * PAGE, arg=("longterm", False, True)),
    S("exit", who=1),
    S("pin", page=0, length=512 * PAGE, arg=("pin", False, True)),
    S("thp", arg="never"),
    S("mmap", page=64, arg=(0, 1536, "rw")),
    S("write", vma=1, page=0, length=0, to_end=True, arg=1),
    S("fork"),
    S("swapout", vma=1, page=10, length=20 * PAGE, arg="swapcache"),
    S("pin", vma=1, page=0, length=0, to_end=True, arg=("longterm", False, False)),
]

# small pages through reclaim (the swap-out range path) to every stage, some zero-filled (the
# 6.12 zeromap), a pinned one and pages a fork shares among them (page by page), the range
# swapped again after a fork, then read, written and pinned back in (the swap-in range path: the
# pages still in the swap cache)
SWAP_PROGRAM = [
    S("thp", arg="never"),
    S("mmap", page=400, arg=(0, None, "rw")),
    S("write", page=0, length=0, to_end=True, arg=1),
    S("fill", page=40, length=30 * PAGE, arg=0),
    S("pin", page=150, length=PAGE, arg=("longterm", False, False)),
    S("swapout", page=10, length=100 * PAGE, arg="freed"),
    S("swapout", page=110, length=60 * PAGE, arg="written"),
    S("swapout", page=170, length=50 * PAGE, arg="writeback"),
    S("swapout", page=220, length=30 * PAGE, arg="swapcache"),
    S("read", page=20, sub=5, length=40 * PAGE),
    S("read", page=180, length=20 * PAGE),
    S("write", page=110, length=20 * PAGE, arg=4),
    S("fork"),
    S("write", who=1, page=250, length=20 * PAGE, arg=2),
    S("swapout", page=0, length=0, to_end=True, arg="freed"),
    S("end_writeback"),
    S("write", page=0, sub=3, length=0, to_end=True, arg=3),
    S("pin", who=1, page=0, length=0, to_end=True, arg=("pin", False, False)),
    S("thp", arg="always"),
    S("mmap", page=512, arg=(2 * MIB, 0, "rw")),
    S("fill", page=0, length=0, to_end=True, arg=0x5A),
    S("swapout", page=0, length=0, to_end=True, arg="written"),
]

# COW writes over a PTE-mapped THP (_wp_large_run): the first of two THPs split by a zap before
# the fork, so both processes map its pages by PTEs; the parent writes 301 of them while the
# child maps them, then, the child gone, writes the whole region (its pages reused on 6.15+)
THP_COW_PROGRAM = [
    S("thp", arg="always"),
    S("mmap", page=1024, arg=(2 * MIB, 0, "rw")),
    S("fill", page=0, length=0, to_end=True, arg=0x21),
    S("madvise", page=511, length=PAGE, arg="dontneed"),
    S("fork"),
    S("write", page=3, sub=1, length=300 * PAGE, arg=4),
    S("exit", who=1),
    S("fill", page=0, length=0, to_end=True, arg=5),
]


# read-only pins of pages gup_must_unshare (5.19) leaves alone, followed as one run: a PMD-mapped
# THP (partly, then whole, GUP-fast), 8 exclusive pages a COW write made ahead of 56 a fork
# shared, the zero page (unshared by a long-term pin from 6.2, taken as mapped before; always
# taken by a short-term one)
FOLLOW_PROGRAM = [
    S("thp", arg="always"),
    S("mmap", page=512, arg=(2 * MIB, 0, "rw")),
    S("fill", page=0, length=0, to_end=True, arg=0x21),
    S("pin", page=3, sub=5, length=500 * PAGE, arg=("pin", False, False)),
    S("pin", page=0, length=0, to_end=True, arg=("longterm", False, True)),
    S("thp", arg="never"),
    S("mmap", page=64, arg=(0, 1024, "rw")),
    S("write", vma=1, page=0, length=0, to_end=True, arg=1),
    S("fork"),
    S("write", vma=1, page=0, length=8 * PAGE, arg=2),
    S("pin", vma=1, page=0, length=0, to_end=True, arg=("longterm", False, False)),
    S("mmap", page=32, arg=(0, 1536, "rw")),
    S("read", vma=2, page=0, length=0, to_end=True),
    S("pin", vma=2, page=0, length=0, to_end=True, arg=("longterm", False, True)),
    S("pin", vma=2, page=0, length=0, to_end=True, arg=("pin", False, False)),
]

# GUP over swapped-out pages in each flavour: a THP swapped out and left in the swap cache,
# pinned R/O with FOLL_GET and for writing by a long-term GUP-fast pin, swapped out again, then
# shared by a fork and R/O-pinned (5.19+: swap-in, then the unshare); small pages swapped out and
# freed (the swap-in allocates), shared by a fork, R/O long-term pinned in the parent, then
# forced for writing by the child on its read-only mapping, and pinned for writing there
# without FOLL_FORCE (EFAULT)
SWAP_PIN_PROGRAM = [
    S("thp", arg="always"),
    S("mmap", page=512, arg=(2 * MIB, 0, "rw")),
    S("fill", page=0, length=0, to_end=True, arg=0x44),
    S("swapout", page=0, length=0, to_end=True, arg="written"),
    S("pin", page=0, length=300 * PAGE, arg=("get", False, False)),
    S("pin", page=200, sub=1, length=0, to_end=True, arg=("longterm", True, True)),
    S("swapout", page=0, length=0, to_end=True, arg="swapcache"),
    S("fork"),
    S("pin", page=0, length=0, to_end=True, arg=("pin", False, False)),
    S("thp", arg="never"),
    S("mmap", page=64, arg=(0, 1024, "rw")),
    S("write", vma=1, page=0, length=0, to_end=True, arg=1),
    S("swapout", vma=1, page=0, length=0, to_end=True, arg="freed"),
    S("fork"),
    S("pin", vma=1, page=2, sub=3, length=40 * PAGE, arg=("longterm", False, False)),
    S("mprotect", who=2, vma=1, page=0, length=0, to_end=True, arg="r"),
    S("pin", who=2, vma=1, page=0, length=0, to_end=True, arg=("get", True, False, True)),
    S("pin", who=2, vma=1, page=0, length=0, to_end=True, arg=("pin", True, True)),
]
# R/O pins of swapped-out pages a fork shared (cow.c's R/O GUP pin of a shared, swapped-out
# page), and of none PTEs (the zero page), which GUP faults in as a run when untraced
SWAPPED_RO_PIN_PROGRAM = [
    S("thp", arg="never"),
    S("mmap", page=64, arg=(0, 0, "rw")),
    S("write", page=0, length=0, to_end=True, arg=1),
    S("swapout", page=0, length=0, to_end=True, arg="written"),
    S("fork"),
    S("pin", page=0, length=0, to_end=True, arg=("longterm", False, False)),
    S("pin", who=1, page=0, length=0, to_end=True, arg=("pin", False, True)),
    S("mmap", page=16, arg=(0, 512, "rw")),
    S("pin", vma=1, page=0, length=0, to_end=True, arg=("longterm", False, False)),
]
# GUP-fast over swap PTEs (cow.c's pins of swapped-out pages): two VMAs of 64 small pages,
# written and swapped out to the swap cache; GUP-fast misses each swap PTE and slow GUP swaps
# it in: a FOLL_GET read of the first VMA, a long-term write pin of the second
FAST_SWAP_PIN_PROGRAM = [
    S("thp", arg="never"),
    S("mmap", page=64, arg=(0, 0, "rw")),
    S("mmap", page=64, arg=(0, 128, "rw")),  # a gap of 64 pages: two VMAs
    S("write", vma=0, page=0, length=0, to_end=True, arg=1),
    S("write", vma=1, page=0, length=0, to_end=True, arg=2),
    S("swapout", vma=0, page=0, length=0, to_end=True, arg="swapcache"),
    S("swapout", vma=1, page=0, length=0, to_end=True, arg="swapcache"),
    S("pin", vma=0, page=0, length=0, to_end=True, arg=("get", False, True)),
    S("pin", vma=1, page=0, length=0, to_end=True, arg=("longterm", True, True)),
]
# a COW write that reuses a page of a large folio and moves the folio to the VMA's anon_vma: a
# THP left with one page (page 5) mapped by a PTE, write-protected by a fork, the child gone
LAST_PAGE_PROGRAM = [
    S("thp", arg="always"),
    S("mmap", page=512, arg=(2 * MIB, 0, "rw")),
    S("fill", page=0, length=0, to_end=True, arg=1),
    S("madvise", page=0, length=5 * PAGE, arg="dontneed"),
    S("madvise", page=6, length=506 * PAGE, arg="dontneed"),
    S("fork"),
    S("exit", who=1),
    S("write", page=5, length=20 * PAGE, arg=2),
]
# a write over small pages still in the swap cache (_swapin_run deciding each page in turn
# before 5.18): 64 pages in one page table, 40..47 long-term pinned, swapped out to the swap
# cache, shared by a fork; the child writes 0..19 and 32..51 (more than RANGE_MIN_BYTES), then
# the parent all 64 (its entries of those, pinned ones among them, alone by then, the rest
# shared)
SWAP_WRITE_PROGRAM = [
    S("thp", arg="never"),
    S("mmap", page=64, arg=(0, 0, "rw")),
    S("write", page=0, length=0, to_end=True, arg=1),
    S("pin", page=40, length=8 * PAGE, arg=("longterm", False, False)),
    S("swapout", page=0, length=0, to_end=True, arg="swapcache"),
    S("fork"),
    S("write", who=1, page=0, length=20 * PAGE, arg=2),
    S("write", who=1, page=32, length=20 * PAGE, arg=2),
    S("write", page=0, length=0, to_end=True, arg=3),
]
# writes over small pages mapped read-only while in the swap cache (do_wp_page; untraced, the
# range path's _wp_swapcache_run): 64 pages written and swapped out, left in the swap cache,
# the process forked (each slot two swap entries), the parent's read maps them back read-only,
# the child unmaps all but the first 16, then the parent writes the first 32
SWAPCACHE_WP_PROGRAM = [
    *SWAPPED_RO_PIN_PROGRAM[:5],  # its 64 pages written, swapped out, then the fork
    S("read", page=0, length=0, to_end=True),
    S("munmap", who=1, page=16, length=48 * PAGE),
    S("write", page=0, length=32 * PAGE, arg=2),
]
# one KSM page at 64 addresses, swapped out to one slot (before 5.6: MADV_PAGEOUT takes a page
# mapped more than once), read back: the first fault's page sits in the swap cache with its own
# index, so ksm_might_need_to_copy gives each later address a copy (_swapin_run stops there)
KSM_SWAPIN_PROGRAM = [
    S("thp", arg="never"),
    S("mmap", page=64, arg=(0, None, "rw")),
    S("fill", page=0, length=0, to_end=True, arg=0x21),
    S("madvise", page=0, length=0, to_end=True, arg="mergeable"),
    S("ksmd"),
    S("ksmd"),
    S("swapout", page=0, length=0, to_end=True, arg="freed"),
    S("read", page=0, length=0, to_end=True),
]

# the hand-written programs the differential test runs on every policy besides its random
# ones; UNSHARE, FOLLOW, SWAP, THP_COW and SWAPPED_RO_PIN_PROGRAM are not among them: the
# path-taken tests below run each of them through run_both on every policy, traced and
# untraced, so a run here would repeat one of those (the same program, policy and tracing)
EXAMPLE_PROGRAMS = [
    *HAND_WRITTEN,
    MTHP_PROGRAM,
    ZAP_BEFORE_SPLIT,
    LAST_PAGE_PROGRAM,
    SWAP_PIN_PROGRAM,
    SWAP_WRITE_PROGRAM,
    SWAPCACHE_WP_PROGRAM,  # traced here, untraced: test_swap_cache_write_run_is_taken
    KSM_SWAPIN_PROGRAM,
]
# the paths taken only untraced (a write's swap-in, and its do_wp_page in one batch; 6.15+'s bulk
# copies of a folio's pages, here of mTHPs); SWAP_PROGRAM untraced:
# test_untraced_swapin_copies_are_taken, THP_COW_PROGRAM: test_large_folio_copies_in_bulk
UNTRACED_EXAMPLES = [SWAP_WRITE_PROGRAM, MTHP_PROGRAM]


def _with_examples(test: Callable[..., None]) -> Callable[..., None]:
    for program in EXAMPLE_PROGRAMS:
        test = example(program=program, tracing=True)(test)
    for program in UNTRACED_EXAMPLES:
        test = example(program=program, tracing=False)(test)
    return test


@pytest.mark.parametrize("kernel_id", POLICY_IDS)
@settings(max_examples=program_examples())
@_with_examples
@given(program=programs(), tracing=st.booleans())
def test_range_path_gives_the_page_by_page_state(
    kernel_id: str, program: list[Step], tracing: bool
) -> None:
    """Traced or not: some range paths (the do_wp_page after a write's swap-in) batch only
    when nothing is traced."""
    run_both(kernel_id, program, tracing)


@pytest.mark.parametrize("kernel_id", POLICY_IDS)
def test_unshare_range_path_is_taken(kernel_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """UNSHARE_PROGRAM takes the unshare range path, and it gives the page-by-page state.

    Its first pin: after the fork, each of the 200 pages is mapped by the parent's PTEs (the
    PMD split by the zap) and the child's PMD, read-only, PageAnonExclusive cleared by the
    fork (5.19: on the head, which split_huge_pmd gives every page), so a R/O FOLL_PIN must
    unshare every one (gup_must_unshare, 5.19); do_wp_page copies each (6.9+: a page of a
    large folio that is not exclusive is never reused; 5.19-6.8: the folio's page_count is
    over one while the child maps it), and no copy drops the folio's last reference, so the
    200 pages are one run. Before 5.19 no R/O pin unshares: the path is never asked."""
    settled: list[int] = []
    faults = gup._unshare_faults

    def spy(*args: Any) -> int:
        settled.append(faults(*args))
        return settled[-1]

    monkeypatch.setattr(gup, "_unshare_faults", spy)
    run_both(kernel_id, UNSHARE_PROGRAM)
    if Kernel(kernel_id).policy.gup_unshares_ro_pins:
        assert 200 in settled, settled
    else:
        assert not settled


def _spy_sizes(
    monkeypatch: pytest.MonkeyPatch, module: Any, name: str, size: Callable[[Any], int]
) -> list[int]:
    """The size (read off by ``size``) of what module.name returns each time it is asked, as
    the program runs."""
    sizes: list[int] = []
    real = getattr(module, name)

    def spy(*args: Any) -> Any:
        out = real(*args)
        sizes.append(size(out))
        return out

    monkeypatch.setattr(module, name, spy)
    return sizes


@pytest.mark.parametrize("kernel_id", POLICY_IDS)
def test_unshare_copies_in_bulk(kernel_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """UNSHARE_PROGRAM untraced: 6.15+ settles its first pin's 200 unshares as one bulk run,
    with the page-by-page state.

    After the fork and the parent's zap the THP is mapped by the parent's 511 PTEs and the
    child's PMD, none of its pages exclusive: _large_mapcount 512, refcount 512, maybe shared,
    the child's count 1, so the bit would clear once _large_mapcount came down to 1
    (removals_keeping_shared 510). Pages 10..209 read 512 down to 313, all copied:
    min(200, 511, 511, 511) = 200 in bulk. Before 6.15 never asked."""
    # the runs _unshare_faults has large_copies_settled settle (0: none)
    sizes = _spy_sizes(monkeypatch, gup, "large_copies_settled", lambda s: len(s[1]) if s else 0)
    run_both(kernel_id, UNSHARE_PROGRAM, tracing=False)
    if Kernel(kernel_id).policy.large_reuse_reads_folio:
        assert sizes[0] == 200, sizes
    else:
        assert sizes == [], sizes


def _large_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(pages settled, of which reused) of each _wp_large_run that settled any, as they come."""
    runs: list[tuple[int, int]] = []
    wp_large_run = range_fault._wp_large_run

    def spy(k: Kernel, *args: Any) -> Any:
        reused = k.vmstat["pgreuse"]
        news = wp_large_run(k, *args)
        if news.size:
            runs.append((int(news.size), k.vmstat["pgreuse"] - reused))
        return news

    monkeypatch.setattr(range_fault, "_wp_large_run", spy)
    return runs


@pytest.mark.parametrize("kernel_id", POLICY_IDS)
def test_ro_pin_follow_path_is_taken(kernel_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """FOLLOW_PROGRAM's R/O pins on 5.19+ take runs gup_must_unshare leaves alone, and give
    the page-by-page state.

    The THP's pages are exclusive (do_huge_pmd_anonymous_page sets PG_anon_exclusive, 5.19),
    so the pin of pages 3..503 (500 pages from byte 5 of page 3) is one run of 501, and the
    GUP-fast pin of all 512 one more. In the small VMA the parent's COW write made its first 8
    pages exclusive and writable, the fork cleared the other 56's PG_anon_exclusive: a run of
    8 followed, then the unshare run of 56. The 32 zero pages: a short-term pin takes them as
    mapped (one run of 32); a long-term one does too before 6.2 (84209e87c696) and unshares
    each from 6.2 on (no run; the short-term pin after it then follows 32 exclusive pages).
    Before 5.19 no R/O pin needs unsharing: the batch path runs, this one is never asked."""
    runs = _spy_sizes(monkeypatch, gup, "_ro_pin_run", lambda run: int(run.size))
    run_both(kernel_id, FOLLOW_PROGRAM)
    policy = Kernel(kernel_id).policy
    taken = [n for n in runs if n]
    if not policy.gup_unshares_ro_pins:
        assert runs == []
    elif policy.gup_unshares_non_anon.__qualname__.startswith("Policy."):
        assert taken == [501, 512, 8, 56, 32, 32]
    else:
        assert taken == [501, 512, 8, 56, 32]


def test_a_wrong_ro_pin_follow_run_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that ignored gup_must_unshare would pin the 56 shared pages after the 8
    exclusive ones as mapped (no copies): the comparison reports it."""
    monkeypatch.setattr(gup, "_kept_end", lambda k, vma, addr, end, flags: end)
    with pytest.raises(AssertionError, match="outcomes differ"):
        run_both("v6.18", FOLLOW_PROGRAM)


def _spy_gup_faults(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """On the range path: the size of each run GUP faults in (gup.fault_in_range), and one
    entry per page GUP faults page by page (gup._faultin_and_follow)."""
    runs: list[int] = []
    singles: list[int] = []
    fault_run, fault_one = gup.fault_in_range, gup._faultin_and_follow

    def spy_run(k: Kernel, *args: Any, **kwargs: Any) -> Any:
        pfns = fault_run(k, *args, **kwargs)
        if k.range_ops:
            runs.append(int(pfns.size))
        return pfns

    def spy_one(k: Kernel, vma: Any, addr: int, gup_flags: int) -> int:
        if k.range_ops:
            singles.append(addr)
        return fault_one(k, vma, addr, gup_flags)

    monkeypatch.setattr(gup, "fault_in_range", spy_run)
    monkeypatch.setattr(gup, "_faultin_and_follow", spy_one)
    return runs, singles


@pytest.mark.parametrize("kernel_id", POLICY_IDS)
def test_gup_fast_faults_a_run(kernel_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """FAST_SWAP_PIN_PROGRAM's GUP-fast pins fault each VMA's 64 swap PTEs in as one run, and
    give the page-by-page state (untraced: a write's swap-in before 5.18 runs only so).

    GUP-fast changes nothing where it gives up, so where it asks for the entry slow GUP asks
    for (_fast_flags == _slow_flags) the pages are slow GUP's run: the first swap PTE misses,
    and the 64 slots each hold a small page in the swap cache, outside KSM, once each — one
    _swapin_run of 64. On 4.9.287's form (9bbd42e79720) GUP-fast asks a read of the COW
    mapping where slow GUP asks a write: the read pin goes page by page (64 faults), the write
    pin, whose flags agree, as a run."""
    runs, singles = _spy_gup_faults(monkeypatch)
    run_both(kernel_id, FAST_SWAP_PIN_PROGRAM, tracing=False)
    policy = Kernel(kernel_id).policy
    if policy.gup_fast_breaks_cow_on_read is False:
        assert (runs, len(singles)) == ([64], 64), (runs, len(singles))
    else:
        assert (runs, singles) == ([64, 64], []), (runs, len(singles))


# a GUP-fast write pin of 100 pages of THP_COW_PROGRAM's first THP, PTE-mapped after a zap of
# its page 511, then write-protected by a fork whose child is gone
FAST_LARGE_PIN_PROGRAM = [
    *THP_COW_PROGRAM[:5],
    S("exit", who=1),
    S("pin", page=0, length=100 * PAGE, arg=("longterm", True, True)),
]


def test_a_gup_fast_run_over_a_large_folio_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """GUP's runs leave a large folio's pages to the page-by-page path (small_only): the
    reference each grab adds to the folio counts in its next page's do_wp_page verdict. On
    6.18 page by page, page 0 is reused (the child gone, the folio mapped by this mm alone,
    its refcount its 511 mappings: wp_can_reuse_anon_folio) and pinned; the pin's reference
    then makes the refcount exceed the mapcount, so pages 1..99 are copied. A variant that
    faults GUP-fast's run over them at once (every verdict read before any grab) reuses all
    100: the comparison reports it."""
    fault_run = range_fault.fault_in_range

    def whole(k: Kernel, mm: Any, va: int, end: int, write: bool, small_only: bool = False) -> Any:
        return fault_run(k, mm, va, end, write)

    monkeypatch.setattr(gup, "fault_in_range", whole)
    with pytest.raises(AssertionError, match="outcomes differ"):
        run_both("v6.18", FAST_LARGE_PIN_PROGRAM, tracing=False)


# gup_must_unshare() for a R/O FOLL_PIN on 5.19+ of a page mapped read-only, by hand from
# include/linux/mm.h (5.19 a7f226604170, 6.2 84209e87c696): an anonymous page is unshared unless
# PageAnonExclusive; a page that is not anonymous as the policy says (never before 6.2; a
# long-term pin in a COW mapping from 6.2), whatever its PG_anon_exclusive
UNSHARES_BY_HAND = {
    # (anon, exclusive, non_anon): unshared?
    (True, True, False): False,
    (True, True, True): False,
    (True, False, False): True,
    (True, False, True): True,
    (False, False, False): False,
    (False, True, False): False,
    (False, False, True): True,
    (False, True, True): True,
}


def test_page_unshares_one_page_and_a_run_alike() -> None:
    """page_unshares(), the one statement of gup_must_unshare(), gives the hand-derived answer
    for one page's values (bools) and for a run's (bool arrays) of the same cases."""
    for args, want in UNSHARES_BY_HAND.items():
        assert gup.page_unshares(*args) is want, args
    for non_anon in (False, True):
        cases = [c for c in UNSHARES_BY_HAND if c[2] == non_anon]
        anon, exclusive = (np.array([c[i] for c in cases]) for i in range(2))
        got = gup.page_unshares(anon, exclusive, non_anon)
        assert got.tolist() == [UNSHARES_BY_HAND[c] for c in cases]


@pytest.mark.parametrize(
    ("kernel_id", "variant"),
    [
        ("v6.18", lambda anon, exclusive, non_anon: anon & False),
        ("v6.1", lambda anon, exclusive, non_anon: anon == 0),
    ],
    ids=["never", "every-non-anon"],
)
def test_both_ro_pin_paths_ask_the_one_unshare_rule(
    kernel_id: str, variant: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another rule put in page_unshares()'s place is what the range path and the page-by-page
    path both follow (the same state on FOLLOW_PROGRAM), so a path with a copy of its own would
    differ. "never": the range path would follow the 56 shared pages as mapped where a
    page-by-page copy unshares them. "every-non-anon" on 6.1 (whose policy never unshares a
    page that is not anonymous): the 32 zero pages, which a range-path copy would follow as
    mapped; anonymous ones, which a page-by-page copy would unshare."""
    monkeypatch.setattr(gup, "page_unshares", variant)
    run_both(kernel_id, FOLLOW_PROGRAM)


def test_pte_follows_one_pte_and_a_run_alike() -> None:
    """gup.pte_follows(), the one statement of follow_page_pte()'s test that follow_page_mask
    and follow_range ask, by hand: GUP takes a present PTE's page without a fault unless it is
    a migration entry, a NUMA hint under FOLL_NUMA, or read-only under FOLL_WRITE; a none (-1)
    or swap (<= -2) PTE always faults."""
    cases = {
        # (pfn, bits, foll): followed?
        (5, PTE_WRITE, FOLL_WRITE): True,
        (5, 0, FOLL_WRITE): False,
        (5, 0, 0): True,
        (5, PTE_MIGRATION, 0): False,
        (5, PTE_PROTNONE, FOLL_NUMA): False,
        (5, PTE_PROTNONE, 0): True,
        (5, PTE_PROTNONE | PTE_WRITE, FOLL_WRITE): True,
        (-1, PTE_WRITE, 0): False,
        (-3, 0, 0): False,
    }
    for args, want in cases.items():
        assert bool(gup.pte_follows(*args)) is want, args
    for foll in (0, FOLL_WRITE, FOLL_NUMA):
        mine = [c for c in cases if c[2] == foll]
        pfn, bits = (np.array([c[i] for c in mine], dtype=np.int64) for i in range(2))
        assert gup.pte_follows(pfn, bits, foll).tolist() == [cases[c] for c in mine]


def test_pte_access_permitted_one_pte_and_a_run_alike() -> None:
    """range_fault.pte_access_permitted(), the one statement of the MMU's test that
    kernel.mmu_walk and the range path (_pte_run, _wp_run) ask, by hand: an access goes through
    a present PTE unless it is a NUMA hint or a migration entry, or read-only under a write; a
    none (-1) or swap (<= -2) PTE always faults. The zero page (special) lets reads through."""
    cases = {
        # (pfn, bits, write): goes through?
        (5, PTE_WRITE, True): True,
        (5, PTE_WRITE | PTE_DIRTY, True): True,
        (5, 0, True): False,
        (5, 0, False): True,
        (5, PTE_SPECIAL, False): True,
        (5, PTE_PROTNONE, False): False,
        (5, PTE_PROTNONE | PTE_WRITE, True): False,
        (5, PTE_MIGRATION, False): False,
        (5, PTE_MIGRATION | PTE_WRITE, True): False,
        (-1, PTE_WRITE, False): False,
        (-3, 0, False): False,
    }
    for args, want in cases.items():
        assert bool(range_fault.pte_access_permitted(*args)) is want, args
    for write in (False, True):
        mine = [c for c in cases if c[2] is write]
        pfn, bits = (np.array([c[i] for c in mine], dtype=np.int64) for i in range(2))
        got = range_fault.pte_access_permitted(pfn, bits.astype(np.uint8), write)
        assert got.tolist() == [cases[c] for c in mine]


def _needs_dirty(pfn: Any, bits: Any, write: bool) -> Any:
    """A stricter MMU (software dirty bit): a write also faults on a clean PTE."""
    want = PTE_WRITE | PTE_DIRTY if write else 0
    return (pfn >= 0) & ((bits & (PTE_PROTNONE | PTE_MIGRATION | want)) == want)


def _reads_hints(pfn: Any, bits: Any, write: bool) -> Any:
    """A looser MMU: a read goes through a NUMA hint."""
    want = PTE_WRITE if write else 0
    blocked = PTE_MIGRATION | (PTE_PROTNONE | PTE_WRITE if write else 0)
    return (pfn >= 0) & ((bits & blocked) == want)


def _swapped_in_clean(p: Process, a: int) -> None:
    """64 written pages swapped out to the swap cache and read back: on 6.18 the only
    process's pages come back exclusive, so mapped writable but clean (the read does not dirty
    them); the write then meets 64 clean writable PTEs."""
    p.swapout(a, 64 * PAGE, until="swapcache")
    p.read(a, 64 * PAGE)
    bits = p.mm.pmds[a >> 21].bits[(a >> 12) & 511 :][:64]
    assert ((bits & (PTE_WRITE | PTE_DIRTY)) == PTE_WRITE).all()  # the case the variant moves
    p.fill(a, 64 * PAGE, 3)


def _hinted(p: Process, a: int) -> None:
    """64 written pages made NUMA hints (change_prot_numa), then read."""
    p.numa_balance(a, 64 * PAGE)
    p.read(a, 64 * PAGE)


@pytest.mark.parametrize(
    ("variant", "then"), [(_needs_dirty, _swapped_in_clean), (_reads_hints, _hinted)]
)
def test_both_paths_ask_the_one_access_rule(
    variant: Callable[..., Any],
    then: Callable[[Process, int], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another MMU test put in pte_access_permitted()'s place (in both modules that ask it) is
    what the range path and the page-by-page path both follow, to the same state on 6.18.
    _needs_dirty: a range path with a copy of its own would let the 64 writes through where
    mmu_walk faults each once (handle_pte_fault dirties it). _reads_hints: an mmu_walk with a
    copy of its own would take 64 NUMA faults (do_numa_page) where the range run reads
    through."""
    monkeypatch.setattr(range_fault, "pte_access_permitted", variant)
    monkeypatch.setattr(kernel_module, "pte_access_permitted", variant)
    states = []
    for range_ops in (True, False):
        k = Kernel("v6.18", range_ops=range_ops)
        k.thp_enabled = "never"
        p = k.spawn()
        a = p.mmap(64 * PAGE, align=2 * MIB)
        p.fill(a, 64 * PAGE, 1)
        then(p, a)
        states.append(snapshot(k))
    assert states[0] == states[1], diff(states[0], states[1])


# vmscan._plain by hand: small (neither head nor tail), outside the swap cache and KSM,
# anonymous (an anon_vma), mapped once (_mapcount 0) and referenced by that mapping only
PLAIN_BY_HAND = {
    # (flags, mapping, _mapcount, _count): plain?
    (0, 7, 0, 1): True,
    (int(PG_head), 7, 0, 1): False,
    (int(PG_tail), 7, 0, 1): False,
    (int(PG_swapcache), 7, 0, 1): False,
    (int(PG_ksm), 7, 0, 1): False,
    (int(PG_dirty), 7, 0, 1): True,
    (0, 0, 0, 1): False,
    (0, 7, 1, 2): False,
    (0, 7, -1, 1): False,
    (0, 7, 0, 2): False,
}


def test_plain_of_one_page_and_a_run_alike() -> None:
    """vmscan._plain(), the one statement shrink_page_list groups by and _shrink_plain decides
    by, gives the hand-derived answer for one page's fields (ints) and a run's (arrays)."""
    for args, want in PLAIN_BY_HAND.items():
        assert bool(vmscan._plain(*args)) is want, args
    columns = (np.array([c[i] for c in PLAIN_BY_HAND], dtype=np.int64) for i in range(4))
    assert vmscan._plain(*columns).tolist() == list(PLAIN_BY_HAND.values())


def test_plain_anon_of_one_page_and_a_run_alike() -> None:
    """range_fault._plain_anon, which _wp_run asks of its first page alone (ints) and then of
    the run (arrays), by hand: a small page with an anon_vma is plain; one without, a KSM page,
    a swap-cache page and a THP tail (order 1 here) whose head is in the swap cache are not;
    the head's flags count for a tail, the tail's own for a small page."""
    f = Kernel("v6.18").frames
    pfns = f.alloc_pages(8)
    base = int(pfns[0]) & ~1
    pages = [base + i for i in range(6)]
    f.mapping[pages] = [1, 0, 1, 1, 1, 1]
    f.flags[pages[2]] |= PG_ksm
    f.flags[pages[3]] |= PG_swapcache
    f.flags[pages[4]] |= PG_swapcache  # the head of pages[5], an order-1 tail
    f.flags[pages[5]] |= PG_tail
    f.order[pages[5]] = 1
    want = [True, False, False, False, False, False]
    heads = [range_fault.compound_head(f, p) for p in pages]
    assert heads[5] == pages[4]
    one = [bool(range_fault._plain_anon(f, p, h)) for p, h in zip(pages, heads, strict=True)]
    assert one == want
    run = np.array(pages, dtype=np.int64)
    assert range_fault._plain_anon(f, run, range_fault.heads_of(f, run)).tolist() == want


def test_swap_free_rules_of_one_folio_and_a_run_alike() -> None:
    """swapfile.frees_swap() and only_user(), the one statements of try_to_free_swap() and
    should_try_to_free_swap()'s refcount test that do_swap_page and the swap-in run ask, give
    the answers derived by hand for one folio's values (ints) and a run's (arrays).

    try_to_free_swap frees a swap-cache folio only when it is not under writeback and no swap
    PTE is left on its slots. should_try_to_free_swap wants the swap cache's reference and the
    fault's: refcount 2 whatever the folio's size until 6.10; from 6.11 (4c3f96643687) 1 + the
    folio's pages (2 for a small page, 5 for a 4-page folio)."""
    wb = int(PG_writeback)
    frees = {(0, 0): True, (wb, 0): False, (0, 1): False, (wb, 2): False}  # (writeback, swapped)
    for args, want in frees.items():
        assert bool(swapfile.frees_swap(*args)) is want, args
    writeback, swapped = (np.array([c[i] for c in frees], dtype=np.int64) for i in range(2))
    assert swapfile.frees_swap(writeback, swapped).tolist() == list(frees.values())
    only = {
        ("v6.10", 1, 2): True,
        ("v6.10", 1, 3): False,
        ("v6.10", 4, 2): True,
        ("v6.10", 4, 5): False,
        ("v6.11", 1, 2): True,
        ("v6.11", 4, 5): True,
        ("v6.11", 4, 2): False,
    }
    for (kernel_id, nr, count), want in only.items():
        assert bool(swapfile.only_user(Kernel(kernel_id), count, nr)) is want, (kernel_id, nr)
    counts = np.array([1, 2, 3], dtype=np.int64)  # a run of small pages
    assert swapfile.only_user(Kernel("v6.18"), counts, 1).tolist() == [False, True, False]


def _spy_shrink_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of pages of each run vmscan._shrink_run reclaims, as the program runs."""
    runs: list[int] = []
    shrink = vmscan._shrink_run

    def spy(k: Kernel, pages: Any, *args: Any) -> None:
        runs.append(int(pages.size))
        shrink(k, pages, *args)

    monkeypatch.setattr(vmscan, "_shrink_run", spy)
    return runs


def _spy_swapin_runs(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """The size of each run range_fault._swapin_run swaps in, and one entry per do_wp_page
    the range path calls after one."""
    runs: list[int] = []
    swapin = range_fault._swapin_run

    def spy(*args: Any) -> Any:
        pfns = swapin(*args)
        if pfns.size:
            runs.append(int(pfns.size))
        return pfns

    monkeypatch.setattr(range_fault, "_swapin_run", spy)
    copies: list[int] = []
    wp = range_fault.do_wp_page
    monkeypatch.setattr(range_fault, "do_wp_page", lambda *a: copies.append(1) or wp(*a))
    return runs, copies


@pytest.mark.parametrize("kernel_id", POLICY_IDS)
def test_swap_range_paths_are_taken(kernel_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SWAP_PROGRAM takes the swap-out and the swap-in range paths, and the state is the
    page-by-page one (one run of the program for both, spied on both paths).

    Swap-out: its first swap-out takes its 100 small pages through reclaim together, but for
    the pinned one. Each page was written once by the one process (mapped once, _count 1:
    plain), but page 150: the long-term pin holds a reference, so it goes alone and splits the
    run at it. Its rmap walk finds each page once, so the runs are pages 10..149 and 151..219
    of the first four swap-outs: 100, 40 and 19, 50 and 30 pages.

    Swap-in: its read of pages 180..199 (under writeback, in the swap cache since the third
    swap-out: small, outside KSM, a slot each) swaps them in as one run on every policy; its
    write of pages 110..129 (written, in the swap cache) is one run from 5.18, whose
    do_swap_page frees the swap entry before it decides (c145e0b47c77); before 5.18 a write
    asks reuse_swap_page page by page. The later write after the fork finds swap entries the
    child shares: from 5.18 not writable, so do_wp_page follows in the run."""
    shrunk = _spy_shrink_runs(monkeypatch)
    swapped_in, copies = _spy_swapin_runs(monkeypatch)
    run_both(kernel_id, SWAP_PROGRAM)
    assert shrunk[:5] == [100, 40, 19, 50, 30], shrunk
    # the last swap-out, of a PMD-mapped THP (MAP_FIXED at the lowest address: VMA 0) mapped
    # once: no modelled release gives a swap file a THP whole (swaps_whole), so reclaim splits
    # it (split_huge_page) into 512 small pages, each mapped once by the PTE the split made,
    # with no other reference, none zero-filled: one run
    assert shrunk[-1] == 512, shrunk
    if Kernel(kernel_id).policy.swapin_frees_swap_first:
        assert swapped_in[:2] == [20, 20] and copies, (swapped_in, len(copies))
    else:
        assert swapped_in[0] == 20 and not copies, (swapped_in, len(copies))


@pytest.mark.parametrize("kernel_id", POLICY_IDS)
def test_untraced_swapin_copies_are_taken(kernel_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Untraced, the do_wp_page of the pages a write's swap-in run maps read-only are made
    together (traced, page by page among the events), with the page-by-page state. From 5.18:
    SWAP_PROGRAM's write after the fork finds pages 110..219 (but the pinned 150, and those
    the earlier read and write mapped) in the swap cache with the child's swap entries still on
    their slots: not exclusive (no marker: the fork cleared it; page_count 2, the swap cache's
    and the fault's), so mapped read-only and copied."""
    batches: list[int] = []
    after = range_fault._wp_decided_in_order

    def spy(k: Kernel, vma: Any, table: Any, start: int, pos: Any, olds: Any) -> None:
        batches.append(int(olds.size))
        after(k, vma, table, start, pos, olds)

    monkeypatch.setattr(range_fault, "_wp_decided_in_order", spy)
    run_both(kernel_id, SWAP_PROGRAM, tracing=False)
    assert batches, batches  # before 5.18 too: reuse_swap_page sees the child's swap entries


@pytest.mark.parametrize("kernel_id", POLICY_IDS)
def test_swap_cache_write_run_is_taken(kernel_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SWAPCACHE_WP_PROGRAM untraced: the parent's write finds its 32 pages mapped read-only
    and in the swap cache (the read mapped them so: each slot held the child's swap entry
    too), small and anonymous: one run, with the page-by-page state."""
    runs = _spy_sizes(monkeypatch, range_fault, "_wp_swapcache_run", lambda pfns: int(pfns.size))
    run_both(kernel_id, SWAPCACHE_WP_PROGRAM, tracing=False)
    assert runs == [32], runs


def test_a_swap_cache_write_run_keeping_every_swap_cache_copy_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """6.18 (only_reference): page by page, pages 16..31, whose slots the child's munmap left
    without a swap entry, leave the swap cache (try_to_free_swap) and are reused (page_count
    1); 0..15 keep the child's entries and are copied (page_count 2). A run whose verdicts
    drop no swap-cache copy copies all 32: the states differ."""
    decide = range_fault._wp_decided_in_order

    def keeping_swap(k: Kernel, *args: Any) -> None:
        with monkeypatch.context() as patch:
            patch.setattr(v5_18, "try_to_free_swap", lambda k, pfn: False)
            decide(k, *args)

    monkeypatch.setattr(range_fault, "_wp_decided_in_order", keeping_swap)
    with pytest.raises(AssertionError, match="differ"):
        run_both("v6.18", SWAPCACHE_WP_PROGRAM, tracing=False)


def _swapin_write_runs(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """Spies on the range path's swap-in runs under a write (their lengths) and on the
    do_wp_page batches after them (how many pages each)."""
    runs: list[int] = []
    batches: list[int] = []
    swapin, after = range_fault._swapin_run, range_fault._wp_decided_in_order

    def spy_run(k: Kernel, *args: Any) -> Any:
        pfns = swapin(k, *args)
        if pfns.size and args[4] and k.range_ops:  # write, the ranged side
            runs.append(int(pfns.size))
        return pfns

    def spy_after(k: Kernel, vma: Any, table: Any, start: int, pos: Any, olds: Any) -> None:
        batches.append(int(olds.size))
        after(k, vma, table, start, pos, olds)

    monkeypatch.setattr(range_fault, "_swapin_run", spy_run)
    monkeypatch.setattr(range_fault, "_wp_decided_in_order", spy_after)
    return runs, batches


PRE_5_18 = [p for p in POLICY_IDS if not Kernel(p).policy.swapin_frees_swap_first]


def _spy_swap_write_keys(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(pages, decisions asked) of each by_key call that also keys on the slots' swap counts
    (a write's swap-in before 5.18)."""
    asked: list[tuple[int, int]] = []
    by_key = range_fault.by_key

    def spy(f: Any, pages: Any, decide: Any, *more: Any) -> Any:
        decisions, which = by_key(f, pages, decide, *more)
        if len(more) == 3:
            asked.append((int(pages.size), len(decisions)))
        return decisions, which

    monkeypatch.setattr(range_fault, "by_key", spy)
    return asked


@pytest.mark.parametrize("kernel_id", PRE_5_18)
def test_swapin_write_run_decides_by_key(kernel_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before 5.18, untraced, SWAP_WRITE_PROGRAM's writes swap in runs, reuse_swap_page asked
    once per key (the page's fields and its slot's swap count). The slots of pages 0..63 hold
    the swap cache's pages, each slot with two swap entries after the fork. The child's writes
    (20 pages each): page_mapcount 0 + swap count 2 > 1, mapped read-only, then do_wp_page
    copies each (4.5 .. 5.8 reuse_swap_page: mapcount 1 + swap count 1; 5.9+: page_count 2,
    the swap cache's and the mapping's). The parent's write (64): 0..19 and 32..51 have only
    its swap entry (mapcount 0 + 1 <= 1: reused, dropped from the swap cache, mapped writable
    — a pin does not count before 5.18), 20..31 and 52..63 still the child's too: mapped
    read-only, then 24 copies in one batch. From 5.11 (feb889fb40fa) reclaim leaves the pinned
    40..47 mapped: each write's runs stop before them and go on after them (the child's
    second 8 + 4, the parent's 40 + 16, copies 12 + 12).

    Keys: the child's first 20 pages one (swap count 2); its second write 32..51 two, the
    pinned 40..47 apart (the pin's reference in _count), one each for 32..39 and 48..51 from
    5.11. The parent's 64: swap count 1 unpinned, 1 pinned, 2 (three); from 5.11 its 40 are
    0..19 + 32..39 (count 1) and 20..31 (count 2), its 16 48..51 and 52..63 (two each)."""
    runs, batches = _swapin_write_runs(monkeypatch)
    asked = _spy_swap_write_keys(monkeypatch)
    run_both(kernel_id, SWAP_WRITE_PROGRAM, tracing=False)
    if Kernel(kernel_id).policy.reclaim_skips_pinned:
        assert (runs, batches) == ([20, 8, 4, 40, 16], [20, 8, 4, 12, 12])
        assert asked == [(20, 1), (8, 1), (4, 1), (40, 2), (16, 2)]
    else:
        assert (runs, batches) == ([20, 20, 64], [20, 20, 24])
        assert asked == [(20, 1), (20, 2), (64, 3)]


def test_a_swapin_write_run_dropping_only_the_asked_pages_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """reuse_swap_page asked once per key drops only the page it was asked of from the swap
    cache; without _drop_as_decided the parent's pages 1..19 would stay in it."""
    monkeypatch.setattr(range_fault, "_drop_as_decided", lambda *args: None)
    with pytest.raises(AssertionError, match="state differs"):
        run_both("v4.5", SWAP_WRITE_PROGRAM, tracing=False)


def test_a_wrong_untraced_swapin_copy_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Copies that give each PTE the copy of its neighbour's page (the old pages taken in the
    reverse of address order) hold other bytes and drop other pages' mappings."""
    after = range_fault._wp_decided_in_order
    monkeypatch.setattr(
        range_fault,
        "_wp_decided_in_order",
        lambda k, vma, table, start, pos, olds: after(k, vma, table, start, pos, olds[::-1]),
    )
    with pytest.raises(AssertionError, match="state differs"):
        run_both("v6.18", SWAP_PROGRAM, tracing=False)


def test_a_wrong_swapin_run_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A swap-in run that keeps a written page in the swap cache where should_try_to_free_swap
    (5.18) drops it differs from the page-by-page state."""
    monkeypatch.setattr(range_fault, "_free_swap_cache", lambda *args: None)
    with pytest.raises(AssertionError, match="state differs"):
        run_both("v6.18", SWAP_PROGRAM)


def test_a_wrong_swapout_run_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run path that forgets the 5.19 exclusive marker of the swap PTEs it makes (as if
    try_to_unmap_one did not read PG_anon_exclusive) differs from the page-by-page state."""
    unmap = vmscan._unmap

    def forgets_marker(k: Kernel, pages: Any, *args: Any) -> None:
        k.frames.flags[pages] &= flags_without(PG_anon_exclusive)
        unmap(k, pages, *args)

    monkeypatch.setattr(vmscan, "_unmap", forgets_marker)
    with pytest.raises(AssertionError, match=r"state differs(.|\n)*\.bits\[0x7a\]: 8 != 136"):
        run_both("v6.18", SWAP_PROGRAM)  # PTE_SOFT_DIRTY alone, not with PTE_SWP_EXCLUSIVE


@pytest.mark.parametrize("kernel_id", POLICY_IDS)
def test_large_folio_cow_range_path_is_taken(
    kernel_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """THP_COW_PROGRAM's COW writes settle runs of a PTE-mapped THP's pages at once, with the
    page-by-page state.

    Its first write covers pages 3..303 (one byte into page 3, 300 pages long): 301 read-only
    PTEs of the split THP, which the child maps too (511 pages each, refcount 1022), so every
    release copies each: 4.5 never reuses a THP subpage, 4.5+6d0a07e .. 5.7 see a subpage
    mapcount of 2, 5.8 .. 6.8 a page_count over 1, 6.9 .. 6.14 never reuse a page of a large
    folio that is not exclusive, 6.15 the folio maybe mapped shared; no copy takes the last
    reference, so the 301 are one run. After the child's exit the parent alone maps the
    folio's 210 other pages (pages 0..2 and 304..510; page 511 was zapped), each holding one
    reference: 6.15+ reuses them (not shared, _large_mapcount 210 == refcount 210), a run of
    3 and one of 207. 4.5 copies them: 3, then 206 of the 207 (the last copy would drop the
    folio's last reference, freeing the frame the next copy would take: the run ends)."""
    runs = _large_runs(monkeypatch)
    run_both(kernel_id, THP_COW_PROGRAM)
    assert (301, 0) in runs, runs
    if kernel_id == "v4.5":
        assert runs == [(301, 0), (3, 0), (206, 0)], runs
    if isinstance(Kernel(kernel_id).policy, LargeFolioReuse):
        assert runs[-2:] == [(3, 3), (207, 207)], runs


@pytest.mark.parametrize("kernel_id", ["v4.5+6d0a07e", "v4.6", "v5.7"])
def test_large_folio_reuse_moves_the_head(kernel_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """LAST_PAGE_PROGRAM's write settles page 5 of the THP in a run of one reuse that records
    page_move_anon_rmap of the THP's head (the page that function is given), as page by page:
    with the folio's one mapping left, page_trans_huge_mapcount and total_mapcount are 1, so
    reuse_swap_page reuses it and do_wp_page, total_mapcount being 1, moves it (4.5+6d0a07e ..
    5.7)."""
    runs = _large_runs(monkeypatch)
    run_both(kernel_id, LAST_PAGE_PROGRAM)
    assert runs == [(1, 1)], runs


def test_large_folio_reuse_moving_the_page_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that records page_move_anon_rmap of the reused page itself (page 5), not of its
    head, differs from page by page in that event's page."""
    monkeypatch.setattr(range_fault, "compound_head", lambda f, pfn: pfn)
    with pytest.raises(AssertionError, match=r"events\[\d+\]\[4\]"):
        run_both("v4.6", LAST_PAGE_PROGRAM)


def test_large_folio_cow_run_deciding_ahead_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong _wp_large_run that asks wp_reuse for every page before settling any, then
    settles them as the right one does: each verdict reads the folio's counters as they were
    before the run. On 6.15+ the copies are the same but each records the _large_mapcount it
    read, 1022 for every page where page by page reads 1022, 1021, ... (a copy drops one
    mapping): the differential test fails on the COW log."""

    def deciding_ahead(k: Kernel, vma: Any, table: Any, start: int, first: int, pages: Any) -> Any:
        decisions = [k.policy.wp_reuse(k, vma, pfn) for pfn in pages.tolist()]
        if any(d.reuse for d in decisions):
            return range_fault.NONE
        f = k.frames
        for pfn, head in zip(pages.tolist(), range_fault.heads_of(f, pages).tolist(), strict=True):
            rmap.page_remove_folio_pte(k, vma.mm, pfn, head)
            f._count[head] -= 1
        which = np.arange(len(decisions), dtype=np.int64)
        return range_fault._apply(
            k, vma, table, start, first, pages, decisions, which, settled=True
        )

    monkeypatch.setattr(range_fault, "_wp_large_run", deciding_ahead)
    with pytest.raises(AssertionError, match="cow_log"):
        run_both("v6.18", THP_COW_PROGRAM)


def test_an_unshare_run_past_a_large_folio_reuse_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """UNSHARE_PROGRAM on v6.18: once the child has exited, the R/O pin of the THP's pages
    finds the folio mapped by the parent alone and reuses a page (6.15, LargeFolioReuse); page
    by page that page's pin raises the folio's counts before the next page is decided, so an
    unshare run that went on past the reuse (as it may past a small page's) decides the next
    pages on counts too low: the comparison reports it."""
    monkeypatch.setattr(gup, "reuse_ends_run", lambda f, head: False)
    with pytest.raises(AssertionError, match="outcomes differ"):
        run_both("v6.18", UNSHARE_PROGRAM)


def _spy_ro_pin_faults(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the runs fault_in_range settles for R/O pins (after _faults_as_run)."""
    sizes: list[int] = []
    armed = [False]
    faults_as_run, fault_in_range = gup._faults_as_run, gup.fault_in_range

    def ask(*args: Any) -> bool:
        armed[0] = faults_as_run(*args)
        return armed[0]

    def fault(*args: Any, **kwargs: Any) -> Any:
        run = fault_in_range(*args, **kwargs)
        if armed[0]:
            sizes.append(run.size)
            armed[0] = False
        return run

    monkeypatch.setattr(gup, "_faults_as_run", ask)
    monkeypatch.setattr(gup, "fault_in_range", fault)
    return sizes


@pytest.mark.parametrize("kernel_id", POLICY_IDS)
def test_ro_pin_fault_runs_are_taken_untraced(
    kernel_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Untraced, SWAPPED_RO_PIN_PROGRAM's R/O pins (5.19+) fault their pages in as runs, and
    the state (events aside, none recorded) is the page-by-page one.

    The parent's 64 PTEs are swap entries of 64 slots whose small pages the swap cache holds
    (swap-out 'written'), none KSM: one read-fault run swaps in all 64 (do_swap_page on a
    read, every generation), which the fork left shared (swap count 2), so they are then
    unshared. The child's pin finds its 64 swap entries the same way: one run of 64. The
    second mapping has no page table: its first page faults alone (the table it makes), the
    other 15 none PTEs are one read-fault run of zero pages. Traced, or before 5.19 (the batch
    path faults R/O pins' runs there), no such run."""
    sizes = _spy_ro_pin_faults(monkeypatch)
    run_both(kernel_id, SWAPPED_RO_PIN_PROGRAM, tracing=False)
    if Kernel(kernel_id).policy.gup_unshares_ro_pins:
        assert sizes == [64, 64, 15]
    else:
        assert sizes == []
    sizes.clear()
    run_both(kernel_id, SWAPPED_RO_PIN_PROGRAM)
    assert sizes == []
    for program in (SWAP_PIN_PROGRAM, UNSHARE_PROGRAM, FOLLOW_PROGRAM):
        run_both(kernel_id, program, tracing=False)  # the other pins' programs, untraced


def test_traced_ro_pin_fault_runs_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Faulting a R/O pin's swapped-out pages as a run while tracing puts every swap-in's
    events ahead of the unshares' (page by page they alternate): the comparison reports it."""
    faults_as_run = gup._faults_as_run

    def untraced(k: Kernel, *args: Any) -> bool:
        k.tracing, tracing = False, k.tracing
        try:
            return faults_as_run(k, *args)
        finally:
            k.tracing = tracing

    monkeypatch.setattr(gup, "_faults_as_run", untraced)
    with pytest.raises(AssertionError, match="events"):
        run_both("v6.18", SWAPPED_RO_PIN_PROGRAM)


# --- the comparison can fail --------------------------------------------------------------


def rich_kernel(kernel_id: str = "v6.18") -> Kernel:
    """A state where every part of a snapshot holds something: huge and huge-zero PMDs, PTE
    tables, written, forked, COW-copied, KSM-merged, pinned and swapped pages, a partly
    unmapped THP on the deferred split queue, free frames."""
    k = Kernel(kernel_id, range_ops=False, tracing=True)
    p = k.spawn()
    thp = p.mmap(4 * MIB, align=2 * MIB)
    p.fill(thp, 4 * MIB, 0x11)
    huge_zero = p.mmap(2 * MIB, align=2 * MIB)
    p.read(huge_zero + 5, 10)
    k.thp_enabled = "never"
    small = p.mmap(64 * PAGE)
    p.write(small + 3, pattern(64 * PAGE - 3, 1))
    same = p.mmap(8 * PAGE)
    p.madvise(same, 8 * PAGE, "mergeable")
    p.fill(same, 8 * PAGE, 0x42)
    k.ksmd()
    k.ksmd()
    p.swapout(small + 32 * PAGE, 8 * PAGE, until="writeback")
    p.swapout(small + 40 * PAGE, 8 * PAGE, until="freed")
    p.munmap(thp + 2 * MIB, 256 * PAGE)  # before the fork: no PMD maps that THP any more (6.2+)
    child = p.fork()
    child.write(small + 5, b"x")
    p.get_user_pages(small, 4 * PAGE, flavour="pin", write=True)
    p.munmap(small + 56 * PAGE, 4 * PAGE)
    return k


@pytest.fixture(scope="module")
def rich() -> Kernel:
    return rich_kernel()


def _huge(k: Kernel) -> HugePmd:
    mm = k.processes[1].mm
    return next(e for e in mm.pmds.values() if isinstance(e, HugePmd) and not e.huge_zero)


def _table(k: Kernel) -> PteTable:
    return next(e for e in k.processes[1].mm.pmds.values() if isinstance(e, PteTable))


def _child_anon_vma(k: Kernel) -> Any:
    return next(av for av in k.anon_vmas.values() if av.parent is not None and av.parent is not av)


def _data_pfn(k: Kernel) -> int:
    pfns = k.frames.allocated()
    return int(pfns[k.frames.has_data(pfns)][0])


def _set_field(name: str) -> Callable[[Kernel], None]:
    def mutate(k: Kernel) -> None:
        arr = getattr(k.frames, name)
        pfn = int(k.frames.allocated()[0])
        if isinstance(arr, RowField):  # kept in rows (a THP, a swap-cache page): one's field
            pfn = min(arr.rows.row) + arr.page
        if np.ndim(arr[pfn]):
            arr[pfn, 1] += 1
        else:
            arr[pfn] += 1

    return mutate


def _swap_free_slot(k: Kernel) -> None:
    heapq.heappush(k.swap._free, k.swap.nr + 5)


def _reorder_free(k: Kernel) -> None:
    free = k.frames.free[0].pfns()
    free[0], free[1] = free[1], free[0]


def _vma(k: Kernel) -> Any:
    return k.processes[1].mm.vmas[0]


def _rekey_anon_vma(k: Kernel) -> None:
    key = next(iter(k.anon_vmas))
    k.anon_vmas[key + 1000] = k.anon_vmas.pop(key)


def _add_history(k: Kernel) -> None:
    k.history.append(OpRecord("pid {}: nothing", 1))


def _other_anon_vma(k: Kernel) -> None:
    vma = _vma(k)
    vma.anon_vma = next(av for av in k.anon_vmas.values() if av is not vma.anon_vma)


def _rewrite_cow_log(k: Kernel, change: Callable[[list[CowEvent]], None]) -> None:
    events = list(k.cow_log)
    change(events)
    k.cow_log = CowLog()
    for event in events:
        k.cow_log.append(event)


def _cow_why(k: Kernel) -> None:
    def other_reason(events: list[CowEvent]) -> None:
        events[0] = events[0]._replace(reason="another reason")

    _rewrite_cow_log(k, other_reason)


def _bump_vmstat(k: Kernel) -> None:
    for key in list(k.vmstat):
        k.vmstat[key] += 1


def _pte_bits(k: Kernel) -> None:
    table = _table(k)
    i = int(np.flatnonzero(table.pfn >= 0)[0])
    table.bits[i] ^= PTE_DIRTY


def _pte_pfn(k: Kernel) -> None:
    table = _table(k)
    i = int(np.flatnonzero(table.pfn >= 0)[0])
    table.pfn[i] += 1


def _huge_field(name: str) -> Callable[[Kernel], None]:
    def mutate(k: Kernel) -> None:
        entry = _huge(k)
        value = getattr(entry, name)
        setattr(entry, name, value + 512 if name == "pfn" else not value)

    return mutate


def _huge_to_table(k: Kernel) -> None:
    mm = k.processes[1].mm
    idx = next(i for i, e in mm.pmds.items() if isinstance(e, HugePmd) and not e.huge_zero)
    mm.pmds[idx] = PteTable()


def _pin(k: Kernel) -> Pin:
    return k.pins[1]


def _pin_field(name: str) -> Callable[[Kernel], None]:
    def mutate(k: Kernel) -> None:
        setattr(_pin(k), name, 7)

    return mutate


def _set_pages(k: Kernel) -> None:
    _pin(k).pages[1] += 1


def _ksm_item(k: Kernel) -> None:
    next(iter(k.ksm.items.values())).oldchecksum = b"changed!"


def _ksm_node(k: Kernel) -> None:
    next(iter(k.ksm.nodes.values())).kpfn += 1


def _mthp(k: Kernel) -> None:
    k.mthp_enabled[64] = "always"


def _swap_data(k: Kernel) -> None:
    slot = next(iter(k.swap.data))
    k.swap.data[slot] = b"\x01" + bytes(k.swap.data[slot])[1:]


MUTATIONS: dict[str, tuple[str, Callable[[Kernel], None]]] = {
    # name: (the part the difference must be reported in, the deliberate difference)
    **{f"field {name}": (f"frames.{name}", _set_field(name)) for name in frame_fields()},
    "frames.nr": ("frames.nr", lambda k: setattr(k.frames, "nr", k.frames.nr + 1)),
    "free list order": ("frames.free[]", _reorder_free),
    "free list entry dropped": ("frames.free[]", lambda k: k.frames.free[0].pop()),
    "nr_allocated": ("frames.nr_allocated", lambda k: setattr(k.frames, "nr_allocated", 1)),
    "huge_zero_refcount": (
        "frames.huge_zero_refcount",
        lambda k: setattr(k.frames, "huge_zero_refcount", 9),
    ),
    "one byte more in a written page": (
        "frames.bytes[]",
        lambda k: k.frames.write(_data_pfn(k), 4000, b"\x01"),
    ),
    "a byte in a zero-filled page": (
        "frames.bytes[]",
        lambda k: k.frames.write(int(k.frames.free[0][0]), 7, b"\x01"),
    ),
    "process gone": ("processes", lambda k: k.processes.pop(2)),
    "pid": ("proc[].pid", lambda k: setattr(k.processes[1], "pid", 7)),
    "alive": ("proc[].alive", lambda k: setattr(k.processes[1], "alive", False)),
    "mm.pid": ("proc[].mm.pid", lambda k: setattr(k.processes[1].mm, "pid", 7)),
    "anon_rss": ("proc[].anon_rss", lambda k: setattr(k.processes[1].mm, "anon_rss", 1)),
    "swapents": ("proc[].swapents", lambda k: setattr(k.processes[2].mm, "swapents", 1)),
    "has_pinned": ("proc[].has_pinned", lambda k: setattr(k.processes[2].mm, "has_pinned", 1)),
    "vma start": ("proc[].vmas[].start", lambda k: setattr(_vma(k), "vm_start", 0)),
    "vma end": ("proc[].vmas[].end", lambda k: setattr(_vma(k), "vm_end", 0)),
    "vma flags": ("proc[].vmas[].flags", lambda k: setattr(_vma(k), "vm_flags", 0)),
    "vma pgoff": ("proc[].vmas[].pgoff", lambda k: setattr(_vma(k), "vm_pgoff", 0)),
    "vma mm": ("proc[].vmas[].mm", lambda k: setattr(_vma(k), "mm", k.processes[2].mm)),
    "vma anon_vma": ("proc[].vmas[].anon_vma", _other_anon_vma),
    "vma chain": ("proc[].vmas[].chain", lambda k: _vma(k).anon_vma_chain.pop()),
    "PTE bit": ("proc[].pmd[].bits", _pte_bits),
    "PTE pfn": ("proc[].pmd[].pfn", _pte_pfn),
    **{
        f"huge PMD {f.name}": (f"proc[].pmd[].{f.name}", _huge_field(f.name))
        for f in dataclasses.fields(HugePmd)
    },
    "huge PMD becomes a table": ("proc[].pmd[].huge", _huge_to_table),
    "PMD entry gone": ("proc[].pmd[]", lambda k: k.processes[1].mm.pmds.popitem()),
    "anon_vma root": ("anon_vmas[].root", lambda k: setattr(_child_anon_vma(k), "root", None)),
    "anon_vma parent": (
        "anon_vmas[].parent",
        lambda k: setattr(_child_anon_vma(k), "parent", None),
    ),
    "anon_vma degree": ("anon_vmas[].degree", lambda k: setattr(_child_anon_vma(k), "degree", 9)),
    "anon_vma vmas": ("anon_vmas[].vmas", lambda k: _child_anon_vma(k).vmas.clear()),
    "anon_vma under another key": ("anon_vmas.keys", _rekey_anon_vma),
    "deferred split": ("deferred_split", lambda k: k.deferred_split.add(4096)),
    "vmstat": ("vmstat.", _bump_vmstat),
    "cow_log entry dropped": ("cow_log", lambda k: _rewrite_cow_log(k, list.pop)),
    "event dropped": ("events", lambda k: k.events.pop()),
    "cow_log why": ("cow_log", _cow_why),
    **{
        f"pin {name}": (f"pins[].{name}", _pin_field(name))
        for name in ("id", "pid", "addr", "length", "gup_flags")
    },
    "pin pages": ("pins[].pages", _set_pages),
    "pin write": ("pins[].write", lambda k: setattr(_pin(k), "write", False)),
    "pin flavour": ("pins[].flavour", lambda k: setattr(_pin(k), "flavour", "get")),
    "swap nr": ("swap.nr", lambda k: setattr(k.swap, "nr", k.swap.nr + 1)),
    "swap_map": ("swap.swap_map", lambda k: k.swap.swap_map.__setitem__(0, 5)),
    "swap cache": ("swap.cache", lambda k: k.swap.cache.__setitem__(0, -1)),
    "swap data": ("swap.data[]", _swap_data),
    "swap free slot": ("swap.free", _swap_free_slot),
    "swap slot beyond nr": (
        "swap.beyond_nr",
        lambda k: k.swap.swap_map.__setitem__(k.swap.nr, 1),
    ),
    "ksm item": ("ksm.items[]", _ksm_item),
    "ksm node": ("ksm.nodes[]", _ksm_node),
    "ksm unreached": ("ksm.unreached", lambda k: k.ksm.unreached.add((1, 0))),
    "ksm next_id": ("ksm.next_id", lambda k: setattr(k.ksm, "next_id", 99)),
    "ksm full_scans": ("ksm.full_scans", lambda k: setattr(k.ksm, "full_scans", 99)),
    "thp_enabled": ("knobs.thp_enabled", lambda k: setattr(k, "thp_enabled", "always")),
    "mthp_enabled": ("knobs.mthp_enabled[]", _mthp),
    "thp_use_zero_page": ("knobs.thp_use_zero_page", lambda k: setattr(k, "thp_use_zero_page", 0)),
    "thp_alloc_fail": ("knobs.thp_alloc_fail", lambda k: setattr(k, "thp_alloc_fail", True)),
    "max_ptes_none": ("knobs.max_ptes", lambda k: setattr(k, "max_ptes_none", 0)),
    "ksm_max_page_sharing": (
        "knobs.ksm_max_page_sharing",
        lambda k: setattr(k, "ksm_max_page_sharing", 2),
    ),
    "ksm_use_zero_pages": (
        "knobs.ksm_use_zero_pages",
        lambda k: setattr(k, "ksm_use_zero_pages", True),
    ),
    "numa_misplaced": ("knobs.numa_misplaced", lambda k: setattr(k, "numa_misplaced", False)),
    "next anon_vma id": ("ids", lambda k: next(k._ids)),
    "next pid": ("ids", lambda k: next(k._pids)),
    "next pin id": ("ids", lambda k: next(k._pin_ids)),
    "history record added": ("history", _add_history),
    "history record changed": ("history", lambda k: k.history.__setitem__(3, OpRecord("x"))),
}


def full_diff(a: Kernel, b: Kernel) -> list[str]:
    return diff(snapshot(a), snapshot(b), limit=10_000, per_part=10_000)


def test_a_copy_of_a_state_compares_equal(rich: Kernel) -> None:
    assert snapshot(copy.deepcopy(rich)) == snapshot(rich)
    assert full_diff(rich, copy.deepcopy(rich)) == []


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_a_deliberate_difference_is_reported(rich: Kernel, name: str) -> None:
    part, mutate = MUTATIONS[name]
    other = copy.deepcopy(rich)
    mutate(other)
    a, b = snapshot(rich), snapshot(other)
    assert a != b
    lines = full_diff(rich, other)
    assert any(path.startswith(part) for path in reported(lines)), lines[:10]
    assert describe(a, b).count("\n") >= 1


def test_every_part_of_the_snapshot_has_a_deliberate_difference(rich: Kernel) -> None:
    """Each part of the rich state (normalised path) is reported by one of MUTATIONS, so no
    part of the snapshot is compared by nobody."""
    parts = leaves(snapshot(rich))
    assert len(parts) > 60
    found: set[str] = set()
    for _, mutate in MUTATIONS.values():
        other = copy.deepcopy(rich)
        mutate(other)
        found |= reported(full_diff(rich, other))
    missed = sorted(leaf for leaf in parts if not any(covers(path, leaf) for path in found))
    assert missed == []


def test_the_rich_state_has_every_part(rich: Kernel) -> None:
    snap = snapshot(rich).parts
    pmds = [v for key, v in snap["proc[1]"].items() if key.startswith("pmd[")]
    assert any(e.get("huge") and not e["huge_zero"] for e in pmds)
    assert any(e.get("huge") and e["huge_zero"] for e in pmds)
    assert any("bits" in e for e in pmds)
    assert snap["proc[1]"]["swapents"] and snap["proc[1]"]["has_pinned"]
    assert snap["cow_log"] and snap["pins"] and snap["deferred_split"]
    assert snap["swap"]["data"] and (snap["swap"]["cache"] >= 0).any()
    assert snap["ksm"]["nodes"] and snap["ksm"]["items"]
    assert any(av["parent"] not in (None, key) for key, av in snap["anon_vmas"].items())
    assert len(snap["frames.free"][0]) >= 2 and snap["frames.huge_zero_refcount"]


def test_what_the_model_cannot_observe_is_no_difference(rich: Kernel) -> None:
    """Zeros written into a zero-filled frame, a zero vmstat counter, page-table entries
    inserted in another order: the same state."""
    other = copy.deepcopy(rich)
    other.frames.write(int(other.frames.free[0][0]), 100, bytes(64))
    other.vmstat["thp_split_pmd"] += 0
    mm = other.processes[1].mm
    mm.pmds = dict(reversed(list(mm.pmds.items())))
    assert full_diff(rich, other) == []


def test_an_access_crossing_into_a_hole_is_an_outcome_with_bytes_done() -> None:
    side = boot("v6.18", range_ops=False, selfcheck=True)
    start = resolve(side, Step("mmap", page=4, arg=(0, 0, "rw")))
    assert start is not None
    perform(side, start, False)
    call = Call("fill", 0, (ARENA + PAGE + 10, 8 * PAGE, 1))
    outcome = perform(side, call, False)
    assert outcome == (
        "SIGSEGV",
        "SIGSEGV: write at 0x600000004000",
        ARENA + 4 * PAGE,
        "write",
        3 * PAGE - 10,
        True,
    )
    assert side.procs == []


def _large_reuse_mismatches(kernel_id: str) -> list[str]:
    """Pages of PTE-mapped large folios where wp_reuse_large (the range path's entry, the head
    given) and wp_reuse (the page-by-page one) disagree, in the states of a THP split by a zap:
    its pages exclusive (before the fork), shared with the child, after the parent's COW write of
    100 of them, and after the child's exit. Each call reads only: no swap cache is involved."""
    k = Kernel(kernel_id)
    k.thp_enabled = "always"
    p = k.spawn()
    addr = p.mmap(2 * MIB, align=2 * MIB)
    p.fill(addr, 2 * MIB, 1)
    p.madvise(addr + 511 * PAGE, PAGE, "dontneed")
    vma, f, policy, out = p.mm.find_vma(addr), k.frames, k.policy, []

    def compare(when: str) -> None:
        table = p.mm.pmds[addr >> 21]
        assert isinstance(table, PteTable)
        for pfn in table.pfn[table.pfn >= 0].tolist():
            if not f.flags[pfn] & (PG_head | PG_tail):
                continue
            head = int(range_fault.heads_of(f, np.array([pfn]))[0])
            by_run, by_page = policy.wp_reuse_large(k, vma, pfn, head), policy.wp_reuse(k, vma, pfn)
            if by_run != by_page:
                out.append(f"{when} pfn {pfn:#x}: {by_run} != {by_page}")

    compare("exclusive")
    child = p.fork()
    compare("shared")
    p.fill(addr + 7 * PAGE, 100 * PAGE, 2)
    compare("after 100 copies")
    child.exit()
    compare("child gone")
    return out


def _owner(policy: Any, method: str) -> type:
    """The class in the policy's MRO that defines method."""
    return next(c for c in type(policy).__mro__ if method in vars(c))


@pytest.mark.parametrize("kernel_id", POLICY_IDS)
def test_wp_reuse_large_is_wp_reuse(kernel_id: str) -> None:
    """Every policy's verdict for a large folio's page, its head given, is wp_reuse's, with the
    same reads: one rule. wp_reuse_large is Policy's (which asks wp_reuse) or stated by the
    change that states wp_reuse (6.15): a later change stating its rule in wp_reuse alone would
    leave the range path on the older rule."""
    policy = Kernel(kernel_id).policy
    assert _owner(policy, "wp_reuse_large") in (Policy, _owner(policy, "wp_reuse"))
    assert _large_reuse_mismatches(kernel_id) == []


def test_a_rule_stated_in_wp_reuse_alone_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A change after 6.15 that restated the rule in wp_reuse only (here: the same verdict, the
    rule's text changed) is one the range path would not ask: both checks above report it."""
    policy = Kernel("v6.18").policy
    inner = type(policy).wp_reuse

    def later(self: Any, k: Kernel, vma: Any, pfn: int) -> Any:
        return inner(self, k, vma, pfn)._replace(rule="a later release's rule")

    monkeypatch.setattr(type(policy), "wp_reuse", later)
    assert _owner(policy, "wp_reuse_large") not in (Policy, _owner(policy, "wp_reuse"))
    found = _large_reuse_mismatches("v6.18")
    # 511 PTE-mapped pages in each of 4 states, but the 100 copied in the last two: 1844
    assert len(found) == 511 * 4 - 200, found[:3]


@pytest.mark.parametrize("kernel_id", POLICY_IDS)
def test_large_folio_copies_in_bulk(kernel_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """THP_COW_PROGRAM untraced: 6.15+ settles its first write's 301 copies as one bulk run,
    with the page-by-page state.

    After the zap and the fork each process maps 511 pages of the THP by PTEs, none exclusive:
    _large_mapcount 1022, refcount 1022, maybe shared (two MMs), each MM's count 511. Each of
    the 301 copies lowers the first two by one; the bit would clear once _large_mapcount came
    down to the child's 511, after the parent's 511th copy (removals_keeping_shared 510): so
    pages 3..303 read 1022 down to 722, all copied, min(301, 1021, 1021, 511) = 301 in bulk.
    The later writes (the child gone) reuse, which is no bulk copy (0). Before 6.15 a rule may
    read what a copy does not lower (a page's own mapcount): never asked."""
    # the runs range_fault._large_copies settles (0: it left the run alone)
    sizes = _spy_sizes(monkeypatch, range_fault, "_large_copies", lambda news: int(news.size))
    run_both(kernel_id, THP_COW_PROGRAM, tracing=False)
    if Kernel(kernel_id).policy.large_reuse_reads_folio:
        assert sizes == [301, 0, 0], sizes
    else:
        assert sizes == [], sizes


@pytest.mark.parametrize("kernel_id", POLICY_IDS)
def test_bulk_copies_claimed_by_the_rule_that_reads_the_folio(kernel_id: str) -> None:
    """large_reuse_reads_folio is set by the class that states wp_reuse_large (6.15): a later
    change restating the rule (which may read more) must say so again."""
    policy = Kernel(kernel_id).policy
    if policy.large_reuse_reads_folio:
        assert _owner(policy, "large_reuse_reads_folio") is _owner(policy, "wp_reuse_large")


def test_removals_keeping_shared_as_each_removal_leaves_it() -> None:
    """A THP split by a zap, then forked: each MM maps its 511 pages by PTEs (_large_mapcount
    1022). The maybe-shared bit clears when the count comes down to the other MM's 511, at the
    parent's 511th removal, so 510 keep it; removing them one by one agrees."""
    k = Kernel("v6.18")
    k.thp_enabled = "always"
    p = k.spawn()
    addr = p.mmap(2 * MIB, align=2 * MIB)
    p.fill(addr, 2 * MIB, 1)
    p.madvise(addr + 511 * PAGE, PAGE, "dontneed")
    p.fork()
    table = p.mm.pmds[addr >> 21]
    assert isinstance(table, PteTable)
    head = int(table.pfn[0])
    assert rmap.removals_keeping_shared(k, p.mm, head) == 510
    kept = 0
    for pfn in table.pfn[:511].tolist():
        rmap.page_remove_folio_pte(k, p.mm, pfn, head)
        if not k.frames.flags[head] & PG_mm_ids_shared:
            break
        kept += 1
    assert kept == 510


# the programs whose first bulk run is a write's copies (_large_copies) and a R/O pin's unshares
BULK_PROGRAMS = pytest.mark.parametrize("program", [THP_COW_PROGRAM, UNSHARE_PROGRAM])


@BULK_PROGRAMS
def test_a_bulk_copy_run_not_lowering_the_counters_is_caught(
    program: list[Step], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk run that gave every page the first page's decision (no COPY_STEP): the last
    page's own decision reads _large_mapcount 722, not 1022 (THP_COW_PROGRAM; UNSHARE_PROGRAM:
    313, not 512), and the run stops on it."""
    monkeypatch.setattr(range_fault, "COPY_STEP", {})
    with pytest.raises(AssertionError, match="the last copy of a bulk run decided"):
        run_both("v6.18", program, tracing=False)


@BULK_PROGRAMS
def test_a_bulk_copy_run_logging_one_count_is_caught(
    program: list[Step], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk run whose COW log records the first page's _large_mapcount for every copy (its
    last page checked right): the differential test fails on the COW log."""
    of_values = range_fault.Decisions.of_values

    def first_row(template: Any, values: Any) -> Any:
        return of_values(template, np.repeat(values[:1], len(values), axis=0))

    monkeypatch.setattr(range_fault.Decisions, "of_values", first_row)
    with pytest.raises(AssertionError, match="cow_log"):
        run_both("v6.18", program, tracing=False)


def _swap_cached_thp_written(kernel: str, range_ops: bool) -> tuple[Kernel, Process, int]:
    """A PTE-mapped THP, alone in its MM, put in the swap cache while mapped (add_to_swap,
    reclaim's first step, before an unmap that may fail) with 64 of its pages R/O FOLL_GET
    pinned, then 300 of its pages written."""
    from cowlab.kernel import Config
    from cowlab.mm.swap_state import add_to_swap

    k = Kernel(kernel, config=Config(swap_device="ssd"), selfcheck=True, range_ops=range_ops)
    p = k.spawn()
    buf = p.mmap(2 * MIB, align=2 * MIB)
    p.madvise(buf, 2 * MIB, "hugepage")
    p.fill(buf, 2 * MIB, 1)
    p.fork().exit()
    p.mprotect(buf + 2 * MIB - PAGE, PAGE, "r")  # PTE-maps the THP
    head = p.translate(buf)
    add_to_swap(k, head)
    p.get_user_pages(buf, 64 * PAGE, write=False, flavour="get")
    p.fill(buf, 300 * PAGE, 7)
    return k, p, head


@pytest.mark.parametrize("kernel", ["v4.5", "v5.19", "v6.18"])
def test_a_write_over_a_large_folio_in_the_swap_cache_goes_page_by_page(kernel: str) -> None:
    """_wp_run leaves a large folio in the swap cache to handle_mm_fault (reuse_swap_page's and
    folio_free_swap's case), and a run made only of such pages is no run (it indexed an empty
    run). By hand: the 64 GUP references keep the folio's refcount above its mappings whatever
    the swap cache's references, so every generation copies each written page; the unwritten
    page 300 still maps the THP's own page; the state is the page-by-page path's."""
    k, p, head = _swap_cached_thp_written(kernel, True)
    ref, _, _ = _swap_cached_thp_written(kernel, False)
    assert diff(snapshot(k), snapshot(ref)) == []
    start = p.mm.vmas[0].vm_start
    pages = [p.translate(start + i * PAGE) for i in range(301)]
    assert all(not head <= pfn < head + 512 for pfn in pages[:300])
    assert pages[300] == head + 300
    assert p.read(start, 300 * PAGE) == bytes([7]) * 300 * PAGE


def _thp_swapped_whole(kernel: str, range_ops: bool) -> tuple[Kernel, Process, int, int]:
    """A PMD-mapped THP (bytes 0x5a) swapped out whole to an SSD until written: 512 swap PTEs,
    the THP kept in the swap cache. Returns the kernel, process, address and head."""
    from cowlab.kernel import Config

    k = Kernel(kernel, config=Config(swap_device="ssd"), selfcheck=True, range_ops=range_ops)
    k.thp_enabled = "always"
    p = k.spawn()
    buf = p.mmap(2 * MIB, align=2 * MIB)
    p.fill(buf, 2 * MIB, 0x5A)
    head = p.translate(buf)
    assert head is not None and p.swapout(buf, 2 * MIB, until="written") == 512
    return k, p, buf, head


@pytest.mark.parametrize(("kernel", "copies"), [("v4.14", 511), ("v6.6", 511), ("v6.8", 0)])
def test_a_range_read_of_a_cached_thp_copies_as_page_by_page(kernel: str, copies: int) -> None:
    """_swapin_run leaves a THP's pages in the swap cache to do_swap_page, whose
    ksm_might_need_to_copy copies every tail before 6.8 (4.14.177 .. 6.7.3 mm/ksm.c: a tail's
    own ->index is never the linear index) and maps the head as it is; 6.8.0 returns the large
    folio as it is. By hand: 511 copies before 6.8 (pages 1..511), none from 6.8 (before 6.11
    each page is mapped alone); the range read's state is the page-by-page read's."""
    k, p, buf, head = _thp_swapped_whole(kernel, True)
    ref, rp, rbuf, _ = _thp_swapped_whole(kernel, False)
    assert p.read(buf, 2 * MIB) == bytes([0x5A]) * 2 * MIB == rp.read(rbuf, 2 * MIB)
    assert diff(snapshot(k), snapshot(ref)) == []
    assert k.vmstat["ksm_swpin_copy"] == copies
    pages = [p.translate(buf + i * PAGE) for i in range(512)]
    assert pages[0] == head
    assert sum(pfn != head + i for i, pfn in enumerate(pages)) == copies
