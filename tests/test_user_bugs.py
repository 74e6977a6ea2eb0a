"""Regression tests for the bugs a new user found (issue 8), derived from the kernel's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from cowlab import Kernel, Segfault, SyscallError
from cowlab.mm.mm import page_mapcount
from cowlab.scenario import parse_scenario
from cowlab.scenario.runner import run_scenario

# --- 2. a fatal signal kills the process (force_sig_fault -> do_exit -> exit_mmap) ------------


@pytest.mark.parametrize("kernel", ["v4.5", "v6.18"])
def test_sigsegv_kills_the_process_and_unmaps_its_pages(kernel: str) -> None:
    k = Kernel(kernel, selfcheck=True)
    p = k.spawn()
    shared = p.mmap(4096)
    private = p.mmap(4096)
    p.write(shared, b"s")
    p.write(private, b"p")
    p.madvise(private, 4096, "dontfork")
    c = p.fork()
    pfn = p.translate(shared)
    assert pfn is not None and page_mapcount(k.frames, pfn) == 2
    with pytest.raises(Segfault) as e:
        c.write(private, b"x")  # MADV_DONTFORK: the child has no VMA there
    assert e.value.killed
    assert not c.alive and c.pid not in k.processes
    assert page_mapcount(k.frames, pfn) == 1  # the child's exit_mmap unmapped its PTE
    with pytest.raises(SyscallError, match="ESRCH"):
        c.read(shared, 1)


def test_bytes_before_the_faulting_page_are_written() -> None:
    k = Kernel("v6.18", selfcheck=True)
    p = k.spawn()
    buf = p.mmap(8192)
    p.mprotect(buf + 4096, 4096, "r")
    pin = p.get_user_pages(buf, 4096)
    with pytest.raises(Segfault) as e:
        p.write(buf + 4090, b"0123456789")
    assert e.value.done == 6
    assert pin.dma_read(4090, 6) == b"012345"


SEGV = """\
name: a child writes where it inherited nothing
kernels: [v4.5, v6.18]
processes: [P]
steps:
  - {op: mmap, proc: P, name: a, size: 4K}
  - {op: write, proc: P, at: a, data: "x"}
  - {op: madvise, proc: P, at: a, size: 4K, advice: dontfork}
  - {op: pin, proc: P, name: dev, at: a, size: 4K}
  - {op: fork, proc: P, child: C}
  - {op: write, proc: C, at: a, data: "y", expect: {outcome: SIGSEGV}}
  - {op: read, proc: C, at: a, size: 1, expect: {outcome: ESRCH}}
  - {op: read, proc: P, at: a, size: 1, expect: {data: "x", mapcount: 1, holds: [no_leak]}}
"""


@pytest.mark.parametrize("kernel", ["v4.5", "v6.18"])
def test_scenario_reports_the_kill(kernel: str) -> None:
    result = run_scenario(parse_scenario(SEGV, "segv.yaml"), kernel)
    assert result.passed, [r for s in result.steps for r in s.results if not r.passed]
    assert "C killed by SIGSEGV (write at" in " ".join(result.steps[5].happened)


# --- 1. --kernel K runs the scenario on K; zero cases is never a pass --------------------------


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from cowlab.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_run_on_a_kernel_the_file_does_not_list(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    # examples/seed_quickstart.yaml lists v4.5 and v4.5+6d0a07e; asked for 6.6 it runs there,
    # its expectations keyed from 4.6 and 5.9 on speak for 6.6 (fault none, pin_coherence)
    code, out, _ = _cli(
        ["run", "examples/seed_quickstart.yaml", "--kernel", "6.6", "--json"], capsys
    )
    doc = json.loads(out)
    (run,) = doc["runs"]
    assert (run["kernel"], run["release"], run["policy"]) == ("6.6", "6.6", "v6.6")
    assert not run["listed"] and run["not_applicable"] == 0
    judged = [e["what"] for s in run["steps"] for e in s["expectations"] if not e["implicit"]]
    assert judged == ["mapped", "fault", "holds"]
    assert doc["passed"] and code == 0


def test_run_reports_the_unlisted_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(["run", "examples/seed_quickstart.yaml", "--kernel", "v5.9"], capsys)
    assert code == 0 and "v5.9 is not in the scenario's kernels" in out
    # same_page is keyed null from 5.9 on: no expectation there
    code, out, _ = _cli(["run", "examples/ksm/merge_then_write.yaml", "--kernel", "6.1"], capsys)
    assert code == 0 and "on 6.1 (6.1.0, policy v6.1)" in out
    assert "1 expectations keyed by other kernels not applicable" in out


def test_unknown_kernel_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(["run", "examples/seed_quickstart.yaml", "--kernel", "v9.9"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "unknown kernel 'v9.9'" in err and "4.5 to 6.18" in err


@pytest.mark.parametrize("command", ["explain", "show"])
def test_explain_and_show_take_an_unlisted_kernel(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli([command, "examples/seed_quickstart.yaml", "--kernel", "v6.18"], capsys)
    assert code == 0 and err == "" and out


# --- 7. --width is documented ----------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "explain", "diff"])
def test_width_is_in_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _cli([command, "--help"], capsys)
    assert "--width" in capsys.readouterr().out


# --- 6. a step the machine cannot model is refused before it runs -----------------------------

HUGE = """\
name: 64 GiB of THP, pinned whole
kernels: [v6.18]
processes: [P]
steps:
  - {op: mmap, proc: P, name: r, size: 64G, align: 2M}
  - {op: madvise, proc: P, at: r, size: 64G, advice: hugepage}
  - {op: write, proc: P, at: r+64G-4K, data: "end"}
  - {op: pin, proc: P, name: all, at: r, size: 64G}
"""


def test_a_step_too_big_for_the_limit_is_one_located_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text(HUGE)
    code, out, err = _cli(["run", str(path), "--max-memory", "2G"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    # the pin (line 8) may fault in 16M pages of THP: 16M * (256 + 64) bytes = 5 GiB > 2 GiB
    assert err.startswith(f"{path}:8:")
    assert "step 4 (pin P r name=all size=64G) may need 5.0 GiB more memory" in err


def test_the_estimate_charges_what_the_step_may_fault_in() -> None:
    from cowlab.scenario import budget
    from cowlab.scenario.runner import Runner

    sc = parse_scenario(HUGE, "huge.yaml")
    runner = Runner(sc, "v6.18")
    for step in sc.steps[:3]:
        runner.run_step(step)
    pin = sc.steps[3]
    assert budget.step_cost(runner, pin) == (64 << 30) // 4096 * (256 + 64) + 64
    assert budget.step_cost(runner, sc.steps[0]) == 0  # mmap faults nothing in


def test_the_default_limit_lets_the_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(["run", "examples/rdma_pmd.yaml"], capsys)
    assert code == 0 and err == ""


# --- Ctrl-C: one line, not Python's KeyboardInterrupt traceback ---------------------------------


def _interrupted(*_args: object, **_kw: object) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("patched", "argv"),
    [
        ("cowlab.cli.run_scenario", ["run", "examples/cow_after_fork.yaml"]),
        ("cowlab.workloads.rdma.run", ["rdma", "--kernel", "v4.5"]),
    ],
)
def test_ctrl_c_is_one_line_and_exit_130(
    patched: str,
    argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A KeyboardInterrupt reaching the command line (what Ctrl-C raises in Python) ends the
    command with 128 + SIGINT, as a shell reports a process killed by it, and one line."""
    from cowlab.cli import main

    monkeypatch.setattr(patched, _interrupted)
    assert main(argv) == 130
    assert capsys.readouterr().err == "cowlab: interrupted\n"
