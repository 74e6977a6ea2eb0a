"""Range operations in scenarios: `write` with `size` + `fill` (Process.fill, a memset) and
`touch` (Process.touch). The expectations below are derived by hand from what the program does;
the fill form must leave the same state, and meet the same expectations, as the write of the
same bytes as `data`."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cowlab.scenario import ScenarioError, parse_scenario
from cowlab.scenario.budget import step_cost
from cowlab.scenario.model import Address
from cowlab.scenario.oracle import LogicalMemory
from cowlab.scenario.runner import Runner, RunResult, run_scenario
from tests.schema import validate

ROOT = Path(__file__).resolve().parent.parent
PAGE = 4096
KERNELS = ["v4.5", "v5.8", "v6.18"]


def prelude(size: str) -> str:
    """A program on small pages (thp: never) whose first step maps `size` bytes at buf."""
    return (
        "name: t\nconfig: {thp: never}\nprocesses: [P]\nsteps:\n"
        f"  - {{op: mmap, proc: P, name: buf, size: {size}}}\n"
    )


HEAD = prelude("16K")


def where(text: str, token: str) -> str:
    """line:col (1-based) of token in the last step of text."""
    before = text[: text.index(token, len(HEAD))]
    return f"{before.count(chr(10)) + 1}:{len(before) - before.rfind(chr(10))}"


# --- the format ------------------------------------------------------------------------------


BOTH = "expected data or size and fill in a write, not both (got data and "


@pytest.mark.parametrize(
    ("op", "keys", "token", "message"),
    [
        ("write", "data: x, size: 4K", "size", BOTH + "size)"),
        ("write", "fill: 1, data: x", "fill", BOTH + "fill)"),
        ("write", "size: 4K", "size", "expected fill with size in a write"),
        ("write", "fill: 0x61", "fill", "expected size with fill in a write"),
        ("write", "label: w", "{op: write", "expected write to have data, or size and fill"),
        ("write", "size: 4K, fill: 256", "256", "expected a byte 0..255"),
        ("write", "size: 4K, fill: true", "true", "expected a byte 0..255"),
        ("write", "size: 0, fill: 1", "0,", "expected a size greater than zero"),
        ("touch", "label: t", "{op: touch", "expected touch to have a size key"),
        ("touch", "size: 4K, write: 1", "1}", "expected true or false"),
        ("touch", "size: 4K, fill: 1", "fill", "expected a key of touch"),
    ],
)
def test_a_wrong_combination_is_one_located_line(
    op: str, keys: str, token: str, message: str
) -> None:
    text = HEAD + f"  - {{op: {op}, proc: P, at: buf, {keys}}}\n"
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "t.yaml")
    line = str(info.value)
    assert line.startswith(f"t.yaml:{where(text, token)}: {message}"), line
    assert "\n" not in line


def test_a_fill_is_kept_as_size_and_byte() -> None:
    """1 GiB of 0x61 is two numbers in the parsed step, not a gigabyte of bytes."""
    text = prelude("1G") + "  - {op: write, proc: P, at: buf+1, size: 1G, fill: 0x61}\n"
    step = parse_scenario(text, "t.yaml").steps[1]
    assert step.args == {"proc": "P", "at": Address("buf", 1), "size": 1 << 30, "fill": 0x61}
    assert step.describe() == "write P buf+0x1 size=1G fill=0x61"


def test_the_schema_takes_data_or_size_and_fill_and_touch() -> None:
    def valid(step: dict[str, Any]) -> bool:
        doc = {"name": "t", "steps": [step]}
        try:
            validate(doc)
        except jsonschema.ValidationError:
            return False
        return True

    write = {"op": "write", "proc": "P", "at": "buf"}
    assert valid(write | {"data": "x"})
    assert valid(write | {"size": "1G", "fill": 97})
    assert not valid(write)
    assert not valid(write | {"data": "x", "size": "4K"})
    assert not valid(write | {"data": "x", "size": "4K", "fill": 1})
    assert not valid(write | {"fill": 1})
    assert not valid(write | {"size": "4K", "fill": 256})
    touch = {"op": "touch", "proc": "P", "at": "buf", "size": "2M"}
    assert valid(touch) and valid(touch | {"write": True})
    assert not valid({"op": "touch", "proc": "P", "at": "buf"})


# --- a fill is the write of the same bytes ---------------------------------------------------

# Small pages (thp: never). Pages 0-3 of buf: the first store fills buf+4K-3 .. buf+12K+3, so
# page 0 ends in 3 bytes of 0x61, pages 1 and 2 are all 0x61, page 3 starts with 3 of them; a
# first store to untouched memory neither copies nor reuses a page. After fork each page is
# mapped twice; C's store into page 2 copies it (every kernel: mapped twice, page_count 2).
FILL_PROGRAM = (
    prelude("16K")
    + """\
  - {op: write, proc: P, at: buf+4K-3, STORE_A, expect: {fault: none, mapped: pte, mapcount: 1}}
  - {op: fork, proc: P, child: C}
  - {op: check, proc: C, at: buf+8K, expect: {mapcount: 2}}
  - {op: write, proc: C, at: buf+8K, STORE_C, expect: {fault: copy, mapcount: 1}}
  - {op: read, proc: C, at: buf+8K-1, size: 3, expect: {data: {hex: "616363"}, holds: no_leak}}
  - {op: read, proc: P, at: buf+8K-1, size: 3, expect: {data: {hex: "616161"}, holds: no_leak}}
  - {op: read, proc: P, at: buf+12K, size: 4, expect: {data: {hex: "61616100"}}}
  - {op: read, proc: P, at: buf+4K-4, size: 2, expect: {data: {hex: "0061"}}}
