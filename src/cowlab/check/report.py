"""`cowlab check`'s outputs: the table (kernels down, properties across), JSON, JUnit XML and
kselftest-style TAP."""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

from rich.console import Console
from rich.progress import Progress

from cowlab.check.counterexample import Counterexample, found_by
from cowlab.check.properties import PROPERTIES

if TYPE_CHECKING:
    from cowlab.check.cli import CheckResult

JSON_VERSION = 1


def cells(
    result: CheckResult, examples: list[Counterexample]
) -> dict[tuple[str, str], list[Counterexample]]:
    """(kernel, property) -> the counterexamples found there, shortest first."""
    out: dict[tuple[str, str], list[Counterexample]] = {}
    for ce in examples:
        for kernel in ce.kernels:
            out.setdefault((kernel, ce.prop), []).append(ce)
    return out


def verdict(result: CheckResult, kernel: str, prop: str, found: list[Counterexample]) -> str:
    """holds, broken (known: a corpus scenario expects it), BROKEN (unexpected), or slow (a
    performance property broken: reported, never a failure)."""
    if not found:
        return "holds"
    if PROPERTIES[prop].kind == "performance":
        return "slow"
    return "broken" if (kernel, prop) in result.corpus.expected else "BROKEN"


def _cell(result: CheckResult, kernel: str, prop: str, found: list[Counterexample]) -> str:
    v = verdict(result, kernel, prop, found)
    if v == "holds":
        return "-"
    more = f" +{len(found) - 1}" if len(found) > 1 else ""
    mark = "!" if v == "BROKEN" else ""
    return f"{mark}{found[0].ident.rsplit('-', 1)[1]}{more}"


