"""The RDMA test of 6d0a07edd17c's commit message, as a program on the model.

Two memory regions are registered (get_user_pages for write, what ib_umem_get does), something
write-protects them while they stay pinned, then the loop: the CPU fills a random 0..1024 byte
slice of MR1 and clears the same slice of MR2; the NIC sends MR1's pinned pages to the peer
(RDMA WRITE) and writes the peer's copy into MR2's pinned pages (RDMA READ response); the CPU
compares MR2 with what it wrote. Slices walk through the regions so transfers cross pages.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from cowlab.arguments import at_least
from cowlab.kernel import CowEvent, Kernel, Pin, Process
from cowlab.mm.constants import HPAGE_PMD_SIZE, PAGE_SIZE
from cowlab.policy import ReleaseError, resolve

TRIGGERS = ("fork", "mprotect", "clear_refs", "numa")
MAPPINGS = ("pmd", "pte")
MIB = 1 << 20


@dataclass
class CompareError:
    iteration: int
    addr: int
    expected: int
    got: int
    explanation: list[str]


@dataclass
class RdmaResult:
    kernel: str
    mapping: str
    trigger: str
    size: int
    iterations: int
    error: CompareError | None
    cow_copies: int
    faults: int
    seconds: float


def register(p: Process, size: int, mapping: str) -> tuple[list[int], list[Pin]]:
    """mmap two THP-backed regions, touch them, PTE-map them if asked, then ibv_reg_mr both."""
    regions = []
    for _ in range(2):
        addr = p.mmap(size, align=HPAGE_PMD_SIZE)
        p.madvise(addr, size, "hugepage")
        for thp in range(addr, addr + size, HPAGE_PMD_SIZE):
            p.write(thp, b"\0")
            if mapping == "pte":  # cow.c's way to PTE-map a THP: split the VMA, then merge it
                p.mprotect(thp + PAGE_SIZE, PAGE_SIZE, "r")
                p.mprotect(thp + PAGE_SIZE, PAGE_SIZE, "rw")
        regions.append(addr)
    pins = [p.get_user_pages(addr, size, write=True) for addr in regions]
    return regions, pins


def write_protect(p: Process, regions: list[int], size: int, trigger: str) -> None:
    """What a real program does that leaves its pinned pages mapped read-only."""
    if trigger == "fork":  # system(), a helper process: fork, and the child exits at once
        p.fork().exit()
    elif trigger == "mprotect":
        for addr in regions:
            p.mprotect(addr, size, "r")
            p.mprotect(addr, size, "rw")
    elif trigger == "clear_refs":  # a checkpointer tracking soft-dirty pages
        p.clear_refs(4)
    else:  # NUMA balancing scans the regions; the next touch takes a hinting fault
        for addr in regions:
            p.numa_balance(addr, size)


def explain(k: Kernel, p: Process, pin: Pin, region: int, addr: int) -> list[str]:
    """Which physical page addr maps, which one the NIC uses, and the fault that parted them."""
    page = (addr - region) // PAGE_SIZE
    pinned = int(pin.pages[page])
    now = p.translate(addr)
    lines = [
        f"{addr:#x} maps pfn {now:#x}, but the NIC uses the pinned pfn {pinned:#x}"
        if now is not None
        else f"{addr:#x} is not mapped"
    ]
    event = find_copy(k, p.pid, addr)
    if event is not None:
        lines.append("because " + event.describe())
    return lines


def find_copy(k: Kernel, pid: int, addr: int) -> CowEvent | None:
    for event in reversed(k.cow_log):
        if event.pid == pid and event.addr <= addr < event.addr + event.nr * PAGE_SIZE:
            return event
    return None


def run(
    kernel_id: str,
    size: int = 512 * MIB,
    iterations: int = 1000,
    trigger: str = "fork",
    mapping: str = "pmd",
    seed: int = 1,
    selfcheck: bool = False,
) -> RdmaResult:
    start = time.perf_counter()
    k = Kernel(kernel_id, selfcheck=selfcheck)
    k.thp_enabled = "madvise"
    p = k.spawn()
    regions, pins = register(p, size, mapping)
    write_protect(p, regions, size, trigger)
    rng = random.Random(seed)
    error = None
    offset = HPAGE_PMD_SIZE - 700  # start just below a THP boundary, then walk upwards
    for i in range(iterations):
        n = rng.randint(0, 1024)
        if offset + n > size:
            offset = 0
        data = rng.randbytes(n)
        p.write(regions[0] + offset, data)
        p.write(regions[1] + offset, bytes(n))
        wire = pins[0].dma_read(offset, n)  # RDMA WRITE: the NIC reads MR1
        pins[1].dma_write(offset, wire)  # RDMA READ response lands in MR2
        got = p.read(regions[1] + offset, n)
        if got != data:
            error = _compare_error(k, p, regions, pins, offset, data, wire, got, i)
            break
        offset += n
    return RdmaResult(
        kernel_id,
        mapping,
        trigger,
        size,
        i + 1 if iterations else 0,
        error,
        len(k.cow_log),
        k.vmstat["pgfault"],
        time.perf_counter() - start,
    )


def _compare_error(
    k: Kernel,
    p: Process,
    regions: list[int],
    pins: list[Pin],
    offset: int,
    data: bytes,
    wire: bytes,
    got: bytes,
    iteration: int,
) -> CompareError:
    bad = next(j for j in range(len(data)) if got[j] != data[j])
    addr = regions[1] + offset + bad
    lines = [f"MR2 {line}" for line in explain(k, p, pins[1], regions[1], addr)]
    if wire[bad] != data[bad]:
        sent_from = regions[0] + offset + bad
        lines += [f"MR1 {line}" for line in explain(k, p, pins[0], regions[0], sent_from)]
        lines.append("the NIC sent MR1's pinned page, which the CPU's write never reached")
    return CompareError(iteration, addr, data[bad], got[bad], lines)


def report(result: RdmaResult) -> str:
    head = (
        f"kernel {result.kernel}: 2 x {result.size // MIB} MiB MRs, "
        f"{result.mapping.upper()}-mapped THP, write-protected by {result.trigger}"
    )
    if result.error is None:
        return (
            f"{head}\nclean: {result.iterations} iterations, no compare error "
            f"({result.cow_copies} COW copies, {result.seconds:.2f} s)"
        )
    e = result.error
    lines = [
        head,
        f"COMPARE ERROR in iteration {e.iteration + 1}: at {e.addr:#x} expected "
        f"{e.expected:#04x}, read back {e.got:#04x}",
    ]
    lines += [f"  {line}" for line in e.explanation]
    lines.append(f"({result.cow_copies} COW copies, {result.seconds:.2f} s)")
    return "\n".join(lines)


def parse_size(text: str) -> int:
    """A size option: bytes, or K, M or G of them; more than none."""
    unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    try:
        size = int(text[:-1] if unit > 1 else text) * unit
    except ValueError:
        size = 0
    if size <= 0:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (expected e.g. 512M, 2M, 4096)")
    return size


def kernel_arg(text: str) -> str:
    """--kernel: any release or policy id that resolves."""
    try:
        resolve(text)
    except ReleaseError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


class OneLineParser(argparse.ArgumentParser):
    """A bad command line is one line naming the program and what was expected, exit 2 (not
    argparse's usage block before it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")


def build_parser(prog: str = "rdma_mr") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog, description="The RDMA memory-region test of 6d0a07edd17c on a modelled kernel."
    )
    parser.add_argument(
        "--kernel",
        action="append",
        type=kernel_arg,
        help="a release (4.5 .. 6.18, e.g. 4.5.5 or 5.10) or policy id; repeat to run several "
        "(default: v4.5)",
    )
    parser.add_argument("--size", type=parse_size, default=512 * MIB, help="bytes per MR (512M)")
    parser.add_argument("--iterations", type=at_least(0), default=1000)
    parser.add_argument("--trigger", choices=TRIGGERS, default="fork")
    parser.add_argument("--mapping", choices=MAPPINGS, default="pmd")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--selfcheck", action="store_true", help="check invariants after each op")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "rdma_mr") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.size % HPAGE_PMD_SIZE:
        print(f"{prog}: --size must be a positive multiple of 2M", file=sys.stderr)
        return 2
    status = 0
    for i, kernel_id in enumerate(args.kernel or ["v4.5"]):
        result = run(
            kernel_id,
            args.size,
            args.iterations,
            args.trigger,
            args.mapping,
            args.seed,
            args.selfcheck,
        )
        print(("\n" if i else "") + report(result))
        status |= 1 if result.error else 0
    return status