"""
)
FILLS = {"STORE_A": (8198, 0x61), "STORE_C": (PAGE, 0x63)}


def program(form: str) -> str:
    """The program with its stores as `size` + `fill`, or as `data` of the same bytes."""
    text = FILL_PROGRAM
    for key, (size, byte) in FILLS.items():
        store = (
            f"size: {size}, fill: {byte}"
            if form == "fill"
            else f"data: {{hex: '{f'{byte:02x}' * size}'}}"
        )
        text = text.replace(key, store)
    return text


def final_state(runner: Runner) -> dict[str, Any]:
    """What each process maps and sees at every page, the kernel's event counts, the oracle."""
    pages = {
        (name, va): (proc.translate(va), proc.peek(va))
        for name, proc in runner.procs.items()
        if proc.alive
        for vma in proc.mm.vmas
        for va in range(vma.vm_start, vma.vm_end, PAGE)
    }
    owed = {
        (p, va): bytes(page)
        for p, table in runner.logical.pages.items()
        for va, page in table.items()
    }
    return {"pages": pages, "vmstat": dict(runner.k.vmstat), "owed": owed}


def outcomes(result: RunResult) -> list[Any]:
    return [
        (
            s.outcome,
            s.happened,
            s.observed_pfn,
            [(r.what, r.expected, r.actual, r.passed) for r in s.results],
        )
        for s in result.steps
    ]


def run(text: str, kernel: str) -> tuple[RunResult, Runner]:
    scenario = parse_scenario(text, "t.yaml")
    runner = Runner(scenario, kernel)
    return RunResult(scenario, kernel, [runner.run_step(s) for s in scenario.steps]), runner


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_fill_is_the_write_of_its_bytes(kernel: str) -> None:
    filled, fill_runner = run(program("fill"), kernel)
    written, data_runner = run(program("data"), kernel)
    assert filled.passed, [
        (s.step.index, r) for s in filled.steps for r in s.results if not r.passed
    ]
    assert outcomes(filled) == outcomes(written)
    assert final_state(fill_runner) == final_state(data_runner)


# A pin on buf's second page sees P's stores. The fill from buf+4K runs into unmapped memory
# after one page: SIGSEGV kills P after the first 4096 bytes were stored, so the device still
# sees that page all 0x62 (P's exit leaves the pinned page to the pin).
SEGV = (
    prelude("8K")
    + """\
  - {op: pin, proc: P, name: mr, at: buf+4K, size: 4K}
  - {op: write, proc: P, at: buf+4K, STORE, expect: {outcome: SIGSEGV}}
  - {op: dma_read, pin: mr, size: 4K, expect: {data: {fill: 0x62, size: 4K}, holds: no_leak}}
"""
)


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_fill_into_unmapped_memory_stores_what_came_before(kernel: str) -> None:
    filled, _ = run(SEGV.replace("STORE", "size: 8K, fill: 0x62"), kernel)
    written, _ = run(SEGV.replace("STORE", "data: {fill: 0x62, size: 8K}"), kernel)
    assert filled.passed and outcomes(filled) == outcomes(written)
    assert "P killed by SIGSEGV" in filled.steps[2].happened[-1]


# --- touch -----------------------------------------------------------------------------------

