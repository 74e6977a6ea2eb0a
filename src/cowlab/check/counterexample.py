"""A finding as a scenario file: the program's steps, the kernels it breaks, and the property
expected broken at its last step, so `cowlab run FILE` replays it (and passes while the kernel
still breaks the property the same way)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from cowlab.check.properties import PROPERTIES
from cowlab.check.search import Finding


@dataclass
class Counterexample:
    """One program that breaks one property on some kernels: what a table cell names."""

    ident: str  # e.g. pin_coherence-03: the file's stem
    prop: str
    names: tuple[str, ...]  # the letters
    steps: tuple[dict[str, object], ...]
    kernels: list[str]
    problem: str
    origin: str | None  # Finding.origin of the first finding: None for the bounded search

    @property
    def file_name(self) -> str:
        return f"{self.ident}.yaml"


def group(findings: list[Finding]) -> list[Counterexample]:
    """One counterexample per (property, program), with every kernel it was found on; the
    shortest first within each property, numbered in that order."""
    by_program: dict[tuple[str, tuple[str, ...]], Counterexample] = {}
    for f in findings:
        key = (f.prop, f.program.names)
        ce = by_program.get(key)
        if ce is None:
            by_program[key] = Counterexample(
                "", f.prop, f.program.names, f.program.steps, [f.kernel], f.problem, f.origin
            )
        elif f.kernel not in ce.kernels:
            ce.kernels.append(f.kernel)
    out = sorted(by_program.values(), key=lambda c: (c.prop, len(c.names), c.names))
    numbers: dict[str, int] = {}
    for ce in out:
        numbers[ce.prop] = numbers.get(ce.prop, 0) + 1
        ce.ident = f"{ce.prop}-{numbers[ce.prop]:02d}"
    return out


def found_by(ce: Counterexample, depth: int) -> str:
    """Which part of `cowlab check` found the program: the search to a depth, or a campaign."""
    return ce.origin or f"the search to depth {depth}"


def to_yaml(ce: Counterexample, depth: int, alphabet: str) -> str:
    steps = [dict(s) for s in ce.steps]
    steps[-1]["expect"] = {"breaks": [ce.prop]}
    doc = {
        "name": f"cowlab check: {ce.prop} ({ce.ident})",
        "description": (
            f"Found by `cowlab check` ({found_by(ce, depth)}, alphabet {alphabet}): "
            f"{'; '.join(ce.names)}. {PROPERTIES[ce.prop].doc} The first violation: "
            f"{ce.problem}. Replay: cowlab run {ce.file_name}"
        ),
        "kernels": ce.kernels,
        "config": {"thp": "madvise"},
        "processes": ["P"],
        "steps": steps,
    }
    return yaml.safe_dump(doc, sort_keys=False, width=100, default_flow_style=None)


def write_all(out: Path, examples: list[Counterexample], depth: int, alphabet: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for ce in examples:
        (out / ce.file_name).write_text(to_yaml(ce, depth, alphabet))
