"""Mutation check: each invariant, disabled on its own, must make its breaking tests fail.

For every registered mutant the script copies src/ to a scratch directory, removes that one check
there and runs the tests registered as breaking it (the test function named beside it below)
against the copy (PYTHONPATH at the scratch src). A check is removed by replacing its statement
with `pass`:

* in src/cowlab/checker.py and src/cowlab/check/properties.py, the statement right after its
  `# invariant: NAME` comment;
* in the no-leak oracle (src/cowlab/scenario/oracle.py), the innermost statement of a named
  function whose source contains a given text (the message the check reports).

A mutant its breaking tests survive is a check no test shows failing; a registered mutation that
no longer applies (marker or text gone) is an error. Either makes the script exit 1, naming them.
The unmutated copy must pass every test of tests/test_checker_breaks.py, tests/test_oracle.py and
tests/test_properties.py first, so a failing suite cannot pass for killing every mutant.

A new check in checker.py gets a marker comment, its name and breaking test in
CHECKER_INVARIANTS below and that test in tests/test_checker_breaks.py;
tests/test_mutation_check.py fails until all three exist.

    python tools/mutation_check.py               # every mutant, two at a time
    python tools/mutation_check.py --list
    python tools/mutation_check.py thp.count folio.nr_pages_mapped
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKER = "src/cowlab/checker.py"
ORACLE = "src/cowlab/scenario/oracle.py"
CHECKER_BREAKS = "tests/test_checker_breaks.py"
PROPERTY_BREAKS = "tests/test_properties.py"
ORACLE_BREAKS = "tests/test_oracle.py"
TESTS = (CHECKER_BREAKS, ORACLE_BREAKS, PROPERTY_BREAKS)
MARKER = re.compile(r"^\s*# invariant: (\S+)\s*$")

# the `# invariant: NAME` markers of checker.py, one per check, and the test of
# tests/test_checker_breaks.py that breaks it
CHECKER_INVARIANTS = {
    "counters.migration_entry": "test_migration_entry_left",
    "counters.anon_rss": "test_mm_anonpages",
    "counters.outside_vmas": "test_ptes_outside_every_vma_vma_shrunk",
    "counters.free": "test_mapped_page_marked_free",
    "counters.small_mapcount": "test_small_page_mapcount",
    "counters.small_count": "test_small_page_count",
    "thp.compound_mapcount": "test_thp_compound_mapcount",
    "thp.double_map_unmapped": "test_double_map_without_pmd_mapping",
    "thp.no_double_map": "test_double_map_in_a_kernel_without_it",
    "thp.subpage_mapcount": "test_thp_subpage_mapcount",
    "thp.count": "test_thp_count",
    "thp.pincount": "test_thp_pincount",
    "thp.tail_count": "test_thp_tail_count",
    "folio.large_mapcount": "test_folio_large_mapcount",
    "folio.nr_pages_mapped": "test_folio_nr_pages_mapped_pmd",
    "folio.mm_id_slot": "test_folio_mm_id_slot_overcount",
    "folio.maybe_shared": "test_folio_maybe_shared",
    "exclusive.anon_exclusive": "test_anon_exclusive_small_page_shared_by_fork",
    "swap.swapents": "test_mm_swapents",
    "swap.swap_map": "test_swap_map_count",
    "swap.cache_flag": "test_swap_cache_page_without_pg_swapcache",
    "swap.cache_private": "test_swap_cache_page_private",
    "swap.folio_whole": "test_thp_in_the_swap_cache_out_of_order",
    "frames.free_fields": "test_free_frame_with_a_field_set",
    "frames.content_refs": "test_content_reference_lost",
    "ksm.stable_node": "test_ksm_page_without_stable_node",
    "ksm.rmap": "test_ksm_rmap_misses_a_mapping",
    "rmap.not_anonymous": "test_rmap_mapped_but_not_anonymous",
    "rmap.anon_vma_tree": "test_rmap_vma_not_in_the_anon_vma_tree",
    "rmap.page_index": "test_rmap_wrong_page_index",
    "pin_coherence": "test_pin_coherence_breaks_on_v4_5",
}
# the `# invariant: NAME` markers of the searched properties (check/properties.py), and the
# test of tests/test_properties.py that breaks each
PROPERTIES = "src/cowlab/check/properties.py"
PROPERTY_INVARIANTS = {
    "cow_isolation": "test_cow_isolation_breaks_when_fork_shares_a_writable_pin",
    "consistency.bug": "test_consistency_breaks_on_the_early_review_version",
    "no_page_leak": "test_no_page_leak_holds_after_fork_pin_unpin_exit",
    "no_unnecessary_copy": "test_no_unnecessary_copy_pte_mapped_thp_subpage",
}


class NotApplicable(Exception):
    """A registered mutation that finds nothing to mutate."""


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    function: str | None = None  # with text: the function (Class.method) holding the statement
    text: str | None = None  # the innermost statement of function whose source contains it
    test: str = ""  # the breaking test: FILE::FUNCTION (every parameter of it)

    def apply(self, source: str) -> str:
        """The source with this check's statement replaced by `pass`."""
        tree = ast.parse(source)
        stmt = self._find_text(source, tree) if self.text else self._find_marked(source, tree)
        lines = source.splitlines(keepends=True)
        first = lines[stmt.lineno - 1]
        indent = first[: len(first) - len(first.lstrip())]
        end = stmt.end_lineno or stmt.lineno
        lines[stmt.lineno - 1 : end] = [f"{indent}pass  # mutant: {self.name}\n"]
        mutated = "".join(lines)
        compile(mutated, self.path, "exec")
        return mutated

    def _find_marked(self, source: str, tree: ast.Module) -> ast.stmt:
        line = marked_lines(source).get(self.name)
        if line is None:
            raise NotApplicable(f"{self.path} has no '# invariant: {self.name}' marker")
        starting = [s for s in ast.walk(tree) if isinstance(s, ast.stmt) and s.lineno == line + 1]
        if not starting:
            raise NotApplicable(f"marker {self.name} is not right above a statement")
        return max(starting, key=lambda s: (s.end_lineno or 0) - s.lineno)

    def _find_text(self, source: str, tree: ast.Module) -> ast.stmt:
        func = find_function(tree, self.function or "")
        if func is None:
            raise NotApplicable(f"{self.path} has no function {self.function}")
        holding = [
            s
            for s in ast.walk(func)
            if isinstance(s, ast.stmt)
            and s is not func
            and self.text in (ast.get_source_segment(source, s) or "")
        ]
        if not holding:
            raise NotApplicable(f"{self.function} has no statement containing {self.text!r}")
        return min(holding, key=lambda s: (s.end_lineno or 0) - s.lineno)


