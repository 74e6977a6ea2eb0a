"""The cow.c matrix: scenarios generated from the derived verdicts, run on every kernel."""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from cowlab.scenario import Scenario, load_scenario
from tests.schema import validate

ROOT = Path(__file__).resolve().parent.parent


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cow_matrix", ROOT / "tools" / "cow_matrix.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


tool = load_tool()


@pytest.fixture(scope="module")
def results() -> dict[tuple[str, str, str], tuple[str, bool]]:
    out: dict[tuple[str, str, str], tuple[str, bool]] = tool.run_matrix()
    return out


def test_scenarios_are_generated_from_the_derivation(tmp_path: Path) -> None:
    tool.generate(tmp_path)
    fresh = {p.name: p.read_text() for p in tmp_path.glob("*.yaml")}
    kept = {p.name: p.read_text() for p in (ROOT / "examples" / "cow").glob("*.yaml")}
    assert fresh == kept and len(kept) == 14 * 10 + 4  # 14 cases x 10 backings, 4 collapse cases


def test_scenarios_follow_the_schema() -> None:
    for path in (ROOT / "examples" / "cow").glob("*.yaml"):
        validate(yaml.safe_load(path.read_text()))


def without_locs(scenario: Scenario) -> tuple:
    """A scenario's every field but the file positions of its steps and expectations."""
    steps = [
        (s.index, s.op, s.args, s.label, [(e.what, e.value, e.per_kernel) for e in s.expect])
        for s in scenario.steps
    ]
    head = (scenario.path, scenario.name, scenario.description, scenario.kernels)
    return (*head, scenario.config, scenario.processes, steps)


def test_a_row_built_as_data_is_its_file() -> None:
    """The matrix runs each row as its data (tool.load), not its file parsed: the same scenario
    but for the positions."""
    for name in tool.scenario_names():
        parsed = load_scenario(ROOT / "examples" / "cow" / f"{name}.yaml")
        assert without_locs(tool.load(name)) == without_locs(parsed), name


# what a column's run need not import (PyYAML, hashlib, numpy.ma: 10-25, 7, 7 ms), and what
# would bring each in: parsing YAML, hashing a page for KSM, np.unique's masked-array test
UNNEEDED = ("yaml", "hashlib", "numpy.ma")


