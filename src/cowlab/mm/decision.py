"""The answers a kernel generation (policy) gives the kernel paths, as data: the verdict, what it
does besides, the values its rule read and the rule itself (see trace.Event)."""

from __future__ import annotations

from typing import NamedTuple

# How many decisions a rule keeps made (functools.lru_cache of its values read): equal decisions
# are then one object. A copy keeps its decision in the COW log, and a page-by-page write after
# fork copies once a fault: a WpDecision and its reads made each time were most of what the
# garbage collector's full passes walked (docs/benchmarks.md, "The per-fault path, fifth round").
DECISIONS_KEPT = 1024

Reads = tuple[tuple[str, int], ...]  # the counters and flags a rule read, by kernel name


def show_reads(read: Reads) -> str:
    return ", ".join(f"{name} = {value}" for name, value in read)


class ReuseCount(NamedTuple):
    """The mapcount reuse_swap_page() compares with 1 (None: "never reuse") and total_mapcount."""

    mapcount: int | None
    total_mapcount: int
    read: Reads
    rule: str


class ReuseDecision(NamedTuple):
    """reuse_swap_page()'s answer with the total mapcount do_wp_page may consult."""

    reuse: bool
    total_mapcount: int
    read: Reads
    rule: str


class WpDecision(NamedTuple):
    """A write (or unshare) fault's verdict: reuse or copy, what reuse also does, and why: the
    values the rule read and the rule itself, in the kernel's terms."""

    reuse: bool
    move_anon_vma: bool
    set_exclusive: bool
    read: Reads
    rule: str

    @property
    def why(self) -> str:
        reads = show_reads(self.read)
        return f"{reads}; rule: {self.rule}" if reads and self.rule else reads or self.rule


class SwapinDecision(NamedTuple):
    """do_swap_page()'s verdict: map the page writable (a write fault is then satisfied) and as
    exclusive (RMAP_EXCLUSIVE), with the values read and the rule."""

    writable: bool
    exclusive: bool
    read: Reads
    rule: str
