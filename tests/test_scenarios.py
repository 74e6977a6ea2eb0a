"""Scenario files: the examples pass, the schema agrees with the loader, bad input gets one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from jsonschema.validators import validator_for

from cowlab import checker
from cowlab.cli import main
from cowlab.scenario import ScenarioError, load_scenario, parse_scenario, yaml_text
from cowlab.scenario.loader import EXPECT, OPS
from cowlab.scenario.located import LList, LMap
from cowlab.scenario.oracle import LogicalMemory
from cowlab.scenario.report import shown_happened
from cowlab.scenario.runner import Runner, run_scenario
from tests.schema import SCHEMA, validate

ROOT = Path(__file__).resolve().parent.parent
# every example but the cow.c matrix's 144 (tests/test_cow_matrix.py runs those on every kernel for
# their verdicts, unjudged; `cowlab check`'s corpus judges their expectations)
EXAMPLES = sorted(p for p in (ROOT / "examples").rglob("*.yaml") if p.parent.name != "cow")
ERROR_LINE = re.compile(r"^\S+:\d+:\d+: \S.*$")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_passes_on_every_kernel_it_names(path: Path) -> None:
    scenario = load_scenario(path)
    for kernel_id in scenario.kernels:
        result = run_scenario(scenario, kernel_id)
        failed = [(s.step.index, r) for s in result.steps for r in s.results if not r.passed]
        assert not failed, f"{kernel_id}: {failed}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_schema(path: Path) -> None:
    validate(yaml.safe_load(path.read_text()))


def test_the_schema_is_a_valid_schema() -> None:
    """Against the metaschema its $schema names (what jsonschema.validate checks first)."""
    assert validator_for(SCHEMA).META_SCHEMA["$id"] == SCHEMA["$schema"]
    validator_for(SCHEMA).check_schema(SCHEMA)


def test_schema_and_loader_know_the_same_ops_and_keys() -> None:
    variants = SCHEMA["properties"]["steps"]["items"]["oneOf"]
    schema_ops = {v["properties"]["op"]["const"]: v for v in variants}
    assert set(schema_ops) == set(OPS)
    for op, spec in OPS.items():
        props = set(schema_ops[op]["properties"]) - {"op", "label", "note", "expect"}
        assert props == {k.rstrip("?") for k in spec}, op
        required = set(schema_ops[op]["required"]) - {"op"}
        assert required == {k for k in spec if not k.endswith("?")}, op
    assert set(SCHEMA["$defs"]["expect"]["properties"]) == set(EXPECT)


def test_docs_name_every_op_and_expectation() -> None:
    doc = (ROOT / "docs" / "scenarios.md").read_text()
    for word in list(OPS) + list(EXPECT):
        assert f"`{word}`" in doc, word


GOOD = """\
name: t
processes: [P]
steps:
  - {op: mmap, proc: P, name: buf, size: 8K}
  - {op: write, proc: P, at: buf, data: "x"}
