"""budget.resident(): the resident set of the process asking, read through a descriptor of
/proc/self/statm kept open. Derivation: touching N bytes of fresh anonymous memory adds about N
to the resident set (statm's second field, in pages); a forked child has its own statm, so
memory only the child touches shows in the child's figure and not in the parent's."""

from __future__ import annotations

import os

from cowlab.scenario import budget

MIB = 1 << 20


def _touch(n: int) -> bytearray:
    block = bytearray(n)
    block[::4096] = b"\1" * len(block[::4096])
    return block


def test_resident_follows_the_memory_touched() -> None:
    before = budget.resident()
    block = _touch(64 * MIB)
    assert budget.resident() - before >= 60 * MIB  # 64 MiB, less what was resident already
    del block


def test_a_forked_child_reads_its_own_resident_set() -> None:
    budget.resident()  # the parent's descriptor, opened before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its growth shows in its own figure
        try:
            before = budget.resident()
            block = _touch(64 * MIB)
            os.write(write, b"1" if budget.resident() - before >= 60 * MIB else b"0")
            del block
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"
