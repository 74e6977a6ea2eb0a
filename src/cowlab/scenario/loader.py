"""Read and check a scenario file; every problem is one ScenarioError naming file, line, column."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cowlab.kernel import Memset
from cowlab.mm.constants import PAGE_SIZE
from cowlab.mm.madvise import ADVICE
from cowlab.mm.swapfile import SWAP_DEVICES
from cowlab.mm.vmscan import STAGES
from cowlab.policy import POLICIES, ReleaseError, resolve
from cowlab.scenario.located import LList, LMap, Loc
from cowlab.scenario.model import (
    FAULT_KINDS,
    MAPPED_KINDS,
    PROPERTIES,
    SWAP_VIEWS,
    Address,
    Expectation,
    Scenario,
    ScenarioConfig,
    Step,
)

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SIZE = re.compile(r"^(0x[0-9a-fA-F]+|\d+)([KMG]?)$")
ADDR = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*|0x[0-9a-fA-F]+)((?:\s*[+-]\s*[0-9a-fA-FxKMG]+)*)\s*$"
)
TERM = re.compile(r"([+-])\s*([0-9a-fA-FxKMG]+)")
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
THP_MODES = ("always", "madvise", "never")
ERRNO = re.compile(r"^E[A-Z]+$")


class ScenarioError(Exception):
    """A malformed or meaningless scenario: ``path:line:col: what was expected``."""

    def __init__(self, path: str, loc: Loc, message: str) -> None:
        message = " ".join(message.split())  # one line, whatever a YAML error had to say
        super().__init__(f"{path}:{loc.line}:{loc.col}: {message}")
        self.path = path
        self.loc = loc
        self.message = message

    def __reduce__(self) -> tuple[type[ScenarioError], tuple[str, Loc, str]]:
        """Made again from its three parts: a process pool's worker sends it to the parent
        pickled (the default, from the one-line text, fits no __init__ of three)."""
        return ScenarioError, (self.path, self.loc, self.message)


@dataclass
class Context:
    """What the steps so far have defined: live processes, regions, pins, labels."""

    path: str
    kernels: tuple[str, ...]
    procs: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)
    regions: set[str] = field(default_factory=set)
    pins: set[str] = field(default_factory=set)
    unpinned: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)

    def fail(self, loc: Loc, message: str) -> ScenarioError:
        return ScenarioError(self.path, loc, message)


# --- value parsers: (context, value, location) -> converted value -------------------------

Parser = Callable[[Context, Any, Loc], Any]


def parse_size(ctx: Context, value: Any, loc: Loc) -> int:
    """An int, or a string like 4096, 0x1000, 4K, 2M, 1G."""
    if isinstance(value, bool):
        raise ctx.fail(loc, "expected a size like 4096, 4K, 2M or 1G, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ctx.fail(loc, f"expected a size >= 0, got {value}")
        return value
    if isinstance(value, str):
        m = SIZE.match(value.strip())
        if m:
            return int(m.group(1), 0) * UNITS[m.group(2)]
    raise ctx.fail(loc, f"expected a size like 4096, 4K, 2M or 1G, got {value!r}")


def parse_positive_size(ctx: Context, value: Any, loc: Loc) -> int:
    size = parse_size(ctx, value, loc)
    if size == 0:
        raise ctx.fail(loc, "expected a size greater than zero")
    return size


def parse_address(ctx: Context, value: Any, loc: Loc) -> Address:
    """``region``, ``region+4K``, ``region+8K+16``, ``region-0x1000`` or ``0x...``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return Address(None, value)
    m = ADDR.match(value) if isinstance(value, str) else None
    if not m:
        raise ctx.fail(
            loc, f"expected an address like buf, buf+4K or 0x7f0000000000, got {value!r}"
        )
    base, terms = m.groups()
    delta = 0
    for sign, term in TERM.findall(terms):
        size = parse_size(ctx, term, loc)
        delta += -size if sign == "-" else size
    if base.startswith("0x"):
        return Address(None, int(base, 16) + delta)
    if base not in ctx.regions:
        known = ", ".join(sorted(ctx.regions)) or "none yet"
        raise ctx.fail(loc, f"expected a region defined by an earlier mmap, got {base!r} ({known})")
    return Address(base, delta)


def parse_aligned_address(ctx: Context, value: Any, loc: Loc) -> Address:
    addr = parse_address(ctx, value, loc)
    if addr.offset % PAGE_SIZE:
        raise ctx.fail(loc, f"expected a page-aligned address (a multiple of 4K), got {value!r}")
    return addr


