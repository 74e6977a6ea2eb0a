"""Fuzzing the scenario format: 10,000 generated documents, mutated examples and random YAML.

A malformed one gets one FILE:LINE:COL line, never a traceback; a valid one is run (on the first
kernel it names) and must run every step to a reported result. In CI's fixed draw (the `ci`
Hypothesis profile) 7,571 of the 10,000 are distinct malformed documents and 845 distinct valid
ones run (the rest repeat); the test asserts at least 7,000 distinct malformed ones and prints
both counts with -s."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cowlab.cli import main
from cowlab.scenario import ScenarioError, parse_scenario
from cowlab.scenario.runner import run_scenario

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p.read_text() for p in sorted((ROOT / "examples").glob("*.yaml"))]
LINE = re.compile(r"^fuzz\.yaml:\d+:\d+: \S.*$")
TOKENS = [
    "op: wrte",
    "size: 2Q",
    "size: -1",
    "at: buf+3",
    "at: nowhere",
    "proc: Z",
    "kernels: [v9.9]",
    "advice: sideways",
    "prot: rwq",
    "{hex: zz}",
    "data: 12",
    "expect: 5",
    "fault: maybe",
    "same_page: pin:none",
    "- ",
    ":",
    "{",
    "}",
    "[",
    "]",
    "\n",
    "  ",
    "\t",
    "'",
    '"',
    "&a",
    "*a",
    "!!python/object:os.system",
    "null",
    "~",
    "0x",
    "4K",
    "v4.5:",
    "default:",
    "outcome: EWHAT",
]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SOURCES))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = min(len(text), i + draw(st.integers(0, 12)))
        kind = draw(st.sampled_from(["delete", "insert", "replace"]))
        if kind == "delete":
            text = text[:i] + text[j:]
        else:
            piece = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=6)))
            text = text[:i] + piece + (text[j:] if kind == "replace" else text[i:])
    return text


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5000),
    st.text(max_size=8),
    st.sampled_from(["mmap", "write", "P", "buf", "2M", "pin:mr", "v4.5", "copy", "ok"]),
)
structures = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "steps",
                    "op",
                    "proc",
                    "at",
                    "size",
                    "expect",
                    "kernels",
                    "config",
                    "data",
                    "pin",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=12,
)
documents = st.one_of(mutated(), structures.map(lambda d: yaml.safe_dump(d)))


def check_document(text: str) -> str:
    """'malformed' (one located line) or 'valid' (and it ran to the end)."""
    try:
        scenario = parse_scenario(text, "fuzz.yaml")
    except ScenarioError as e:
        assert LINE.match(str(e)), str(e)
        return "malformed"
    assert scenario.steps and scenario.kernels
    result = run_scenario(scenario, scenario.kernels[0])
    assert len(result.steps) == len(scenario.steps)
    for sr in result.steps:  # every step reports how it ended, and is judged at least on that
        assert sr.outcome and (sr.results or sr.outcome == "not run")
    assert result.passed == all(sr.passed for sr in result.steps)
    return "valid"


def test_ten_thousand_documents() -> None:
    seen: dict[str, set[str]] = {"malformed": set(), "valid": set()}

    @settings(max_examples=10_000)
    @given(documents)
    def one(text: str) -> None:
        seen[check_document(text)].add(text)

    one()
    print(f"distinct: {len(seen['malformed'])} malformed, {len(seen['valid'])} valid and run")
    assert len(seen["malformed"]) >= 7_000
    assert seen["valid"]  # the generator still reaches documents that run


@settings(max_examples=150)
@given(mutated())
def test_cli_never_tracebacks(text: str) -> None:
    """Through the command line: exit 2 with one located line, or a run (exit 0 or 1)."""
    import contextlib
    import io
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.yaml"
        path.write_text(text)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["run", str(path), "--json", "--kernel", "v4.5"])
    if status == 2:
        line = err.getvalue().strip()
        assert "\n" not in line and line.startswith(str(path) + ":"), line
    else:
        assert status in (0, 1) and err.getvalue() == ""


@pytest.mark.parametrize("source", SOURCES[:1])
def test_a_still_valid_mutation_runs(source: str) -> None:
    scenario = parse_scenario(source.replace("hello", "howdy"), "fuzz.yaml")
    assert run_scenario(scenario, "v4.5").passed