def marked_lines(source: str) -> dict[str, int]:
    """Every `# invariant: NAME` marker and its line (1-based); a name used twice is an error."""
    found: dict[str, int] = {}
    for number, line in enumerate(source.splitlines(), start=1):
        m = MARKER.match(line)
        if m:
            if m.group(1) in found:
                raise NotApplicable(f"marker {m.group(1)} appears twice")
            found[m.group(1)] = number
    return found


def find_function(tree: ast.Module, qualname: str) -> ast.FunctionDef | None:
    """A module-level function or a method, as 'name' or 'Class.name'."""
    scope: list[ast.stmt] = tree.body
    *classes, name = qualname.split(".")
    for cls in classes:
        found = [s for s in scope if isinstance(s, ast.ClassDef) and s.name == cls]
        if not found:
            return None
        scope = found[0].body
    funcs = [s for s in scope if isinstance(s, ast.FunctionDef) and s.name == name]
    return funcs[0] if funcs else None


MUTANTS = (
    *(Mutant(n, CHECKER, test=f"{CHECKER_BREAKS}::{t}") for n, t in CHECKER_INVARIANTS.items()),
    *(
        Mutant(n, PROPERTIES, test=f"{PROPERTY_BREAKS}::{t}")
        for n, t in PROPERTY_INVARIANTS.items()
    ),
    Mutant(
        "no_leak.process",
        ORACLE,
        "LogicalMemory.check",
        "sees other bytes than it wrote",
        f"{ORACLE_BREAKS}::test_a_corrupted_page_byte_is_reported",
    ),
    Mutant(
        "no_leak.pin",
        ORACLE,
        "LogicalMemory._check_pin",
        "holds other bytes than it is",
        f"{ORACLE_BREAKS}::test_a_pinned_frame_changed_behind_the_device_is_reported",
    ),
)


