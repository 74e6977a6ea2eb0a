"""The `cowlab` command line. Bad input is one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from rich.console import Console

from cowlab.arguments import at_least
from cowlab.check.cli import add_check_command
from cowlab.explain import diff, explain
from cowlab.live.cli import add_live_command
from cowlab.policy import ReleaseError, resolve
from cowlab.policy.listing import policy_table, render_timeline, timeline_rows
from cowlab.scenario import Scenario, ScenarioError, budget, load_scenario
from cowlab.scenario.report import JSON_VERSION, render_run, run_to_json
from cowlab.scenario.runner import run_scenario
from cowlab.show import memory_at, render_html, render_svg, render_text
from cowlab.workloads import rdma


class UsageError(Exception):
    """A bad command line: one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def kernel_ids(requested: list[str] | None) -> list[str] | None:
    """--kernel values: releases (6.6, v5.10, 5.4.286), policy ids or review versions."""
    for kernel in requested or []:
        try:
            resolve(kernel)
        except ReleaseError as e:
            raise UsageError(f"cowlab: {e}") from None
    return requested


def cmd_kernels(args: argparse.Namespace) -> int:
    rows = timeline_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if args.markdown:
        print(policy_table(), end="")
        return 0
    print(render_timeline(rows))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    requested = kernel_ids(args.kernel)
    scenarios = [load_scenario(path) for path in args.files]
    console = Console(width=args.width, force_terminal=False) if not args.json else None
    runs = []
    for scenario in scenarios:
        # --kernel asks "what does K do with this?": run on K even if the file does not list it
        for kernel_id in requested or scenario.kernels:
            result = run_scenario(scenario, kernel_id, tracing=args.json)  # JSON has the events
            runs.append(result)
            if console is not None:
                render_run(result, console)
    passed = bool(runs) and all(r.passed for r in runs)  # zero cases is never a pass
    if args.json:
        doc = {"version": JSON_VERSION, "passed": passed, "runs": [run_to_json(r) for r in runs]}
        print(json.dumps(doc, indent=2))
    return 0 if passed else 1


def one_kernel(requested: str) -> str:
    """A known kernel id; the scenario need not list it ("what does K do with this?")."""
    kernel_ids([requested])
    return requested


def check_step(step: int | None, scenario: Scenario) -> None:
    if step is not None and not 1 <= step <= len(scenario.steps):
        raise UsageError(f"cowlab: --step must be 1..{len(scenario.steps)}, got {step}")


def cmd_explain(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.file)
    kernel_id = one_kernel(args.kernel)
    check_step(args.step, scenario)
    result = explain(scenario, kernel_id, args.step, Console(width=args.width))
    return 0 if result.passed else 1


def cmd_diff(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.file)
    if len(args.kernel) != 2:
        raise UsageError("cowlab: diff needs exactly two --kernel options")
    a, b = (one_kernel(k) for k in args.kernel)
    return 0 if diff(scenario, a, b, Console(width=args.width)) is None else 1


def cmd_show(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.file)
    kernel_id = one_kernel(args.kernel)
    check_step(args.step, scenario)
    view = memory_at(scenario, kernel_id, args.step)
    if args.html or args.svg:
        out, text = (args.html, render_html(view)) if args.html else (args.svg, render_svg(view))
        try:
            Path(out).write_text(text)
        except OSError as e:
            raise UsageError(f"cowlab: cannot write {out}: {e.strerror}") from None
        print(f"wrote {out}: {len(view.folios)} folios")
    else:
        print(render_text(view))
    return 0


def build_parser() -> Parser:
    parser = Parser(
        prog="cowlab",
        description="A page-accurate model of Linux anonymous memory: COW, THP and page pinning.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    kernels = sub.add_parser(
        "kernels", help="the timeline: each release 4.5-6.18, its policy and the rule changes"
    )
    form = kernels.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true")
    form.add_argument(
        "--markdown", action="store_true", help="one row per policy (the table in docs/kernels.md)"
    )
    kernels.set_defaults(func=cmd_kernels)
    run = sub.add_parser("run", help="run scenario files on the kernels they name")
    run.add_argument("files", nargs="+", metavar="FILE")
    run.add_argument(
        "--kernel",
        action="append",
        help="run on this kernel instead of the file's list: a release 4.5-6.18 (6.6 means "
        "mainline 6.6.0; a stable release such as 5.4.286 is its x.y.0 plus the modelled "
        "backports its line had by then, listed by `cowlab kernels`), a policy id (v5.19) or a "
        "review version (repeatable)",
    )
    run.add_argument("--json", action="store_true", help="a JSON document instead of tables")
    run.add_argument("--width", type=at_least(1), default=160, help="table width in columns (160)")
    run.set_defaults(func=cmd_run)
    exp = sub.add_parser("explain", help="every kernel decision of a scenario, step by step")
    exp.add_argument("file", metavar="FILE")
    exp.add_argument("--kernel", required=True)
    exp.add_argument("--step", type=int, help="only this step (1-based)")
    exp.add_argument("--width", type=at_least(1), default=160, help="output width in columns (160)")
    exp.set_defaults(func=cmd_explain)
    dif = sub.add_parser("diff", help="the first step where two kernels decide differently")
    dif.add_argument("file", metavar="FILE")
    dif.add_argument("--kernel", action="append", required=True, help="give it twice")
    dif.add_argument("--width", type=at_least(1), default=160, help="table width in columns (160)")
    dif.set_defaults(func=cmd_diff)
    shw = sub.add_parser("show", help="the memory at a step: text, --html or --svg")
    shw.add_argument("file", metavar="FILE")
    shw.add_argument("--kernel", required=True)
    shw.add_argument("--step", type=int, help="after this step (default: the last)")
    out = shw.add_mutually_exclusive_group()
    out.add_argument("--html", metavar="OUT", help="write one self-contained HTML file")
    out.add_argument("--svg", metavar="OUT", help="write an SVG picture")
    shw.set_defaults(func=cmd_show)
    for modelling in (run, exp, dif, shw):
        modelling.add_argument(
            "--max-memory",
            type=rdma.parse_size,
            metavar="SIZE",
            help="refuse a step that may grow the model past SIZE (e.g. 8G; default: what it "
            "holds plus 80%% of the machine's available memory)",
        )
    add_live_command(sub)
    add_check_command(sub)
    sub.add_parser(
        "rdma",
        help="the RDMA memory-region test of 6d0a07edd17c (see `cowlab rdma --help`)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["rdma"]:
            return rdma.main(argv[1:], prog="cowlab rdma")
        args = build_parser().parse_args(argv)
        budget.set_limit(getattr(args, "max_memory", None))
        result: int = args.func(args)
    except (UsageError, ScenarioError) as e:
        print(str(e).splitlines()[0], file=sys.stderr)
        return 2
    except BrokenPipeError:  # `cowlab show ... | head`: the reader went away
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:  # Ctrl-C: what was running cleaned up as the exception passed
        print("cowlab: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    return result


if __name__ == "__main__":
    sys.exit(main())