def parse_bool(ctx: Context, value: Any, loc: Loc) -> bool:
    if not isinstance(value, bool):
        raise ctx.fail(loc, f"expected true or false, got {value!r}")
    return value


def parse_data(ctx: Context, value: Any, loc: Loc) -> bytes:
    """A string (UTF-8), {hex: "00ff"} or {fill: 0xab, size: 4K}."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, LMap) and set(value) == {"hex"} and isinstance(value["hex"], str):
        try:
            return bytes.fromhex(value["hex"])
        except ValueError:
            raise ctx.fail(value.val_locs["hex"], "expected hex digits in pairs") from None
    if isinstance(value, LMap) and set(value) == {"fill", "size"}:
        fill = parse_byte(ctx, value["fill"], value.val_locs["fill"])
        return fill_bytes(fill, parse_size(ctx, value["size"], value.val_locs["size"]))
    raise ctx.fail(
        loc, f"expected data: a string, {{hex: ...}} or {{fill: N, size: N}}, got {value!r}"
    )


@lru_cache(maxsize=16)
def fill_bytes(fill: int, size: int) -> Memset:
    """`size` bytes of `fill`, one object per (fill, size): the cow.c files write the same 2 MiB
    buffers hundreds of times, and bytes are immutable."""
    return Memset(fill, size)


def parse_byte(ctx: Context, value: Any, loc: Loc) -> int:
    """A fill byte: an integer 0..255 (0x61 is one too)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ctx.fail(loc, f"expected a byte 0..255, got {value!r}")
    return value


def choice(*options: str) -> Parser:
    def parse(ctx: Context, value: Any, loc: Loc) -> str:
        if value not in options:
            raise ctx.fail(loc, f"expected one of {', '.join(options)}, got {value!r}")
        return str(value)

    return parse


def parse_max_ptes(ctx: Context, value: Any, loc: Loc) -> int:
    """A khugepaged max_ptes_* knob: 0..511 (larger writes are EINVAL)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 511:
        raise ctx.fail(loc, f"expected a count 0..511, got {value!r}")
    return value


def parse_positive_count(ctx: Context, value: Any, loc: Loc) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ctx.fail(loc, f"expected a count >= 1, got {value!r}")
    return value


def parse_page_sharing(ctx: Context, value: Any, loc: Loc) -> int:
    """/sys/kernel/mm/ksm/max_page_sharing: at least 2."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ctx.fail(loc, f"expected max_page_sharing >= 2, got {value!r}")
    return value


def parse_prot(ctx: Context, value: Any, loc: Loc) -> str:
    if not isinstance(value, str) or not (
        value == "none" or (value and all(c in "rwx" for c in value))
    ):
        raise ctx.fail(loc, f"expected a protection like r, rw, rwx or none, got {value!r}")
    return value


def parse_clear_refs(ctx: Context, value: Any, loc: Loc) -> int:
    if value not in (1, 2, 3, 4) or isinstance(value, bool):
        raise ctx.fail(loc, f"expected a clear_refs value 1, 2, 3 or 4, got {value!r}")
    return int(value)


def parse_name(ctx: Context, value: Any, loc: Loc) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise ctx.fail(loc, f"expected a name (letters, digits, _), got {value!r}")
    return value


def parse_proc(ctx: Context, value: Any, loc: Loc) -> str:
    name = parse_name(ctx, value, loc)
    if name in ctx.gone:
        raise ctx.fail(loc, f"expected a live process, but {name} has exited")
    if name not in ctx.procs:
        known = ", ".join(sorted(ctx.procs)) or "none"
        raise ctx.fail(loc, f"expected a process defined earlier, got {name!r} (known: {known})")
    return name


def parse_new_proc(ctx: Context, value: Any, loc: Loc) -> str:
    name = parse_name(ctx, value, loc)
    if name in ctx.procs or name in ctx.gone:
        raise ctx.fail(loc, f"expected a new process name, but {name} is already used")
    ctx.procs.add(name)
    return name


def parse_pin(ctx: Context, value: Any, loc: Loc) -> str:
    name = parse_name(ctx, value, loc)
    if name in ctx.unpinned:
        raise ctx.fail(loc, f"expected a held pin, but {name} was unpinned")
    if name not in ctx.pins:
        raise ctx.fail(loc, f"expected a pin taken by an earlier pin step, got {name!r}")
    return name


