"""Random operation sequences on every kernel with self-checking after each operation.

On v4.5 and v4.5+6d0a07e no counter or rmap invariant may break. On v4.5+6d0a07e-early the rmap
invariant must break, and the shortest program that breaks it (exhaustive search, shortest first:
random search finds it only by luck) is Kirill Shutemov's scenario: a THP shared by fork, each
process unmapping what the other keeps, then a write.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from cowlab import InvariantViolation
from cowlab.policy import POLICIES

from .programs import Op, World, apply, op_strategy, run, shortest_violation, start

SAFE_KERNELS = [k for k in POLICIES if k != "v4.5+6d0a07e-early"]
CI_PROGRAMS = 150


def stateful_examples() -> int:
    """150 fixed programs per kernel in CI; the explore profile's own count otherwise."""
    chosen = settings()
    return CI_PROGRAMS if chosen.derandomize else chosen.max_examples


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
        # the profile decides how many programs and whether they are drawn anew (conftest.py)
        settings=settings(stateful_step_count=25, max_examples=stateful_examples()),
    )


def breaks_rmap(program: list[Op]) -> bool:
    try:
        run("v4.5+6d0a07e-early", program)
    except InvariantViolation as e:
        return any("rmap_walk_anon misses" in problem for problem in e.problems)
    return False


SHARING = (
    [Op("write", who, start, 1, 1) for who in (0, 1) for start in (0, 256)]
    + [Op("fork", 0)]
    + [Op("munmap", who, start, 256) for who in (0, 1) for start in (0, 256)]
)


def test_early_review_version_breaks_rmap_minimal_is_kirills_scenario() -> None:
    """Every program over the alphabet of sharing one THP (write a half, fork, unmap a half),
    shortest first: the first that breaks the rmap invariant is Kirill Shutemov's."""
    minimal = shortest_violation(breaks_rmap, SHARING, max_len=4, prefix=[Op("write", 0, 0, 1, 1)])
    assert minimal is not None
    print("minimal program breaking the rmap invariant on v4.5+6d0a07e-early:")
    for op in minimal:
        print("  ", op)
    # The THP is faulted in, fork shares it, parent and child each unmap the half the other
    # keeps (every subpage now has mapcount 1), and a write fault reuses the THP and moves it
    # to the writer's anon_vma, which the other process's VMA is not linked into.
    assert [op.name for op in minimal] == ["write", "fork", "munmap", "munmap", "write"]
    first, second, last = minimal[2], minimal[3], minimal[4]
    assert {first.start, second.start} == {0, 256} and first.who != second.who
    writer_unmapped = first if first.who == last.who else second
    assert not writer_unmapped.start <= last.start < writer_unmapped.start + 256
    # The same program keeps every invariant on the released fix and on 4.5.0.
    for kernel_id in SAFE_KERNELS:
        run(kernel_id, minimal)