@dataclass
class Outcome:
    mutant: str
    verdict: str  # killed, SURVIVED, ERROR
    seconds: float
    detail: str


def scratch_copy(base: Path, name: str) -> Path:
    src = base / name / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return src


def run_tests(src: Path, tests: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(src), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", tests]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" - ")[0]
    return output.strip().splitlines()[-1] if output.strip() else "(no output)"


def run_mutant(base: Path, m: Mutant) -> Outcome:
    started = time.monotonic()
    src = scratch_copy(base, m.name)
    target = src.parent / m.path
    try:
        target.write_text(m.apply(target.read_text()))
    except (NotApplicable, SyntaxError) as e:
        return Outcome(m.name, "ERROR", time.monotonic() - started, f"does not apply: {e}")
    done = run_tests(src, m.test)
    seconds = time.monotonic() - started
    if done.returncode == 1:  # tests ran and some failed: the check is shown to matter
        return Outcome(m.name, "killed", seconds, first_failure(done.stdout))
    if done.returncode == 0:
        return Outcome(m.name, "SURVIVED", seconds, "every test passed without this check")
    return Outcome(
        m.name, "ERROR", seconds, f"pytest exit {done.returncode}: {first_failure(done.stdout)}"
    )


def baseline(base: Path, pool: ThreadPoolExecutor) -> str | None:
    """Why the unmutated copy cannot serve (None: it imports from the copy and passes every
    test of TESTS, one file a job)."""
    src = scratch_copy(base, "_baseline")
    env = dict(os.environ, PYTHONPATH=str(src), PYTHONDONTWRITEBYTECODE="1")
    probe = "import cowlab.checker, cowlab.scenario.oracle as o; print(o.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if not where.stdout.strip().startswith(str(src)):
        return f"cowlab is not imported from the scratch copy: {where.stdout or where.stderr}"
    for done in pool.map(lambda tests: run_tests(src, tests), TESTS):
        if done.returncode != 0:
            return f"the unmutated tests fail: {first_failure(done.stdout)}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="only these mutants (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="mutants run at once (default 2)")
    args = ap.parse_args(argv)
    if args.list:
        for m in MUTANTS:
            where = f"{m.path}" + (f" ({m.function})" if m.function else "")
            print(f"{m.name:28} {where}, broken by {m.test}")
        return 0
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        ap.error(f"unknown mutants: {', '.join(sorted(unknown))}")
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="cowlab-mutants-") as tmp,
        ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool,
    ):
        base = Path(tmp)
        problem = baseline(base, pool)
        if problem:
            print(f"mutation check: {problem}", file=sys.stderr)
            return 1
        outcomes = list(pool.map(lambda m: run_mutant(base, m), chosen))
    for o in outcomes:
        print(f"{o.verdict:8} {o.mutant:28} {o.seconds:5.1f} s  {o.detail}")
    bad = [o.mutant for o in outcomes if o.verdict != "killed"]
    total = time.monotonic() - started
    if bad:
        print(f"mutation check FAILED ({total:.0f} s): {', '.join(bad)}", file=sys.stderr)
        return 1
    print(f"mutation check: all {len(outcomes)} mutants killed ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
