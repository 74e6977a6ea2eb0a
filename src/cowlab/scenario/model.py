"""The parsed form of a scenario file (see docs/scenarios.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cowlab.check.properties import PROPERTIES as SEARCHED
from cowlab.policy.timeline import pick_key
from cowlab.scenario.located import Loc

# what `holds:`/`breaks:` may name: the two invariants and check/properties.py's properties
PROPERTIES = ("counters", "rmap", *SEARCHED)
FAULT_KINDS = ("copy", "reuse", "none")
MAPPED_KINDS = ("pmd", "pte", "none", "zero", "huge_zero", "swap")
# what a step's address shows of the page there, mapped or swapped out (judge.page_view)
SWAP_VIEWS = ("swapcache", "writeback", "swap_count", "anon_exclusive", "folio_size", "ksm")


@dataclass(frozen=True)
class Address:
    """A region name plus a byte offset (``buf+4K``), or an absolute address (region None)."""

    region: str | None
    offset: int

    def __str__(self) -> str:
        if self.region is None:
            return hex(self.offset)
        sign = "+" if self.offset >= 0 else "-"
        return self.region if not self.offset else f"{self.region}{sign}{abs(self.offset):#x}"


@dataclass(frozen=True)
class Expectation:
    """One expected observation; ``per_kernel`` overrides ``value`` from each release it names
    on (the newest such key at or before a kernel's release wins)."""

    what: str
    value: Any
    per_kernel: dict[str, Any]
    loc: Loc

    def expected_for(self, kernel: str) -> Any:
        """The value for `kernel`: its own key, else the newest release key at or before it
        (policy.timeline.pick_key), else the default."""
        key = pick_key(self.per_kernel, kernel)
        return self.value if key is None else self.per_kernel[key]

    def applies_to(self, kernel: str) -> bool:
        """False where the value is null: "no expectation from this release on"."""
        return self.expected_for(kernel) is not None


@dataclass
class Step:
    """One operation of the program, with its arguments already checked and converted."""

    index: int
    op: str
    args: dict[str, Any]
    expect: list[Expectation]
    label: str | None
    loc: Loc

    def describe(self) -> str:
        """``write P buf+0x1000 data=b'CPU'``: op, process, address, then the rest."""
        words = [self.op]
        words += [str(self.args[k]) for k in ("proc", "pin", "at") if k in self.args]
        words += [
            f"{k}={_show(k, v)}" for k, v in self.args.items() if k not in ("proc", "pin", "at")
        ]
        return " ".join(words)


def _show(key: str, value: Any) -> str:
    if isinstance(value, bytes):
        return repr(value) if len(value) <= 16 else f"<{len(value)} bytes>"
    if isinstance(value, bool) or not isinstance(value, int):
        return str(value)
    if key == "fill":
        return f"{value:#04x}"
    if key in ("size", "new_size", "align", "offset"):
        for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
            if value and value % (1 << shift) == 0:
                return f"{value >> shift}{unit}"
    return hex(value) if value >= 4096 else str(value)


@dataclass(frozen=True)
class ScenarioConfig:
    """The machine a scenario needs: THP sysfs mode and kernel build options."""

    thp: str = "madvise"
    use_zero_page: bool = True
    config_swap: bool = True
    config_thp: bool = True
    debug_vm: bool = False
    soft_dirty: bool = True  # CONFIG_MEM_SOFT_DIRTY (this machine's 6.18: false)
    no_page_mapcount: bool = False  # CONFIG_NO_PAGE_MAPCOUNT, 6.15+ (this machine's 6.18: false)
    mthp: tuple[tuple[int, str], ...] = ()  # (size in KiB, mode) for hugepages-<size>kB
    swap_device: str = "file"  # the swap area: file, hdd, ssd, zram (mm/swapfile.SWAP_DEVICES)
    locs: dict[str, Loc] = field(default_factory=dict, compare=False, hash=False)  # key -> where


@dataclass
class Scenario:
    path: str
    name: str
    description: str
    kernels: tuple[str, ...]
    config: ScenarioConfig
    processes: list[str]
    steps: list[Step] = field(default_factory=list)
