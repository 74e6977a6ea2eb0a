"""The `cowlab` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from cowlab.policy import POLICIES
from cowlab.workloads import rdma


def cmd_kernels(args: argparse.Namespace) -> int:
    rows = [
        {"id": p.id, "release": p.release, "commits": list(p.commits), "reuse_rule": p.summary}
        for p in POLICIES.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['id']:<20} {row['release']}")
        print(f"{'':<20} commits: {', '.join(row['commits'])}")
        print(f"{'':<20} {row['reuse_rule']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cowlab",
        description="A page-accurate model of Linux anonymous memory: COW, THP and page pinning.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    kernels = sub.add_parser("kernels", help="list the modelled kernels and their reuse rules")
    kernels.add_argument("--json", action="store_true")
    kernels.set_defaults(func=cmd_kernels)
    sub.add_parser(
        "rdma",
        help="the RDMA memory-region test of 6d0a07edd17c (see `cowlab rdma --help`)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["rdma"]:
        return rdma.main(argv[1:], prog="cowlab rdma")
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
