"""Kernel events as data: what a kernel function did or decided, as a tracepoint would record it.

A *decision* is an event with a verdict (reuse, copy, split, -EBUSY, ...): the values the rule
read, the rule in the kernel's terms, and the policy that applied it. Other events are actions
(a page mapped, a PMD split). `explain`, `diff`, `show` and the JSON report read these events;
their text is rendered from them only when shown.
"""

from __future__ import annotations

import bisect
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from struct import Struct
from typing import Any, NamedTuple, TypeVar, cast, overload

import numpy as np
import numpy.typing as npt

from cowlab.mm.decision import Reads, WpDecision, show_reads

T = TypeVar("T")


class OpRecord:
    """One entry of the operation history, formatted only when someone reads it."""

    __slots__ = ("args", "fmt")

    def __init__(self, fmt: str, *args: object) -> None:
        self.fmt = fmt
        self.args = args

    def __str__(self) -> str:
        return self.fmt.format(*(_fmt_arg(a) for a in self.args))


# A Process call's record as the history and the COW log keep it: the format, the pid, the
# arguments and the keyword arguments (None: none), made a CallRecord when read (op_record)
CallFields = tuple[str, int, tuple[object, ...], dict[str, object] | None]


class CallRecord(OpRecord):
    """A Process method's history entry: the pid and the call's arguments, shown as the call
    would be written. Made from its CallFields each time it is read, so equal by them."""

    __slots__ = ("kwargs", "pid")

    def __init__(
        self, fmt: str, pid: int, args: tuple[object, ...], kwargs: dict[str, object] | None
    ) -> None:
        self.fmt = fmt
        self.pid = pid
        self.args = args
        self.kwargs = kwargs or {}

    def __str__(self) -> str:
        shown = [_fmt_arg(a) for a in self.args]
        shown += [f"{k}={_fmt_arg(v)}" for k, v in self.kwargs.items()]
        return self.fmt.format(_fmt_arg(self.pid), ", ".join(shown))

    def _fields(self) -> tuple[object, ...]:
        return (self.fmt, self.pid, self.args, self.kwargs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CallRecord):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash((self.fmt, self.pid, self.args, tuple(self.kwargs.items())))


@overload
def op_record(entry: OpRecord | CallFields) -> OpRecord: ...
@overload
def op_record(entry: object) -> object: ...
def op_record(entry: object) -> object:
    """An operation's record from what the history or the COW log keeps of it: a call's
    fields (a tuple) made a CallRecord; an OpRecord, or "(setup)", as it is."""
    return CallRecord(*entry) if isinstance(entry, tuple) else entry