def test_a_column_imports_no_yaml_hashlib_or_numpy_ma() -> None:
    """`matrix --kernel` builds its rows as data, hashes no page and groups reclaim's walks
    without np.unique: run in a fresh interpreter, it imports none of UNNEEDED."""
    code = (
        "import runpy, sys\n"
        "sys.argv = ['cow_matrix.py', 'matrix', '--kernel', 'v6.18']\n"
        "try:\n"
        f"    runpy.run_path({str(ROOT / 'tools' / 'cow_matrix.py')!r}, run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print([m for m in {UNNEEDED!r} if m in sys.modules], file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip() == "[]", done.stderr


def test_model_agrees_with_every_derived_cell(results: dict) -> None:
    assert len(results) == (14 * 10 + 4) * len(tool.KERNELS)
    wrong = [cell for cell, (_verdict, ok) in results.items() if not ok]
    assert wrong == []


DOC = ROOT / "docs" / "cow-matrix-derivation.md"

# The cells the generator once forced to PASS with hand-fitted overrides (review finding H2).
PARTIAL_MREMAP_CELLS = [
    (case, kernel)
    for case in (
        "vmsplice_child",
        "vmsplice_child_mprotect",
        "vmsplice_before_fork",
        "vmsplice_after_fork",
    )
    for kernel in ("v4.5+6d0a07e", "v4.5+6d0a07e-early", "v4.8")
] + [("vmsplice_before_fork", "v5.8")]


def flip_verdicts(text: str) -> str:
    """The doc with every P and F of the verdict table swapped, and every S PAGEOUT made P."""
    head, rest = text.split("<!-- verdicts:start -->")
    table, tail = rest.split("<!-- verdicts:end -->")
    swap = {"P": "F", "F": "P", tool.PAGEOUT_SKIP: "P"}

    def flip(cell: str) -> str:
        key = next((k for k in swap if cell.startswith(k)), None)
        return cell if key is None else swap[key] + cell[len(key) :]

    rows = [
        "| " + " | ".join(flip(c) for c in cells) + " |" if line.startswith("| #") else line
        for line in table.split("\n")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    ]
    return head + "<!-- verdicts:start -->" + "\n".join(rows) + "<!-- verdicts:end -->" + tail


def test_expectations_come_only_from_the_doc_table(tmp_path: Path) -> None:
    for name in ("OVERRIDES", "VERDICTS", "CLASS_INDEX"):
        assert not hasattr(tool, name)
    flipped = tmp_path / "flipped.md"
    flipped.write_text(flip_verdicts(DOC.read_text()))
    real, other = tool.load_derivation(), tool.load_derivation(flipped)
    for case in tool.CASE_TITLES:
        for backing in tool.BACKINGS:
            for kernel in tool.KERNELS:
                verdict = tool.expected(case, backing, kernel)
                assert verdict == real.cell(case, backing, kernel).verdict
                assert verdict != other.cell(case, backing, kernel).verdict


def test_the_once_overridden_cells_are_derived_in_the_doc() -> None:
    derivation = tool.load_derivation()
    text = DOC.read_text()
    assert derivation.classes["partial_mremap"] != derivation.classes["pte_thp"]
    for case, kernel in PARTIAL_MREMAP_CELLS:
        cell = derivation.cell(case, "partial_mremap", kernel)
        assert cell.verdict == "P" and cell.notes, (case, kernel)
        for note in cell.notes:
            section = text.split(f"\n### Note {note} ")[1].split("\n#")[0]
            for word in ("**P** on", "fork", "do_wp_page", "mapcount", "PASS"):
                assert word in section, (note, word)
            assert any(release in section for release in ("4.6.2", "4.14.177", "5.8.1")), note
    # the fully PTE-mapped THP fails in the same cells: the class is what differs
    for case, kernel in PARTIAL_MREMAP_CELLS:
        assert tool.expected(case, "pte_thp", kernel) == "F"


def test_a_kernel_without_a_column_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(tool.DerivationError, match=r"no column for kernel\(s\) v9\.9"):
        tool.load_derivation(kernels=[*tool.KERNELS, "v9.9"])
    text = DOC.read_text().replace(" | v6.18 |", " | v6.18x |", 1)
    changed = tmp_path / "renamed.md"
    changed.write_text(text)
    with pytest.raises(tool.DerivationError, match=r"v6\.18"):
        tool.load_derivation(changed)


def test_every_policy_has_a_derivation_source() -> None:
    text = DOC.read_text()
    section = text.split("## 3. Where each column is derived")[1].split("###")[0]
    for kernel in tool.KERNELS:
        assert f"| `{kernel}` |" in section


def test_docs_matrix_is_the_run(results: dict) -> None:
    doc = (ROOT / "docs" / "kernels.md").read_text()
    table = doc.split("<!-- matrix:start -->\n")[1].split("<!-- matrix:end -->")[0]
    assert table == tool.write_doc(results)


@pytest.mark.parametrize("kernel", ["v4.5", "v6.18"])
def test_a_column_run_alone_is_the_matrixs(results: dict, kernel: str) -> None:
    """`--kernel`: each file run once on one kernel (SharedRuns alone: no policy read recorded,
    nothing shared) gives the cells the matrix's shared runs give."""
    column = tool.run_column(kernel)
    assert column == {cell: v for cell, v in results.items() if cell[2] == kernel}


def verdict(results: dict, case: str, backing: str, kernel: str) -> str:
    return str(results[(case, backing, kernel)][0])


@pytest.mark.parametrize("case", ["iouring_ro", "ro_pin_previously_shared", "ro_pin_exclusive"])
@pytest.mark.parametrize("backing", ["thp", "pte_thp", "single_pte"])
def test_seed_flips_pinned_thp_rows(results: dict, case: str, backing: str) -> None:
    assert verdict(results, case, backing, "v4.5") == "F"
    assert verdict(results, case, backing, "v4.5+6d0a07e") == "P"


def test_cve_2020_29374(results: dict) -> None:
    for backing in ("base", "thp", "pte_thp"):
        assert verdict(results, "vmsplice_child", backing, "v4.5+6d0a07e") == "F"
        assert verdict(results, "vmsplice_child", backing, "v4.8") == "F"  # 4.8 .. 5.0
        assert verdict(results, "vmsplice_child", backing, "v5.8") == "P"
    assert verdict(results, "vmsplice_child", "thp", "v5.9") == "F"  # PMD still by mapcount
    assert verdict(results, "vmsplice_child", "thp", "v5.18") == "P"


def test_page_count_regression_for_write_protected_pins(results: dict) -> None:
    for kernel in ("v5.9", "v5.18"):
        assert verdict(results, "iouring_ro", "base", kernel) == "F"
        assert verdict(results, "ro_pin_exclusive", "pte_thp", kernel) == "F"
    assert verdict(results, "iouring_ro", "base", "v4.8") == "P"


@pytest.mark.parametrize("kernel", ["v5.19", "v6.15", "v6.18"])
def test_anon_exclusive_kernels_pass_everything(results: dict, kernel: str) -> None:
    failed = [k for k, (v, _ok) in results.items() if k[2] == kernel and v == "F"]
    assert failed == []


@pytest.mark.parametrize("kernel", ["v4.5", "v5.9", "v5.19"])
def test_no_madv_collapse_before_6_1_is_a_skip(results: dict, kernel: str) -> None:
    for case in tool.COLLAPSE_TITLES:
        assert verdict(results, case, "collapse", kernel) == "S EINVAL"


def test_fully_shared_collapse_needs_no_writable_pte_on_6_18(results: dict) -> None:
    assert verdict(results, "collapse_after_fork", "collapse", "v6.15") == "S EINVAL"
    assert verdict(results, "collapse_after_fork", "collapse", "v6.18") == "P"


def test_swap_in_by_mapcount_leaks_through_vmsplice(results: dict) -> None:
    """5.9-5.17's do_swap_page still reused by mapcount (c145e0b47c77 fixed it in 5.18)."""
    for backing in ("swap_base", "swap_thp"):
        assert verdict(results, "vmsplice_child", backing, "v5.9") == "F"
        assert verdict(results, "vmsplice_child", backing, "v5.18") == "P"
    assert verdict(results, "vmsplice_child", "base", "v5.9") == "P"


def test_a_pageout_skip_belongs_to_the_verdict_table_only(tmp_path: Path) -> None:
    text = DOC.read_text()
    errno = tmp_path / "errno.md"
    errno.write_text(text.replace("S PAGEOUT [SW14]", "S EINVAL [SW14]", 1))
    with pytest.raises(tool.DerivationError, match="is not P, F or S PAGEOUT"):
        tool.load_derivation(errno)
    head, collapse = text.split("<!-- collapse:start -->")
    pageout = tmp_path / "pageout.md"
    pageout.write_text(
        head + "<!-- collapse:start -->" + collapse.replace("S EINVAL [CO0]", "S PAGEOUT", 1)
    )
    with pytest.raises(tool.DerivationError, match=r"is not P, F or S <errno>"):
        tool.load_derivation(pageout)


def swap_pte_thp_column(kernel: str) -> dict[str, tuple[str, bool]]:
    cells = tool.run_column(kernel)
    return {case: cells[(case, "swap_pte_thp", kernel)] for case in tool.CASE_TITLES}


@pytest.mark.parametrize(("kernel", "skips"), [("v6.2", False), ("v6.3", True), ("v6.5", False)])
def test_a_pte_mapped_thp_is_not_paged_out_on_6_3(kernel: str, skips: bool) -> None:
    """6.3.8 madvise_cold_or_pageout_pte_range: folio_mapcount 512 != 1 stops the walk at the
    first PTE, so cow.c's range_is_swapped fails and every case SKIPs; 6.2.1 (page_mapcount of
    the page, 1) and 6.5.0 (the first page's, 1) split the THP and page it out (Note SW14)."""
    for case, (verdict, ok) in swap_pte_thp_column(kernel).items():
        assert (verdict == tool.PAGEOUT_SKIP) == skips and ok, (case, verdict)


def test_a_skip_the_doc_does_not_derive_is_a_disagreement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the v6.3 swapped-pte cells made P in the doc, the model's SKIP no longer agrees."""
    flipped = tmp_path / "flipped.md"
    flipped.write_text(flip_verdicts(DOC.read_text()))
    monkeypatch.setattr(tool, "derivation", functools.partial(tool.load_derivation, flipped))
    assert not any(ok for _verdict, ok in swap_pte_thp_column("v6.3").values())
