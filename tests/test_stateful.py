"""Random operation sequences on every kernel with self-checking after each operation.

On v4.5 and v4.5+6d0a07e no counter or rmap invariant may break. On v4.5+6d0a07e-early the rmap
invariant must break, and the shortest program that breaks it is Kirill Shutemov's scenario:
a PTE-mapped THP shared by fork, each process unmapping what the other keeps, then a write.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, find, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from cowlab import InvariantViolation

from .programs import Op, World, apply, op_strategy, run, sharing_op_strategy, start

SAFE_KERNELS = ["v4.5", "v4.5+6d0a07e"]


class Machine(RuleBasedStateMachine):
    kernel_id = "v4.5"

    def __init__(self) -> None:
        super().__init__()
        self.world: World | None = None

    @initialize()
    def boot(self) -> None:
        self.world = start(self.kernel_id)

    @rule(op=op_strategy())
    def step(self, op: Op) -> None:
        assert self.world is not None
        apply(self.world, op)  # self-checking raises InvariantViolation on a broken invariant


@pytest.mark.parametrize("kernel_id", SAFE_KERNELS)
def test_no_invariant_breaks(kernel_id: str) -> None:
    machine = type(f"Machine_{kernel_id}", (Machine,), {"kernel_id": kernel_id})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=150,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def breaks_rmap(program: list[Op]) -> bool:
    try:
        run("v4.5+6d0a07e-early", program)
    except InvariantViolation as e:
        return any("rmap_walk_anon misses" in problem for problem in e.problems)
    return False


def test_early_review_version_breaks_rmap_minimal_is_kirills_scenario() -> None:
    minimal = find(
        st.lists(sharing_op_strategy(), min_size=3, max_size=8),
        breaks_rmap,
        settings=settings(max_examples=5000, deadline=None, database=None),
        random=random.Random(0),
    )
    print("minimal program breaking the rmap invariant on v4.5+6d0a07e-early:")
    for op in minimal:
        print("  ", op)
    # Kirill's shape: the THP is faulted in, fork shares it, parent and child each unmap the
    # half the other keeps (every subpage now has mapcount 1), and a write fault reuses it and
    # moves the whole THP to the writer's anon_vma.
    assert [op.name for op in minimal] == ["write", "fork", "munmap", "munmap", "write"]
    first, second, last = minimal[2], minimal[3], minimal[4]
    assert {first.start, second.start} == {0, 256} and first.who % 2 != second.who % 2
    writer_unmapped = first if first.who % 2 == last.who % 2 else second
    assert not writer_unmapped.start <= last.start < writer_unmapped.start + 256
    # The same program keeps every invariant on the released fix and on 4.5.0.
    for kernel_id in SAFE_KERNELS:
        run(kernel_id, minimal)
