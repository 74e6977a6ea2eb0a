"""The RDMA test of 6d0a07edd17c: corrupt on v4.5, clean with the fix (small sizes here).

Expected outcomes, derived from the rules (kernel-semantics §D, docs/verification-4.5.md):
- fork+exit, mprotect RO/RW and clear_refs leave the pinned THPs mapped read-only; the CPU's
  first write then copies on v4.5 (PMD: page_count != 1; PTE: a THP subpage is never reused)
  and reuses on v4.5+6d0a07e (page_trans_huge_mapcount == 1).
- NUMA: a pinned PMD-mapped THP cannot migrate and comes back read-only (corrupt on v4.5); a
  PTE-mapped THP keeps its write bit through the hinting fault, so nothing is copied.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cowlab.cli import main
from cowlab.workloads import rdma

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "rdma_mr.py"
CASES = [(t, m) for t in rdma.TRIGGERS for m in rdma.MAPPINGS]


def corrupts_on_v45(trigger: str, mapping: str) -> bool:
    return not (trigger == "numa" and mapping == "pte")


@pytest.mark.parametrize(("trigger", "mapping"), CASES)
def test_v45_compare_error_within_a_few_iterations(trigger: str, mapping: str) -> None:
    r = rdma.run("v4.5", size=4 << 20, iterations=50, trigger=trigger, mapping=mapping)
    if not corrupts_on_v45(trigger, mapping):
        assert r.error is None
        return
    assert r.error is not None and r.error.iteration < 4
    assert r.error.got == 0  # "the second page reads back as zero"
    text = "\n".join(r.error.explanation)
    culprit = "do_huge_pmd_wp_page" if mapping == "pmd" else "wp_page_copy"
    assert culprit in text
    never = "rule: reuse_swap_page(): never for a THP subpage"
    why = "page_count(head) = 513" if mapping == "pmd" else never
    assert why in text


@pytest.mark.parametrize(("trigger", "mapping"), CASES)
@pytest.mark.parametrize("kernel_id", ["v4.5+6d0a07e", "v4.5+6d0a07e-early"])
def test_fix_runs_clean(kernel_id: str, trigger: str, mapping: str) -> None:
    r = rdma.run(kernel_id, size=4 << 20, iterations=1000, trigger=trigger, mapping=mapping)
    assert r.error is None and r.iterations == 1000


@pytest.mark.parametrize("mapping", rdma.MAPPINGS)
def test_selfcheck_holds_through_the_program(mapping: str) -> None:
    for kernel_id in ("v4.5", "v4.5+6d0a07e"):
        rdma.run(kernel_id, size=4 << 20, iterations=20, mapping=mapping, selfcheck=True)


@pytest.mark.parametrize(("kernel_id", "status"), [("v4.5", 1), ("v4.5+6d0a07e", 0)])
def test_example_program_exit_status(kernel_id: str, status: int) -> None:
    cmd = [sys.executable, str(EXAMPLE), "--kernel", kernel_id, "--size", "4M"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == status, done.stdout + done.stderr
    assert ("COMPARE ERROR" in done.stdout) == bool(status)


def test_full_size_program() -> None:
    """The program at its default size: 2 x 512 MiB, 1,000 iterations."""
    bad = rdma.run("v4.5")
    assert bad.error is not None and bad.error.iteration == 0
    good = rdma.run("v4.5+6d0a07e")
    assert good.error is None and good.iterations == 1000


def test_bad_size_is_one_clear_line() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--size", "3M"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "rdma_mr.py: --size must be a positive multiple of 2M"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kernel", "4.4"], "cowlab rdma: argument --kernel: unknown kernel '4.4': expected"),
        (["--trigger", "swap"], "cowlab rdma: argument --trigger: invalid choice: 'swap'"),
        (["--bogus"], "cowlab rdma: unrecognized arguments: --bogus"),
    ],
)
def test_bad_command_line_is_one_clear_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["rdma", *args])
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(message), err