def _fmt_arg(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 4096:
        return hex(value)
    if isinstance(value, bytes | bytearray) and len(value) > 8:
        return f"<{len(value)} bytes>"
    return repr(value)


@dataclass(frozen=True, slots=True)
class Event:
    op: int  # the program operation it happened in (an index into Kernel.history)
    function: str  # the kernel function
    verdict: str  # a decision's answer; "" for an action
    addr: int | None
    pfn: int | None  # the page (or THP head) it concerns
    read: Reads  # what the rule read, in the kernel's names
    rule: str  # the condition of the rule, e.g. "page_count == 1 && page_mapcount == 1"
    policy: str  # the policy id that decided; "" for an action
    detail: str  # what was done, in a few words

    @property
    def decision(self) -> bool:
        return bool(self.verdict)

    def render(self) -> str:
        """`do_wp_page: 0x7f..000 pfn 0x401: page_count = 2, page_mapcount = 1 -> copy: ...`"""
        where = " ".join(
            part
            for part in (
                f"{self.addr:#x}" if self.addr is not None else "",
                f"pfn {self.pfn:#x}" if self.pfn is not None else "",
            )
            if part
        )
        body = show_reads(self.read)
        if self.verdict:
            body = f"{body} -> {self.verdict}" if body else self.verdict
            if self.detail:
                body += f" ({self.detail})"
        elif self.detail:
            body = f"{body}: {self.detail}" if body else self.detail
        return f"{self.function}: {where}: {body}" if where else f"{self.function}: {body}"

    def render_rule(self) -> str:
        return f"rule of {self.policy}: {self.rule}" if self.rule else ""

    def to_json(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "verdict": self.verdict or None,
            "addr": self.addr,
            "pfn": self.pfn,
            "read": dict(self.read),
            "rule": self.rule or None,
            "policy": self.policy or None,
            "detail": self.detail or None,
        }


class CowEvent(NamedTuple):
    """A write fault that copied instead of reusing: which function, which page, and why.
    A tuple: never changed once logged, and made a few times faster than a frozen dataclass
    (one per copy a fault makes)."""

    seq: int
    operation: object  # the OpRecord (or "(setup)"), formatted only when described
    function: str
    pid: int
    addr: int
    old: int | None
    new: int
    nr: int
    reason: object  # a WpDecision (its reads and rule) or a text, rendered only when read

    @property
    def why(self) -> str:
        return str(getattr(self.reason, "why", self.reason))

    def describe(self) -> str:
        what = "the zero page" if self.old is None else f"pfn {self.old:#x}"
        size = f"{self.nr * 4} KiB" if self.nr > 1 else "4 KiB"
        return (
            f"op {self.seq} ({self.operation}): {self.function} in pid {self.pid} at "
            f"{self.addr:#x} copied {what} ({size}) to pfn {self.new:#x} because {self.why}"
        )


class Indexed(Sequence[T]):
    """A sequence whose items are made when read: subclasses give __len__ and _at(i), for
    0 <= i < len."""

    @abstractmethod
    def _at(self, i: int) -> T: ...

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> list[T]: ...
    def __getitem__(self, i: int | slice) -> T | list[T]:
        if isinstance(i, slice):
            return [self._at(j) for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._at(i)


# a WpDecision's verdict and rule (all but what it read), its reads; a read's name and value
VERDICT, READ = itemgetter(0, 1, 2, 4), itemgetter(3)
NAME, VALUE = itemgetter(0), itemgetter(1)


class Decisions(Indexed[object]):
    """The decisions behind a run of copies: WpDecisions that differ only in the values their
    rule read are kept as one template and an array of values (a THP's 512 copies each read
    another _large_mapcount); anything else as a list."""

    def __init__(self, items: Sequence[object]) -> None:
        self.items: Sequence[object] = items
        self.values: npt.NDArray[np.signedinteger[Any]] | None = None
        first = items[0] if items else None
        if not isinstance(first, WpDecision) or len(items) < 2:
            return
        # map() and list comparison keep the per-decision work in C: a THP's run has 511
        if set(map(type, items)) != {WpDecision}:
            return
        decided = cast("Sequence[WpDecision]", items)
        if len(set(map(VERDICT, decided))) != 1:
            return
        names = list(map(NAME, first.read))
        pairs = list(chain.from_iterable(map(READ, decided)))
        if list(map(NAME, pairs)) != names * len(items):
            return
        values = np.array(list(map(VALUE, pairs)), dtype=np.int64)
        values = values.reshape(len(items), len(names))
        self.values = values.astype(narrowest(values))
        self.items = [first]

    @classmethod
    def of_values(cls, template: WpDecision, values: npt.NDArray[np.int64]) -> Decisions:
        """Decisions of template's verdict and rule that read these values, a row each (a run
        that knows them without making each decision)."""
        decisions = cls([template])
        decisions.values = values.astype(narrowest(values))
        return decisions

    def __len__(self) -> int:
        return len(self.items) if self.values is None else int(self.values.shape[0])

    def _at(self, i: int) -> object:
        if self.values is None:
            return self.items[i]
        template = self.items[0]
        assert isinstance(template, WpDecision)
        names = [name for name, _ in template.read]
        read = tuple(zip(names, self.values[i].tolist(), strict=True))
        return template._replace(read=read)


# the narrower integer types and their bounds (np.iinfo takes microseconds to make)
NARROWER = [
    (kind, int(np.iinfo(kind).min), int(np.iinfo(kind).max))
    for kind in (np.int8, np.int16, np.int32)
]


def narrowest(values: npt.NDArray[np.int64]) -> type[np.signedinteger[Any]]:
    """The narrowest signed integer type that holds every one of values."""
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    for kind, low, high in NARROWER:
        if low <= lo and hi <= high:
            return kind
    return np.int64


class Packed:
    """Integers as the COW log keeps them, a few bytes a copy or none: an arithmetic
    progression (a run of consecutive frames or pages, one decision for all) as its first value
    and step, anything else as offsets from the first value in the narrowest type."""

    __slots__ = ("first", "offsets", "size", "step")

    def __init__(self, values: npt.NDArray[np.int64]) -> None:
        self.size = int(values.size)
        self.first = int(values[0]) if self.size else 0
        self.step = int(values[1] - values[0]) if self.size > 1 else 0
        self.offsets: npt.NDArray[np.signedinteger[Any]] | None = None
        if self.size > 2 and (np.diff(values) != self.step).any():
            offsets = values - self.first
            self.offsets = offsets.astype(narrowest(offsets))

    def __getitem__(self, i: int) -> int:
        if self.offsets is None:
            return self.first + i * self.step
        return self.first + int(self.offsets[i])


class CowCopies(NamedTuple):
    """Many copies by one function in one operation (old -1: the zero page), packed."""

    seq: int
    operation: object
    function: str
    pid: int
    addrs: Packed
    olds: Packed
    news: Packed
    reasons: Sequence[object]  # the reason of each copy, by index into ``which``
    which: Packed

    def event(self, i: int) -> CowEvent:
        old = int(self.olds[i])
        return CowEvent(
            self.seq,
            op_record(self.operation),
            self.function,
            self.pid,
            int(self.addrs[i]),
            None if old < 0 else old,
            int(self.news[i]),
            1,
            self.reasons[int(self.which[i])],
        )


class CowSingles:
    """Copies logged one at a time (a fault each), in order, as columns: no object a copy but
    what it names (its operation's record as the history keeps it, a Process call's fields
    the collector does not track; its decision, one object for equal ones). A
    page-by-page COW write logs a copy a fault, and a CowEvent kept for each was, after the
    decisions, what the garbage collector's full passes walked most."""

    __slots__ = ("ints", "names")
    # seq, pid, addr, old (-1: the zero page), new, nr: 48 bytes a copy, packed (half the
    # time of an array's extend by a tuple; a list of ints the collector would walk)
    INTS = Struct("6q")

    def __init__(self) -> None:
        self.ints = bytearray()
        self.names: list[object] = []  # operation, function, reason: 3 a copy

    def __len__(self) -> int:
        return len(self.names) // 3

    def event(self, i: int) -> CowEvent:
        seq, pid, addr, old, new, nr = self.INTS.unpack_from(self.ints, self.INTS.size * i)
        operation, function, reason = self.names[3 * i : 3 * i + 3]
        assert isinstance(function, str)
        return CowEvent(
            seq,
            op_record(operation),
            function,
            pid,
            addr,
            None if old < 0 else old,
            new,
            nr,
            reason,
        )


class CowLog(Indexed[CowEvent]):
    """Every copy so far, in order: copies logged one at a time (CowSingles, a run of them a
    part), and runs of copies stored as arrays (a 1 GiB range write copies 262,144 pages
    without 262,144 objects)."""

    def __init__(self) -> None:
        self._parts: list[CowSingles | CowCopies] = []
        self._ends: list[int] = []  # the number of copies up to and including each part
        self._open: CowSingles | None = None  # the last part, while copies are added to it

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __deepcopy__(self, memo: dict[int, object]) -> CowLog:
        """A copy of the machine shares the parts: none is changed once another part follows
        or once it is shared (each log starts a part of its own at its next copy)."""
        copied = CowLog()
        copied._parts = list(self._parts)
        copied._ends = list(self._ends)
        self._open = None
        return copied

    def _add(self, part: CowSingles | CowCopies, nr: int) -> None:
        self._parts.append(part)
        self._ends.append((self._ends[-1] if self._ends else 0) + nr)

    def append(self, event: CowEvent) -> None:
        self.add(*event)

    def add(
        self,
        seq: int,
        operation: object,
        function: str,
        pid: int,
        addr: int,
        old: int | None,
        new: int,
        nr: int,
        reason: object,
    ) -> None:
        """append() of the CowEvent of these fields, without making it (record_cow's: a copy
        a fault), into the open CowSingles's columns."""
        singles = self._open
        if singles is None:
            singles = self._open = CowSingles()
            self._add(singles, 0)
        singles.ints += CowSingles.INTS.pack(seq, pid, addr, -1 if old is None else old, new, nr)
        singles.names.extend((operation, function, reason))
        self._ends[-1] += 1

    def extend_copies(self, copies: CowCopies) -> None:
        if copies.news.size:
            self._open = None
            self._add(copies, int(copies.news.size))

    def _at(self, i: int) -> CowEvent:
        part_no = bisect.bisect_right(self._ends, i)
        part = self._parts[part_no]
        first = self._ends[part_no - 1] if part_no else 0
        return part.event(i - first)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CowLog | list):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]
