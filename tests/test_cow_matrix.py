"""The cow.c matrix: scenarios generated from the derived verdicts, run on every kernel."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cow_matrix", ROOT / "tools" / "cow_matrix.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
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
    assert fresh == kept and len(kept) == 14 * 6


def test_scenarios_follow_the_schema() -> None:
    schema = json.loads((ROOT / "docs" / "scenario.schema.json").read_text())
    for path in (ROOT / "examples" / "cow").glob("*.yaml"):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_model_agrees_with_every_derived_cell(results: dict) -> None:
    wrong = [cell for cell, (_verdict, ok) in results.items() if not ok]
    assert wrong == []


def test_docs_matrix_is_the_run(results: dict) -> None:
    doc = (ROOT / "docs" / "kernels.md").read_text()
    table = doc.split("<!-- matrix:start -->\n")[1].split("<!-- matrix:end -->")[0]
    assert table == tool.write_doc(results)


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
        assert verdict(results, "vmsplice_child", backing, "v4.14") == "F"
        assert verdict(results, "vmsplice_child", backing, "v5.8") == "P"
    assert verdict(results, "vmsplice_child", "thp", "v5.9") == "F"  # PMD still by mapcount
    assert verdict(results, "vmsplice_child", "thp", "v5.18") == "P"


def test_page_count_regression_for_write_protected_pins(results: dict) -> None:
    for kernel in ("v5.9", "v5.18"):
        assert verdict(results, "iouring_ro", "base", kernel) == "F"
        assert verdict(results, "ro_pin_exclusive", "pte_thp", kernel) == "F"
    assert verdict(results, "iouring_ro", "base", "v4.14") == "P"


@pytest.mark.parametrize("kernel", ["v5.19", "v6.15", "v6.18"])
def test_anon_exclusive_kernels_pass_everything(results: dict, kernel: str) -> None:
    failed = [k for k, (v, _ok) in results.items() if k[2] == kernel and v == "F"]
    assert failed == []
