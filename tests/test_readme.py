"""The README stays true: its Python example runs, its commands are the ones CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_python_example_runs() -> None:
    (code,) = blocks("python")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(1, 1, 0)"


def test_exactly_two_setup_commands() -> None:
    commands = [b.strip() for b in blocks("sh")]
    assert len(commands) == 2
    assert all(c.startswith("python3 -m venv .venv && ") for c in commands)
    assert commands[0].endswith(".venv/bin/cowlab check")
    assert commands[1].endswith("-m pytest -n auto")


def shown(title: str) -> str:
    """The output block after the README's sentence that starts with `title`."""
    found = re.search(rf"{title}.*?```\n(.*?)```", README, flags=re.S)
    assert found is not None, title
    return found.group(1)


def test_main_job_output_is_a_run_of_it(tmp_path: Path) -> None:
    """The table is what `cowlab check` prints, run from the checkout as the README's command
    runs it (every kernel, the corpus and the search; exit 0), but for the seconds it took."""
    out = tmp_path / "check-out"
    cli = "import sys; from cowlab.cli import main; sys.exit(main())"
    run = subprocess.run(
        [sys.executable, "-c", cli, "check", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    seconds = re.compile(r"(counterexamples), \d+\.\d s$", flags=re.M)
    got = seconds.sub(r"\1", run.stdout.replace(f"{out}/", "check-out/"))
    assert got.strip() == seconds.sub(r"\1", shown("Output of the main job")).strip()


def test_second_example_output_matches_the_program() -> None:
    from cowlab.workloads import rdma

    text = shown("The second example")
    v45 = rdma.report(rdma.run("v4.5"))
    fixed = rdma.report(rdma.run("v4.5+6d0a07e"))
    strip_time = re.compile(r", \d+\.\d+ s\)")
    assert strip_time.sub(")", v45 + "\n\n" + fixed) == strip_time.sub(")", text.strip())
