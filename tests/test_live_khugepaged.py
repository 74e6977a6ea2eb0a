"""When a forced live khugepaged scan can stand for the model's one pass (cowlab.live.khugepaged):
the live kernel makes one or more passes, over the mms in the order they registered, so the
model's pass must end the same in every order and a second pass must change nothing."""

from __future__ import annotations

from cowlab.live.khugepaged import pass_reason
from cowlab.scenario import parse_scenario
from cowlab.scenario.runner import Runner

# 6.18 hpage_collapse_scan_pmd(): a small page mapped by two processes counts against
# max_ptes_shared (256), a none PTE against max_ptes_none (511); one young PTE is enough.
# P's 512 pages are each shared with one of two children (C1 dropped the upper half, C2 the
# lower; fork leaves the children's PTEs old, so each reads one page): P has 512 shared and is
# refused, each child has 256 shared and 256 none and collapses (copying; its old pages lose a
# mapping). After both, P's pages are P's alone: a second pass collapses P, and an order with P
# last collapses everything in one pass.
SHARED_HALVES = """
name: shared halves
processes: [P]
steps:
  - {op: mmap, proc: P, name: buf, size: 2M, align: 2M}
  - {op: write, proc: P, at: buf, data: {fill: 7, size: 2M}}
  - {op: madvise, proc: P, at: buf, size: 2M, advice: hugepage}
  - {op: fork, proc: P, child: C1}
  - {op: fork, proc: P, child: C2}
  - {op: madvise, proc: C1, at: buf+1M, size: 1M, advice: dontneed}
  - {op: madvise, proc: C2, at: buf, size: 1M, advice: dontneed}
  - {op: read, proc: C1, at: buf, size: 1}
  - {op: read, proc: C2, at: buf+1M, size: 1}
"""


def model_after(text: str, upto: int | None = None) -> Runner:
    scenario = parse_scenario(text)
    runner = Runner(scenario, "v6.18")
    for step in scenario.steps[:upto]:
        runner.run_step(step)
    return runner


def test_order_dependent_passes_are_refused() -> None:
    runner = model_after(SHARED_HALVES)
    reason = pass_reason(runner.k)
    assert reason is not None and "order of the processes" in reason
    assert runner.k.khugepaged() == 2  # the model's own pass: C1 and C2, not P


def test_independent_processes_pass() -> None:
    """Before any fork: one process, 512 exclusive small pages: one pass collapses the block
    and a second finds it PMD-mapped."""
    runner = model_after(SHARED_HALVES, upto=3)
    assert pass_reason(runner.k) is None
    assert runner.k.khugepaged() == 1
