"""The COW log (mm/trace.py CowLog): copies logged one at a time are kept as columns
(CowSingles), runs of copies as arrays (CowCopies); read back, each is the CowEvent logged."""

from __future__ import annotations

import copy
import gc

import numpy as np

from cowlab import Kernel
from cowlab.mm.trace import CowCopies, CowEvent, CowLog, Packed

OP = "pid 1: write(0x1000, b'a')"


def event(seq: int, addr: int, old: int | None, new: int, nr: int = 1) -> CowEvent:
    return CowEvent(seq, OP, "wp_page_copy", 1, addr, old, new, nr, "a reason")


def run(seq: int, addrs: list[int], olds: list[int], news: list[int]) -> CowCopies:
    """A range path's copies (old -1: the zero page), all for one reason."""
    packed = [Packed(np.array(v, dtype=np.int64)) for v in (addrs, olds, news)]
    which = Packed(np.zeros(len(news), dtype=np.int64))
    return CowCopies(seq, OP, "wp_page_copy", 1, *packed, ["a reason"], which)


def test_singles_and_runs_read_back_in_order() -> None:
    """Two single copies (one of the zero page, one of a 2 MiB THP: nr 512), a run of two,
    then one more single: five events, each as logged."""
    log = CowLog()
    log.append(event(1, 0x1000, None, 600))
    log.append(event(2, 0x200000, 1024, 1536, nr=512))
    log.extend_copies(run(3, [0x3000, 0x4000], [700, -1], [701, 702]))
    log.append(event(4, 0x5000, 703, 704))
    want = [
        event(1, 0x1000, None, 600),
        event(2, 0x200000, 1024, 1536, nr=512),
        event(3, 0x3000, 700, 701),
        event(3, 0x4000, None, 702),
        event(4, 0x5000, 703, 704),
    ]
    assert len(log) == 5
    assert list(log) == want
    assert log[-1] == want[-1] and log[1:3] == want[1:3]


def test_a_copy_of_the_log_logs_on_its_own() -> None:
    """After deepcopy each log's next copy is its own; the copies before stay in both."""
    log = CowLog()
    log.append(event(1, 0x1000, 600, 601))
    copied = copy.deepcopy(log)
    log.append(event(2, 0x2000, 602, 603))
    copied.append(event(2, 0x3000, 604, 605))
    assert list(log) == [event(1, 0x1000, 600, 601), event(2, 0x2000, 602, 603)]
    assert list(copied) == [event(1, 0x1000, 600, 601), event(2, 0x3000, 604, 605)]


def test_a_page_by_page_cow_write_keeps_no_event_object() -> None:
    """16 page-by-page writes after fork copy 16 pages: the log holds their fields, not 16
    CowEvents (made only when read)."""
    k = Kernel("v6.18", range_ops=False)
    k.thp_enabled = "never"
    p = k.spawn()
    buf = p.mmap(16 * 4096)
    p.fill(buf, 16 * 4096, 1)
    p.fork()
    before = sum(isinstance(o, CowEvent) for o in gc.get_objects())
    for i in range(16):
        p.write(buf + i * 4096, b"b")
    assert sum(isinstance(o, CowEvent) for o in gc.get_objects()) == before
    assert [e.addr for e in k.cow_log] == [buf + i * 4096 for i in range(16)]


def test_a_call_is_kept_as_its_fields_and_read_as_its_record() -> None:
    """A Process call's history entry is its fields, which the collector stops tracking (no
    object a copy for its full passes to walk); the COW log and the history read it as the
    CallRecord, the call as it was written, equal each time it is read."""
    k = Kernel("v6.18", range_ops=False)
    k.thp_enabled = "never"
    p = k.spawn()
    buf = p.mmap(4 * 4096)
    p.touch(buf, 4 * 4096, write=True)  # a keyword argument, shown as given
    p.fork()
    p.write(buf + 4096, b"b")
    gc.collect()  # untracks the calls' argument tuples,
    gc.collect()  # then the entries holding them; a dict is always tracked (touch's keywords)
    calls = [entry for entry in k.history.recent if isinstance(entry, tuple)]
    assert [gc.is_tracked(entry) for entry in calls] == [False, True, False]  # mmap, touch, write
    (copied,) = list(k.cow_log)
    assert str(copied.operation) == f"pid 1: write({buf + 4096:#x}, b'b')"
    assert copied.operation == k.history[-1] == k.cow_log[0].operation
    assert copied.operation != k.history[-2]
    assert (
        str(k.history[-3]) == f"pid 1: touch({buf:#x}, 0x4000, write=True)"
    )  # ints >= 4096 in hex
    assert list(k.cow_log) == list(k.cow_log)  # two reads, equal events