# A read touch of untouched memory maps the zero page without a copy; a write touch replaces it
# by a new page (a copy of the zero page). After fork a read touch changes nothing (the page is
# mapped twice) and a write touch copies it; the bytes stay what they were throughout.
TOUCH = (
    prelude("8K")
    + """\
  - {op: touch, proc: P, at: buf, size: 8K, expect: {mapped: zero, fault: none}}
  - op: touch
    proc: P
    at: buf
    size: 8K
    write: true
    expect: {mapped: pte, fault: copy, mapcount: 1}
  - {op: write, proc: P, at: buf+4K-1, data: ab}
  - {op: fork, proc: P, child: C}
  - {op: touch, proc: P, at: buf, size: 8K, expect: {fault: none, mapcount: 2}}
  - {op: touch, proc: P, at: buf+4K-1, size: 2, write: true, expect: {fault: copy, mapcount: 1}}
  - {op: check, proc: P, at: buf+4K, expect: {mapcount: 1}}
  - {op: read, proc: P, at: buf+4K-1, size: 2, expect: {data: ab, holds: no_leak}}
  - {op: read, proc: C, at: buf+4K-1, size: 2, expect: {data: ab, holds: no_leak}}
"""
)


@pytest.mark.parametrize("kernel", KERNELS)
def test_touch_faults_for_reading_or_writing_and_keeps_the_bytes(kernel: str) -> None:
    result = run_scenario(parse_scenario(TOUCH, "t.yaml"), kernel)
    failed = [(s.step.index, r) for s in result.steps for r in s.results if not r.passed]
    assert not failed


def test_a_touch_outside_the_mapping_is_sigsegv() -> None:
    text = HEAD + "  - {op: touch, proc: P, at: buf+12K, size: 8K, expect: {outcome: SIGSEGV}}\n"
    result = run_scenario(parse_scenario(text, "t.yaml"), "v6.18")
    assert result.passed and result.steps[-1].outcome == "SIGSEGV"


# --- the oracle and the budget ---------------------------------------------------------------


def test_the_oracle_keeps_a_fill_as_one_shared_page() -> None:
    """buf+10 .. buf+3*4K+10: page 0 is 10 zeros then 0x61, pages 1 and 2 are whole (one
    object between them), page 3 is 10 bytes of 0x61 then zeros."""
    lm = LogicalMemory()
    base = 0x7F0000000000
    lm.fill("P", base + 10, 3 * PAGE, 0x61)
    assert lm.owed("P", base) == bytes(10) + b"a" * (PAGE - 10)
    assert lm.owed("P", base + PAGE) == b"a" * PAGE
    assert lm.owed("P", base + PAGE) is lm.owed("P", base + 2 * PAGE)
    assert lm.owed("P", base + 3 * PAGE) == b"a" * 10 + bytes(PAGE - 10)
    assert lm.owed("P", base + 4 * PAGE) == bytes(PAGE)


def test_a_gigabyte_fill_costs_the_oracle_no_gigabyte() -> None:
    """262,144 page entries that share one 4 KiB page: some megabytes of dictionary."""
    lm = LogicalMemory()
    tracemalloc.start()
    lm.fill("P", 0x7F0000000000, 1 << 30, 0x61)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(lm.pages["P"]) == (1 << 30) // PAGE
    assert len({id(page) for page in lm.pages["P"].values()}) == 1
    assert peak < 64 << 20


def test_a_device_write_reaches_every_pin_of_the_page() -> None:
    """Two pins of one process page: what the device writes through one, the process sees, and
    so does the other pin (it mirrors that page)."""

    class FakePin:
        def __init__(self, addr: int) -> None:
            self.addr, self.pages, self.flavour = addr, [1], "longterm"

    lm = LogicalMemory()
    base = 0x7F0000000000
    lm.fill("P", base, PAGE, 0x61)
    first, second = FakePin(base), FakePin(base)
    lm.pin("a", "P", first)  # type: ignore[arg-type]
    lm.pin("b", "P", second)  # type: ignore[arg-type]
    lm.dma_write("a", first, 1, b"NIC")  # type: ignore[arg-type]
    expected = b"aNIC" + b"a" * (PAGE - 4)
    assert lm.owed("P", base) == lm.owed_pin("a", 0) == lm.owed_pin("b", 0) == expected


def test_the_budget_charges_a_fill_no_copy_of_its_bytes() -> None:
    """The data form is charged its bytes twice (contents and the oracle's copy): over 2 GiB for
    1 GiB; a fill only its pages' mappings and one oracle entry per page."""
    text = prelude("1G") + "  - {op: write, proc: P, at: buf, size: 1G, fill: 1}\n"
    scenario = parse_scenario(text, "t.yaml")
    runner = Runner(scenario, "v6.18")
    runner.run_step(scenario.steps[0])
    fill_step = scenario.steps[1]
    assert step_cost(runner, fill_step) < 1 << 30
    data_step = type(fill_step)(
        2,
        "write",
        {"proc": "P", "at": Address("buf", 0), "data": b"\1" * (1 << 30)},
        [],
        None,
        fill_step.loc,
    )
    assert step_cost(runner, data_step) > 2 << 30
