"""A workload for a sampling profiler: page-by-page first-touch writes over SIZE of private
anonymous memory (THP off) on one kernel, then, with --phase cow, a fork and a write to every
page again (each a COW fault). Nothing is printed: profile it from outside, e.g.

    py-spy record -r 1000 -f raw -o f.txt -- python bench/profile_faults.py v6.18 64M --phase cow
    python -m cProfile -s tottime bench/profile_faults.py v4.5 4M
"""

from __future__ import annotations

import argparse
import sys

from cowlab import Kernel, Process
from cowlab.policy.timeline import resolve

PAGE = 4096
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def size_arg(text: str) -> int:
    """A size such as 64M: a whole number of pages."""
    number, unit = (text[:-1], UNITS[text[-1]]) if text[-1:] in UNITS else (text, 1)
    if not number.isdigit() or int(number) * unit % PAGE or not int(number):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 4K pages (e.g. 64M)")
    return int(number) * unit


def kernel_arg(text: str) -> str:
    """A kernel the timeline knows."""
    try:
        resolve(text)
    except ValueError as err:  # the timeline's own message names what it accepts
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def touch(proc: Process, addr: int, size: int, byte: bytes) -> None:
    """One write per page, in address order: one fault each."""
    for va in range(addr, addr + size, PAGE):
        proc.write(va, byte)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("kernel", type=kernel_arg, help="e.g. v6.18")
    ap.add_argument("size", type=size_arg, help="e.g. 64M")
    ap.add_argument("--phase", choices=("touch", "cow"), default="touch")
    args = ap.parse_args(argv)
    kernel = Kernel(args.kernel)
    kernel.thp_enabled = "never"
    proc = kernel.spawn()
    addr = proc.mmap(args.size, align=2 << 20)
    touch(proc, addr, args.size, b"a")
    if args.phase == "cow":
        proc.fork()
        touch(proc, addr, args.size, b"b")
    return 0


if __name__ == "__main__":
    sys.exit(main())