def parse_new_pin(ctx: Context, value: Any, loc: Loc) -> str:
    name = parse_name(ctx, value, loc)
    if name in ctx.pins:
        raise ctx.fail(loc, f"expected a new pin name, but {name} is already used")
    ctx.pins.add(name)
    return name


def parse_new_region(ctx: Context, value: Any, loc: Loc) -> str:
    name = parse_name(ctx, value, loc)
    if name in ctx.regions:
        raise ctx.fail(loc, f"expected a new region name, but {name} is already used")
    ctx.regions.add(name)
    return name


MTHP_SIZES = {f"{kb}K": kb for kb in (16, 32, 64, 128, 256, 512)} | {"1M": 1024}


def parse_mthp(ctx: Context, raw: Any, loc: Loc) -> tuple[tuple[int, str], ...]:
    """{64K: always, 16K: madvise}: the hugepages-<size>kB/enabled knobs (6.8)."""
    if not isinstance(raw, LMap):
        raise ctx.fail(loc, "expected mthp to map sizes (16K..1M) to always/madvise/inherit/never")
    out = []
    for size, mode in raw.items():
        if size not in MTHP_SIZES:
            raise ctx.fail(
                raw.key_locs[size], f"expected an mTHP size among {', '.join(MTHP_SIZES)}"
            )
        out.append(
            (
                MTHP_SIZES[size],
                choice("always", "madvise", "inherit", "never")(ctx, mode, raw.val_locs[size]),
            )
        )
    return tuple(out)


OPS: dict[str, dict[str, Parser]] = {
    "spawn": {"proc": parse_new_proc},
    "mmap": {
        "proc": parse_proc,
        "name": parse_new_region,
        "size": parse_positive_size,
        "prot?": parse_prot,
        "align?": parse_positive_size,
        "at?": parse_aligned_address,
    },
    "munmap": {"proc": parse_proc, "at": parse_aligned_address, "size": parse_positive_size},
    "mprotect": {
        "proc": parse_proc,
        "at": parse_aligned_address,
        "size": parse_positive_size,
        "prot": parse_prot,
    },
    "mremap": {
        "proc": parse_proc,
        "at": parse_aligned_address,
        "size": parse_positive_size,
        "new_size?": parse_positive_size,
        "to?": parse_aligned_address,
        "may_move?": parse_bool,
        "name?": parse_new_region,
    },
    "madvise": {
        "proc": parse_proc,
        "at": parse_aligned_address,
        "size": parse_positive_size,
        "advice": choice(*ADVICE),
    },
    "fork": {"proc": parse_proc, "child": parse_new_proc},
    "exit": {"proc": parse_proc},
    # data, or size and fill (a memset: never materialised); check_write_args says which
    "write": {
        "proc": parse_proc,
        "at": parse_address,
        "data?": parse_data,
        "size?": parse_positive_size,
        "fill?": parse_byte,
    },
    "read": {"proc": parse_proc, "at": parse_address, "size": parse_positive_size},
    "touch": {
        "proc": parse_proc,
        "at": parse_address,
        "size": parse_positive_size,
        "write?": parse_bool,
    },
    "check": {"proc": parse_proc, "at": parse_address},
    "clear_refs": {"proc": parse_proc, "value?": parse_clear_refs},
    "numa_balance": {"proc": parse_proc, "at": parse_aligned_address, "size": parse_positive_size},
    "pin": {
        "proc": parse_proc,
        "name": parse_new_pin,
        "at": parse_address,
        "size": parse_positive_size,
        "write?": parse_bool,
        "force?": parse_bool,
        "flavour?": choice("get", "pin", "longterm"),
        "fast?": parse_bool,
    },
    "unpin": {"pin": parse_pin},
    "dma_write": {"pin": parse_pin, "offset?": parse_size, "data": parse_data},
    "dma_read": {"pin": parse_pin, "offset?": parse_size, "size": parse_positive_size},
    "split_huge_pages": {},
    "shrink": {},
    "swapout": {
        "proc": parse_proc,
        "at": parse_aligned_address,
        "size": parse_positive_size,
        "until?": choice(*STAGES),
    },
    "end_writeback": {},
    "shrink_swapcache": {},
    "khugepaged": {},
    "ksmd": {"scans?": parse_positive_count},
    "set": {
        "thp?": choice(*THP_MODES),
        "thp_alloc_fail?": parse_bool,
        "numa_misplaced?": parse_bool,
        "max_ptes_none?": parse_max_ptes,
        "max_ptes_swap?": parse_max_ptes,
        "max_ptes_shared?": parse_max_ptes,
        "ksm_max_page_sharing?": parse_page_sharing,
        "ksm_use_zero_pages?": parse_bool,
        "mthp?": parse_mthp,
    },
}