def table(result: CheckResult, examples: list[Counterexample], out: str) -> str:
    found = cells(result, examples)
    heads = ["kernel", *result.props]
    rows = [
        [k, *(_cell(result, k, p, found.get((k, p), [])) for p in result.props)]
        for k in result.kernels
    ]
    widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [heads, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(
        "a cell: '-' holds; NN the shortest counterexample's number (file "
        f"{out}/PROPERTY-NN.yaml), +N more programs breaking it another way; "
        "'!' a break no corpus scenario expects"
    )
    lines += _summary(result, examples)
    return "\n".join(lines) + "\n"


def _summary(result: CheckResult, examples: list[Counterexample]) -> list[str]:
    states = sum(o.stats.states for o in result.outcomes.values())
    runs = sum(o.stats.runs for o in result.outcomes.values())
    c = result.corpus
    out = [
        f"corpus: {c.runs} runs, {len(c.failed)} failed"
        + "".join(f"\n  FAIL {path} on {kernel}" for path, kernel in c.failed),
        f"search: depth {result.depth}, alphabet {result.alphabet}: {states} distinct states, "
        f"{runs} programs run, {len(examples)} counterexamples, {result.seconds:.1f} s",
        *([result.campaign.line()] if result.campaign is not None else []),
    ]
    if result.patch is not None:
        out += _patch_lines(result)
    else:
        for f in result.unexpected():
            out.append(f"UNEXPECTED: {f.prop} on {f.kernel}: {'; '.join(f.program.names)}")
    if result.interrupted:
        out.append("interrupted: what was found so far")
    out.append("PASS" if result.passed else "FAIL")
    return out


def _patch_lines(result: CheckResult) -> list[str]:
    base = result.kernels[0]
    breaks = result.patch_breaks()
    out = [
        f"the patch breaks what {base} keeps: {', '.join(breaks)}"
        if breaks
        else f"the patch breaks nothing {base} keeps (depth {result.depth})",
        f"scenarios whose outcome the patch changes: {len(result.patch_changes)}",
    ]
    return out + [f"  {path}" for path in result.patch_changes]


def to_json(result: CheckResult, examples: list[Counterexample], out: str) -> dict[str, Any]:
    found = cells(result, examples)
    return {
        "version": JSON_VERSION,
        "passed": result.passed,
        "depth": result.depth,
        "alphabet": result.alphabet,
        "seconds": round(result.seconds, 3),
        "properties": {n: {"kind": p.kind, "doc": p.doc} for n, p in PROPERTIES.items()},
        "kernels": {
            k: {
                p: {
                    "verdict": verdict(result, k, p, found.get((k, p), [])),
                    "counterexamples": [f"{out}/{c.file_name}" for c in found.get((k, p), [])],
                }
                for p in result.props
            }
            for k in result.kernels
        },
        "counterexamples": [
            {
                "file": f"{out}/{c.file_name}",
                "property": c.prop,
                "kernels": c.kernels,
                "program": list(c.names),
                "violation": c.problem,
                "found_by": found_by(c, result.depth),
            }
            for c in examples
        ],
        "campaign": None
        if result.campaign is None
        else {**asdict(result.campaign), "seconds": round(result.campaign.seconds, 3)},
        "patch": None
        if result.patch is None
        else {
            "policy": result.patch.spec,
            "base": result.kernels[0],
            "kernel": result.kernels[1],
            "breaks": result.patch_breaks(),
            "changes_scenarios": result.patch_changes,
        },
        "corpus": {
            "runs": result.corpus.runs,
            "failed": [{"file": p, "kernel": k} for p, k in result.corpus.failed],
        },
        "stats": {
            k: {"states": o.stats.states, "runs": o.stats.runs, "seconds": o.stats.seconds}
            for k, o in result.outcomes.items()
        },
    }


def _cases(result: CheckResult, examples: list[Counterexample]) -> list[tuple[str, str, str, str]]:
    """(kernel, property, verdict, detail) for every cell."""
    found = cells(result, examples)
    out = []
    for k in result.kernels:
        for p in result.props:
            here = found.get((k, p), [])
            detail = f"{here[0].file_name}: {'; '.join(here[0].names)}" if here else ""
            out.append((k, p, verdict(result, k, p, here), detail))
    return out


def tap(result: CheckResult, examples: list[Counterexample]) -> str:
    cases = _cases(result, examples)
    lines = ["TAP version 13", f"1..{len(cases)}"]
    for i, (k, p, v, detail) in enumerate(cases, 1):
        if v == "BROKEN":
            lines.append(f"not ok {i} {k} {p} # {detail}")
        elif v in ("broken", "slow"):
            why = "known bug" if v == "broken" else "performance"
            lines.append(f"ok {i} {k} {p} # SKIP {why}: {detail}")
        else:
            lines.append(f"ok {i} {k} {p}")
    return "\n".join(lines) + "\n"


def junit(result: CheckResult, examples: list[Counterexample]) -> str:
    cases = _cases(result, examples)
    failures = sum(v == "BROKEN" for _k, _p, v, _d in cases)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<testsuite name="cowlab check" tests="{len(cases)}" failures="{failures}" '
        f'time="{result.seconds:.3f}">',
    ]
    for k, p, v, detail in cases:
        lines.append(f"  <testcase classname={quoteattr(k)} name={quoteattr(p)}>")
        if v == "BROKEN":
            lines.append(f"    <failure message={quoteattr(detail)}/>")
        elif v in ("broken", "slow"):
            lines.append(f"    <skipped message={quoteattr(v + ': ' + detail)}/>")
        lines.append("  </testcase>")
    lines.append("</testsuite>")
    return "\n".join(lines) + "\n"


def progress(quiet: bool) -> Progress:
    """A long search's progress bar, on stderr (the table, JSON or TAP on stdout stays clean
    when piped), shown on a terminal only: elsewhere it would leave a blank line and no bar
    (stderr itself asked, not rich, which takes FORCE_COLOR for a terminal)."""
    shown = not quiet and sys.stderr.isatty()
    return Progress(console=Console(stderr=True), transient=True, disable=not shown)