"""


def where(text: str, token: str) -> str:
    """line:col (1-based) of the first occurrence of token in text."""
    before = text[: text.index(token)]
    return f"{before.count(chr(10)) + 1}:{len(before) - before.rfind(chr(10))}"


@pytest.mark.parametrize(
    ("text", "token", "message"),
    [
        (GOOD.replace("op: write", "op: wrte"), "wrte", "expected an op among"),
        (GOOD.replace("size: 8K", "size: 8Q"), "8Q", "expected a size like"),
        (GOOD + "  - {op: munmap, proc: P, at: buf+100, size: 4K}\n", "buf+100", "page-aligned"),
        (
            GOOD.replace("processes: [P]", "kernels: [v9.9]\nprocesses: [P]"),
            "v9.9",
            "unknown kernel",
        ),
        (GOOD + "  - {op: unpin, pin: mr}\n", "mr}", "expected a pin taken"),
        (
            GOOD + "  - {op: exit, proc: P}\n  - {op: read, proc: P, at: buf, size: 1}\n",
            "P, at: buf, size: 1",
            "has exited",
        ),
        (GOOD + "  - {op: pin, proc: P, name: mr, at: buf, size: 0}\n", "0}", "greater than zero"),
        (GOOD + "  - {op: fork, proc: P, child: P}\n", "P}", "already used"),
        (GOOD + "  - {op: read, proc: P, at: nowhere, size: 1}\n", "nowhere", "region"),
        (
            GOOD + "  - {op: read, proc: P, at: buf, size: 1, expect: {fault: maybe}}\n",
            "maybe",
            "copy",
        ),
        ("name: t\nsteps:\n  - {op: write, proc: Q, at: 0x1000, data: x}\n", "Q,", "process"),
        (
            GOOD.replace("processes: [P]", "config: {swap_device: nvme}\nprocesses: [P]"),
            "nvme",
            "expected one of file, hdd, ssd, zram, got 'nvme'",
        ),
        (
            GOOD.replace("processes: [P]", "config: {soft_dirty: built}\nprocesses: [P]"),
            "built}",
            "expected true or false, got 'built'",
        ),
    ],
)
def test_bad_input_is_one_located_line(text: str, token: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "t.yaml")
    line = str(info.value)
    assert line.startswith(f"t.yaml:{where(text, token)}: "), line
    assert message in line and "\n" not in line


def test_yaml_syntax_and_shape_errors() -> None:
    for text, expected in [
        ("name: t\nsteps: [\n", "t.yaml:3:1: invalid YAML"),
        ("- 1\n- 2\n", "t.yaml:1:1: expected a scenario"),
        ("name: t\nname: u\nsteps: []\n", "t.yaml:2:1: key 'name' appears twice"),
        ("name: t\nsteps: [" + "1" * 5000 + "]\n", "t.yaml:2:9: invalid value: Exceeds the limit"),
    ]:
        with pytest.raises(ScenarioError) as info:
            parse_scenario(text, "t.yaml")
        assert str(info.value).startswith(expected), str(info.value)


def test_unaligned_write_is_fine() -> None:
    parse_scenario(GOOD.replace("at: buf,", "at: buf+3,"), "t.yaml")


def test_cli_bad_file_exit_2_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("size: 8K", "size: lots"))
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert ERROR_LINE.match(err) and err.startswith(f"{bad}:4:")


def test_cli_unknown_kernel_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(EXAMPLES[0]), "--kernel", "v9.9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown kernel 'v9.9'" in err


def test_segfault_is_an_outcome_not_an_error(tmp_path: Path) -> None:
    text = GOOD + "  - {op: write, proc: P, at: buf+8K, data: y, expect: {outcome: SIGSEGV}}\n"
    scenario = parse_scenario(text, "t.yaml")
    result = run_scenario(scenario, "v4.5")
    assert result.passed and result.steps[-1].outcome == "SIGSEGV"
    unexpected = parse_scenario(GOOD + "  - {op: read, proc: P, at: buf+8K, size: 1}\n", "t.yaml")
    run = run_scenario(unexpected, "v4.5")
    assert not run.passed and run.steps[-1].outcome == "SIGSEGV"


@pytest.mark.parametrize("kernel_id", ["v4.5", "v5.8", "v6.18"])
@pytest.mark.parametrize("data", ["{fill: 0x61, size: 12K}", '"%s"' % ("a" * 12288)])
def test_a_write_killed_mid_way_stores_the_bytes_before_the_fault(
    kernel_id: str, data: str
) -> None:
    """A pinned 12 KiB buffer, its third page made read-only, written with 12 KiB of 'a' from
    byte 100 (data: {fill} or the same bytes as a string): the store faults at buf+8K, so the
    process dies with bytes 100..8191 written and the third page untouched; the pin (the
    device's) keeps them. Had the oracle taken the whole write or none of it, the pin's pages
    would be owed other bytes than the frames hold: pin_coherence and no_leak would break."""
    text = f"""name: t
kernels: [{kernel_id}]
processes: [P]
steps:
  - {{op: mmap, proc: P, name: buf, size: 12K}}
  - {{op: pin, proc: P, name: mr, at: buf, size: 12K}}
  - {{op: mprotect, proc: P, at: buf+8K, size: 4K, prot: r}}
  - op: write
    proc: P
    at: buf+100
    data: {data}
    expect: {{outcome: SIGSEGV, holds: [pin_coherence, no_leak]}}
  - {{op: dma_read, pin: mr, offset: 96, size: 8, expect: {{data: {{hex: "0000000061616161"}}}}}}
  - {{op: dma_read, pin: mr, offset: 8188, size: 8, expect: {{data: {{hex: "6161616100000000"}}}}}}
"""
    result = run_scenario(parse_scenario(text, "t.yaml"), kernel_id)
    failed = [(s.step.index, r) for s in result.steps for r in s.results if not r.passed]
    assert not failed and result.steps[3].outcome == "SIGSEGV"


def test_json_output_is_documented_shape(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "examples" / "rdma_pmd.yaml"
    assert main(["run", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == 1 and doc["passed"] is True
    run = doc["runs"][0]
    assert {"file", "name", "kernel", "passed", "steps"} <= set(run)
    step = run["steps"][6]
    assert step["op"] == "write" and step["outcome"] == "ok"
    fault = next(e for e in step["expectations"] if e["what"] == "fault")
    assert fault == {
        "what": "fault",
        "expected": "copy",
        "actual": "copy",
        "passed": True,
        "line": 32,
        "column": 14,
        "implicit": False,
    }


def located_tree(value: object) -> object:
    """A loaded document with every position in it, for comparing two loads."""
    if isinstance(value, LMap):
        return (
            value.loc,
            [(k, value.key_locs[k], value.val_locs[k], located_tree(v)) for k, v in value.items()],
        )
    if isinstance(value, LList):
        return (value.loc, value.item_locs, [located_tree(v) for v in value])
    return (type(value).__name__, value)


def typed(value: object) -> object:
    """A loaded document without positions, each scalar as its type and repr (NaN included)."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, repr(value))


# the scalars whose value is not their text: numbers in every base and form, YAML 1.1 booleans
# and nulls, explicit tags, timestamps, base 60; and text that only looks like them
TRICKY_SCALARS = """\
values: [5.10, 0x10, 0o17, 017, 0b101, 1_000, +12, -0, 1e3, 1.0e+3, .inf, -.Inf, .NaN, 12:30:00,
  yes, no, On, off, True, FALSE, y, ~, null, Null, '', '~', "5.10", '0x10', !!str 5, !!int "7",
  !!float '2', 2001-12-14, 2001-12-14t21:59:43.10-05:00, !!binary aGVsbG8=, plain text]
nested: {a: [1, 'b', {c: .5}], d: ''}
"""


def test_a_located_load_has_safe_loads_values() -> None:
    """Every scalar load_located builds is the value yaml.safe_load builds, of the same type:
    the tricky scalars, and every example file (whose keys are all text, as load_located keeps
    them)."""
    texts = [TRICKY_SCALARS] + [p.read_text() for p in sorted((ROOT / "examples").rglob("*.yaml"))]
    for text in texts:
        assert typed(yaml_text.load_located(text)) == typed(yaml.safe_load(text))


@pytest.mark.skipif(yaml_text.FAST_LOADER is None, reason="PyYAML without libyaml")
def test_libyaml_and_python_load_every_example_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    paths = sorted((ROOT / "examples").rglob("*.yaml"))
    fast = [located_tree(yaml_text.load_located(p.read_text())) for p in paths]
    monkeypatch.setattr(yaml_text, "FAST_LOADER", None)
    assert fast == [located_tree(yaml_text.load_located(p.read_text())) for p in paths]


def test_errors_are_the_python_loaders_with_libyaml_too() -> None:
    """Text libyaml refuses is loaded again by the Python loader, whose message is quoted; a
    character the Python reader refuses never reaches libyaml."""
    for text, expected in [
        ("name: t\nsteps: [\n", "t.yaml:3:1: invalid YAML: expected the node content"),
        ("name: t\x07\nsteps: []\n", "t.yaml:1:8: invalid YAML: character 7 is not allowed"),
    ]:
        with pytest.raises(ScenarioError) as info:
            parse_scenario(text, "t.yaml")
        assert str(info.value).startswith(expected), str(info.value)


def test_a_long_what_happened_cell_shows_its_ends() -> None:
    """Ten lines: the first three, how many are left out (five), the last two; six or fewer
    lines are shown whole."""
    lines = [f"line {i}" for i in range(10)]
    assert shown_happened(lines).split("\n") == [
        "line 0",
        "line 1",
        "line 2",
        "... 5 more lines (cowlab run --json has them all)",
        "line 8",
        "line 9",
    ]
    assert shown_happened(lines[:6]) == "\n".join(lines[:6])
    assert shown_happened([]) == "-"


def test_what_happened_has_a_line_per_copy_then_the_outcome() -> None:
    """4.5 copies a page of P's that fork shared (page_mapcount 2): P's write from buf+1 over
    9K faults at buf+1, then at buf+4K, copying C's two pages, then at buf+8K, where nothing is
    mapped: SIGSEGV kills P. The copies' lines come first (written when read), then the
    outcome and the kill, however the lines are indexed."""
    text = """\
name: t
kernels: [v4.5]
processes: [P]
steps:
  - {op: mmap, proc: P, name: buf, size: 8K}
  - {op: write, proc: P, at: buf, data: {fill: 1, size: 8K}}
  - {op: fork, proc: P, child: C}
  - {op: write, proc: P, at: buf+1, data: {fill: 2, size: 9K}, expect: {outcome: SIGSEGV}}
"""
    scenario = parse_scenario(text, "t.yaml")
    runner = Runner(scenario, "v4.5")
    happened = [runner.run_step(step) for step in scenario.steps][3].happened
    buf, c = runner.regions["buf"], runner.procs["C"]
    copied = [
        f"wp_page_copy: P {addr:#x} copied pfn {c.translate(page):#x} -> pfn "
        for addr, page in ((buf + 1, buf), (buf + 4096, buf + 4096))
    ]
    tail = ["outcome SIGSEGV", f"P killed by SIGSEGV (write at {buf + 8192:#x})"]
    assert len(happened) == 4 and happened[2:] == happened[-2:] == tail
    assert [happened[i][: len(line)] for i, line in enumerate(copied)] == copied
    assert happened == list(happened) == happened[0:4] and happened[-4] == happened[0]
    with pytest.raises(IndexError):
        happened[4]


def test_an_observing_step_reuses_the_properties_found_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """mmap, write, then two checks: the counters are recounted after mmap and write only;
    no_leak, first asked for by the first check, is computed there and reused by the second."""
    counted: list[int] = []
    leaks: list[int] = []
    count, leak = checker.check_counters, LogicalMemory.check
    monkeypatch.setattr(checker, "check_counters", lambda k: counted.append(1) or count(k))
    monkeypatch.setattr(LogicalMemory, "check", lambda lm, r: leaks.append(1) or leak(lm, r))
    check = "  - {op: check, proc: P, at: buf, expect: {holds: no_leak}}\n"
    result = run_scenario(parse_scenario(GOOD + check + check, "t.yaml"), "v6.18")
    assert result.passed and len(counted) == 2 and len(leaks) == 1