ADDRESSED_OPS = ("write", "read", "touch", "check", "pin", "mmap")
STEP_KEYS = ("op", "label", "expect", "note")


# --- expectations -------------------------------------------------------------------------


def parse_page_ref(ctx: Context, value: Any, loc: Loc) -> str:
    """``pin:NAME`` (the pinned page) or ``step:LABEL`` (the page seen at a labelled step)."""
    if isinstance(value, str) and ":" in value:
        kind, name = value.split(":", 1)
        if kind == "pin" and name in ctx.pins:
            return value
        if kind == "step" and name in ctx.labels:
            return value
    raise ctx.fail(
        loc, f"expected pin:NAME or step:LABEL naming an earlier pin or step, got {value!r}"
    )


def parse_count(ctx: Context, value: Any, loc: Loc) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ctx.fail(loc, f"expected a count (an integer >= 0), got {value!r}")
    return value


def parse_properties(ctx: Context, value: Any, loc: Loc) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or any(i not in PROPERTIES for i in items):
        raise ctx.fail(loc, f"expected properties among {', '.join(PROPERTIES)}, got {value!r}")
    return tuple(items)


def parse_outcome(ctx: Context, value: Any, loc: Loc) -> str:
    if value in ("ok", "SIGSEGV", "BUG") or (isinstance(value, str) and ERRNO.match(value)):
        return str(value)
    raise ctx.fail(
        loc, f"expected an outcome: ok, SIGSEGV, BUG or an errno like EINVAL, got {value!r}"
    )


EXPECT: dict[str, Parser] = {
    "data": parse_data,
    "fault": choice(*FAULT_KINDS),
    "same_page": parse_page_ref,
    "other_page": parse_page_ref,
    "mapped": choice(*MAPPED_KINDS),
    "mapcount": parse_count,
    "total_mapcount": parse_count,
    "refcount": parse_count,
    "ksm": parse_bool,
    "swapcache": parse_bool,
    "writeback": parse_bool,
    "swap_count": parse_count,
    "anon_exclusive": parse_bool,
    "folio_size": parse_size,
    "holds": parse_properties,
    "breaks": parse_properties,
    "outcome": parse_outcome,
    "rmap_walk_vmas": parse_count,
}
NEEDS_ADDRESS = (
    "same_page",
    "other_page",
    "mapped",
    "mapcount",
    "total_mapcount",
    "refcount",
    *SWAP_VIEWS,
)
NEEDS_RESULT = ("data",)


def parse_expectation(ctx: Context, what: str, value: Any, loc: Loc) -> Expectation:
    parse = EXPECT[what]
    if isinstance(value, LMap) and value and per_kernel_keys(ctx, value):
        per_kernel = {}
        seen: dict[object, str] = {}
        for key, v in value.items():
            if key != "default":
                point = kernel_point(ctx, key, value.key_locs[key])
                if point in seen:
                    raise ctx.fail(
                        value.key_locs[key],
                        f"expected one key per release, {seen[point]!r} and "
                        f"{key!r} name the same one",
                    )
                seen[point] = key
            # null: no expectation from this release on
            per_kernel[key] = None if v is None else parse(ctx, v, value.val_locs[key])
        default = per_kernel.pop("default", None)
        return Expectation(what, default, per_kernel, loc)
    return Expectation(what, parse(ctx, value, loc), {}, loc)


KERNEL_KEY = re.compile(r"v?\d+\.\d+.*")
NUMERIC_RELEASE = (
    "expected a release as text, v{0} or '{0}' (YAML reads an unquoted 5.10 as the number 5.1)"
)


def per_kernel_keys(ctx: Context, value: LMap) -> bool:
    """A mapping is per-kernel when its keys are `default` or kernels (6.6, v5.19, ...); one
    that mixes them with other keys is an error on the first other key."""
    kernelish = [k for k in value if k == "default" or KERNEL_KEY.fullmatch(str(k))]
    if kernelish and len(kernelish) < len(value):
        bad = next(k for k in value if k not in kernelish)
        message = f"expected a release, a kernel id or default, got {bad!r}"
        raise ctx.fail(value.key_locs[bad], message)
    return bool(kernelish)


def kernel_point(ctx: Context, key: str, loc: Loc) -> object:
    """The release (or review version) a per-kernel key names; a clear error if none."""
    try:
        r = resolve(key)
    except ReleaseError as e:
        raise ctx.fail(loc, str(e)) from None
    return key if r.review else r.release


def parse_expect_block(ctx: Context, op: str, block: Any, loc: Loc) -> list[Expectation]:
    if not isinstance(block, LMap):
        raise ctx.fail(loc, "expected a mapping of expectations under expect")
    out = []
    for what, value in block.items():
        key_loc = block.key_locs[what]
        if what not in EXPECT:
            raise ctx.fail(
                key_loc, f"expected an expectation among {', '.join(EXPECT)}, got {what!r}"
            )
        if what in NEEDS_ADDRESS and op not in ADDRESSED_OPS:
            raise ctx.fail(
                key_loc,
                f"expected {what} only on a step with an address ({', '.join(ADDRESSED_OPS)})",
            )
        if what in NEEDS_RESULT and op not in ("read", "dma_read"):
            raise ctx.fail(key_loc, "expected data only on a read or dma_read step")
        out.append(parse_expectation(ctx, what, value, block.val_locs[what]))
    return out


# --- steps and the document ---------------------------------------------------------------


def parse_step(ctx: Context, index: int, raw: Any, loc: Loc) -> Step:
    if not isinstance(raw, LMap):
        raise ctx.fail(loc, "expected a step: a mapping with op and its arguments")
    if "op" not in raw:
        raise ctx.fail(raw.loc, "expected an op key in the step")
    op = raw["op"]
    if not isinstance(op, str) or op not in OPS:
        raise ctx.fail(raw.val_locs["op"], f"expected an op among {', '.join(OPS)}, got {op!r}")
    spec = OPS[op]
    allowed = {k.rstrip("?") for k in spec}
    for key in raw:
        if key not in allowed and key not in STEP_KEYS:
            expected = ", ".join(sorted(allowed | set(STEP_KEYS)))
            raise ctx.fail(raw.key_locs[key], f"expected a key of {op} ({expected}), got {key!r}")
    args: dict[str, Any] = {}
    for key, parse in spec.items():
        name = key.rstrip("?")
        if name not in raw:
            if not key.endswith("?"):
                raise ctx.fail(raw.loc, f"expected {op} to have a {name} key")
            continue
        args[name] = parse(ctx, raw[name], raw.val_locs[name])
    if op == "write":
        check_write_args(ctx, raw)
    after_step(ctx, op, args)
    label = None
    if "label" in raw:
        label = parse_name(ctx, raw["label"], raw.val_locs["label"])
        if label in ctx.labels:
            raise ctx.fail(raw.val_locs["label"], f"expected a new label, {label} is already used")
    expect = (
        parse_expect_block(ctx, op, raw["expect"], raw.val_locs["expect"])
        if "expect" in raw
        else []
    )
    if label:
        ctx.labels.add(label)
    if "note" in raw and not isinstance(raw["note"], str):
        raise ctx.fail(raw.val_locs["note"], "expected a note as text")
    return Step(index, op, args, expect, label, raw.loc)


def check_write_args(ctx: Context, raw: LMap) -> None:
    """A write stores data, or fills size bytes with fill: exactly one of the two forms."""
    fill_keys = [key for key in raw if key in ("size", "fill")]
    if "data" in raw and fill_keys:
        raise ctx.fail(
            raw.key_locs[fill_keys[0]],
            f"expected data or size and fill in a write, not both (got data and {fill_keys[0]})",
        )
    if "data" in raw or len(fill_keys) == 2:
        return
    if not fill_keys:
        raise ctx.fail(raw.loc, "expected write to have data, or size and fill")
    other = "fill" if fill_keys[0] == "size" else "size"
    raise ctx.fail(
        raw.key_locs[fill_keys[0]],
        f"expected {other} with {fill_keys[0]} in a write (data, or size and fill)",
    )


def after_step(ctx: Context, op: str, args: dict[str, Any]) -> None:
    if op == "exit":
        ctx.procs.discard(args["proc"])
        ctx.gone.add(args["proc"])
    elif op == "unpin":
        ctx.unpinned.add(args["pin"])


def parse_config(ctx: Context, raw: Any, loc: Loc) -> ScenarioConfig:
    if not isinstance(raw, LMap):
        raise ctx.fail(loc, "expected config to be a mapping (thp, use_zero_page, swap, ...)")
    fields = {
        "thp": ("thp", choice(*THP_MODES)),
        "use_zero_page": ("use_zero_page", parse_bool),
        "swap": ("config_swap", parse_bool),
        "transparent_hugepage": ("config_thp", parse_bool),
        "debug_vm": ("debug_vm", parse_bool),
        "soft_dirty": ("soft_dirty", parse_bool),
        "no_page_mapcount": ("no_page_mapcount", parse_bool),
        "mthp": ("mthp", parse_mthp),
        "swap_device": ("swap_device", choice(*SWAP_DEVICES)),
    }
    values = {}
    for key, value in raw.items():
        if key not in fields:
            raise ctx.fail(
                raw.key_locs[key], f"expected a config key among {', '.join(fields)}, got {key!r}"
            )
        attr, parse = fields[key]
        values[attr] = parse(ctx, value, raw.val_locs[key])
    return ScenarioConfig(**values, locs=dict(raw.key_locs))


def parse_kernels(ctx: Context, raw: Any, loc: Loc) -> tuple[str, ...]:
    if not isinstance(raw, LList) or not raw:
        raise ctx.fail(loc, "expected kernels to be a list of releases or kernel ids")
    for kernel, item_loc in zip(raw, raw.item_locs, strict=True):
        if isinstance(kernel, float | int):
            raise ctx.fail(item_loc, NUMERIC_RELEASE.format(kernel))
        if not isinstance(kernel, str):
            raise ctx.fail(item_loc, f"expected a release such as v6.6 or v5.19, got {kernel!r}")
        kernel_point(ctx, kernel, item_loc)
    return tuple(raw)


TOP_KEYS = ("name", "description", "kernels", "config", "processes", "steps")


def parse_scenario(text: str, path: str = "<scenario>") -> Scenario:
    """Parse and check a scenario's YAML text; ScenarioError on the first problem."""
    from cowlab.scenario.yaml_text import YamlSyntaxError, load_located  # data needs no YAML

    try:
        doc = load_located(text)
    except YamlSyntaxError as e:
        raise ScenarioError(path, e.loc, e.message) from None
    return parse_document(doc, path)


def parse_document(doc: Any, path: str) -> Scenario:
    """Check a scenario document as yaml_text.load_located gives it (or located() makes of
    data a program built); ScenarioError on the first problem."""
    ctx = Context(path, tuple(POLICIES))
    if not isinstance(doc, LMap):
        loc = doc.loc if isinstance(doc, LList) else Loc(1, 1)
        raise ctx.fail(loc, "expected a scenario: a mapping with name and steps")
    for key in doc:
        if key not in TOP_KEYS:
            raise ctx.fail(
                doc.key_locs[key],
                f"expected a top-level key among {', '.join(TOP_KEYS)}, got {key!r}",
            )
    for key in ("name", "steps"):
        if key not in doc:
            raise ctx.fail(doc.loc, f"expected a {key} key")
    if not isinstance(doc["name"], str) or not doc["name"].strip():
        raise ctx.fail(doc.val_locs["name"], "expected name to be a non-empty text")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise ctx.fail(doc.val_locs["description"], "expected description to be text")
    if "kernels" in doc:
        ctx.kernels = parse_kernels(ctx, doc["kernels"], doc.val_locs["kernels"])
    config = (
        parse_config(ctx, doc["config"], doc.val_locs["config"])
        if "config" in doc
        else ScenarioConfig()
    )
    processes = doc.get("processes", LList(Loc(1, 1)))
    if not isinstance(processes, LList):
        raise ctx.fail(doc.val_locs["processes"], "expected processes to be a list of names")
    names = [
        parse_new_proc(ctx, p, loc) for p, loc in zip(processes, processes.item_locs, strict=True)
    ]
    steps_raw = doc["steps"]
    if not isinstance(steps_raw, LList) or not steps_raw:
        raise ctx.fail(doc.val_locs["steps"], "expected steps to be a non-empty list")
    steps = [
        parse_step(ctx, i + 1, raw, loc)
        for i, (raw, loc) in enumerate(zip(steps_raw, steps_raw.item_locs, strict=True))
    ]
    return Scenario(path, doc["name"], description, ctx.kernels, config, names, steps)


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; a file that cannot be read is a ScenarioError too."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(str(path), Loc(1, 1), f"cannot read the file: {e}") from None
    return parse_scenario(text, str(path))
