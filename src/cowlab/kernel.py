"""The machine: one modelled kernel (a policy + config) with its frames, processes and pins.

``Kernel`` holds the global state and the sysfs knobs; ``Process`` is the system-call API a
program uses (mmap, fork, write, ...); ``Pin`` is what a device holds after get_user_pages().
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Concatenate, ParamSpec, TypeVar

import numpy as np

from cowlab import checker
from cowlab.errors import InvariantViolation, KernelBug, Segfault, SyscallError
from cowlab.mm import (
    huge_memory,
    khugepaged,
    ksm,
    madvise,
    mmap,
    mprotect,
    mremap,
    task_mmu,
    vmscan,
)
from cowlab.mm.constants import (
    FOLL_FORCE,
    FOLL_LONGTERM,
    FOLL_PIN,
    FOLL_WRITE,
    HPAGE_PMD_NR,
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_SHIFT,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    VM_FAULT_SIGSEGV,
)
from cowlab.mm.fork import dup_mmap
from cowlab.mm.gup import effective_gup_flags, get_user_pages, release_pages
from cowlab.mm.ksm import KsmState
from cowlab.mm.memory import handle_mm_fault
from cowlab.mm.migrate import change_prot_numa
from cowlab.mm.mm import is_zero_pfn, set_page_dirty
from cowlab.mm.mm_types import AnonVma, MmStruct, VmArea, pmd_index, pte_index
from cowlab.mm.page_alloc import IntArray, PageFrames
from cowlab.mm.pgtable import (
    PTE_DIRTY,
    PTE_MIGRATION,
    PTE_YOUNG,
    HugePmd,
    PteTable,
    is_swap_pte,
    pte_to_swp_offset,
)
from cowlab.mm.range_fault import NONE as NO_PAGES
from cowlab.mm.range_fault import access_permitted, fault_in_range, pte_access_permitted
from cowlab.mm.swapfile import SWAP_DEVICES, SwapInfo
from cowlab.mm.trace import CallFields, CowEvent, CowLog, Event, OpRecord, Reads, op_record
from cowlab.policy import resolve

P = ParamSpec("P")
R = TypeVar("R")

THP_MODES = ("always", "madvise", "never")
MTHP_MODES = ("always", "madvise", "inherit", "never")
MTHP_SIZES_KB = (16, 32, 64, 128, 256, 512, 1024)
GUP_FLAVOURS = {"get": 0, "pin": FOLL_PIN, "longterm": FOLL_PIN | FOLL_LONGTERM}
MAX_FAULT_RETRIES = 8
HISTORY_KEPT = 4096
# an access shorter than this runs page by page: a run costs more to set up than a few faults
RANGE_MIN_BYTES = 16 * PAGE_SIZE


@dataclass(frozen=True)
class Config:
    """The kernel build: CONFIG_SWAP, CONFIG_TRANSPARENT_HUGEPAGE, CONFIG_DEBUG_VM, ..."""

    swap: bool = True
    thp: bool = True
    debug_vm: bool = False
    # CONFIG_MEM_SOFT_DIRTY: a build option, on as distributions build every release; this
    # machine's 6.18 is built without it (docs/live.md)
    soft_dirty: bool = True
    # CONFIG_NO_PAGE_MAPCOUNT (6.15+, experimental, off by default and on this machine's 6.18):
    # a large folio keeps no per-page _mapcount and no _nr_pages_mapped (docs/scenarios.md)
    no_page_mapcount: bool = False
    # the swap area (not a build option): a swap file on a rotational disk ("file"), a rotational
    # ("hdd") or non-rotational ("ssd") block device, or zram (synchronous, stable writes)
    swap_device: str = "file"

    def __post_init__(self) -> None:
        if self.swap_device not in SWAP_DEVICES:
            kinds = ", ".join(SWAP_DEVICES)
            raise ValueError(f"swap_device {self.swap_device!r}: expected one of {kinds}")


class History:
    """The operations so far: how many, and the last HISTORY_KEPT records (the COW log keeps
    the record of each copy's operation; a program of millions of operations would otherwise
    cost more in history than in pages). A Process call's record is kept as its fields
    (trace.CallFields), made a CallRecord when read (trace.op_record)."""

    def __init__(self) -> None:
        self.count = 0
        self.recent: deque[OpRecord | CallFields] = deque(maxlen=HISTORY_KEPT)

    def append(self, record: OpRecord | CallFields) -> None:
        self.count += 1
        self.recent.append(record)

    def __len__(self) -> int:
        return self.count

    def __deepcopy__(self, memo: dict[int, object]) -> History:
        """A copy of the machine shares the records: they are never changed once kept."""
        copied = History()
        copied.count = self.count
        copied.recent.extend(self.recent)
        return copied

    def __iter__(self) -> Iterator[OpRecord]:
        return map(op_record, self.recent)

    def _index(self, i: int) -> int:
        """Where operation i (or -n, from the end) is in ``recent``."""
        at = (i if i >= 0 else self.count + i) - (self.count - len(self.recent))
        if not 0 <= at < len(self.recent):
            raise IndexError(f"operation {i} is not kept (the last {HISTORY_KEPT} are)")
        return at

    def __getitem__(self, i: int) -> OpRecord:
        return op_record(self.recent[self._index(i)])

    def __setitem__(self, i: int, record: OpRecord) -> None:
        self.recent[self._index(i)] = record


def parse_prot(prot: str | int) -> int:
    """'rw', 'r', 'rwx', 'none' or a PROT_* integer."""
    if isinstance(prot, int):
        if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC):
            raise SyscallError("EINVAL", f"bad protection {prot:#x}")
        return prot
    if prot == "none":
        return 0
    bits = {"r": PROT_READ, "w": PROT_WRITE, "x": PROT_EXEC}
    if not prot or any(c not in bits for c in prot):
        raise SyscallError(
            "EINVAL", f"bad protection {prot!r} (expected letters of 'rwx' or 'none')"
        )
    value = 0
    for c in prot:
        value |= bits[c]
    return value


class Ids:
    """1, 2, 3, ...: ids handed out in order (itertools.count, but a plain object: a copy of the
    machine copies it by its attribute; count's own copy protocol is deprecated in Python 3.12
    and removed in 3.14)."""

    def __init__(self) -> None:
        self.last = 0

    def __next__(self) -> int:
        self.last += 1
        return self.last


class Kernel:
    """A modelled Linux kernel: a release (6.6, 5.4.286) or policy id resolves to the policy
    in force there; drive it through processes."""

    def __init__(
        self,
        kernel_id: str = "v4.5+6d0a07e",
        config: Config | None = None,
        selfcheck: bool = False,
        tracing: bool = False,
        range_ops: bool = True,
    ) -> None:
        self.kernel_id = kernel_id
        # run a range access as array operations over pages taking the same path (False: page
        # by page, the reference the range path is tested against)
        self.range_ops = range_ops
        self.resolved = resolve(kernel_id)
        self.policy = self.resolved.policy()
        self.config = config or Config()
        if self.config.no_page_mapcount and not self.policy.no_page_mapcount_option:
            raise ValueError(f"no CONFIG_NO_PAGE_MAPCOUNT on {self.resolved.describe()}")
        self.selfcheck = selfcheck
        self.tracing = tracing
        self.frames = PageFrames()
        self.swap = SwapInfo(self.config.swap_device)
        self.anon_vmas: dict[int, AnonVma] = {}
        self.deferred_split: set[int] = set()
        self.processes: dict[int, Process] = {}
        self.pins: dict[int, Pin] = {}
        self.vmstat: Counter[str] = Counter()
        self.cow_log = CowLog()
        self.events: list[Event] = []
        self.history = History()
        self._thp_enabled = "always"
        self.thp_use_zero_page = True
        # /sys/kernel/mm/transparent_hugepage/hugepages-<size>kB/enabled for 16..1024 KiB (6.8)
        self.mthp_enabled = huge_memory.MthpKnobs(dict.fromkeys(MTHP_SIZES_KB, "never"))
        self.thp_alloc_fail = False
        # /sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_* (swap 4.8, shared 5.8)
        self.max_ptes_none = HPAGE_PMD_NR - 1
        self.max_ptes_swap = HPAGE_PMD_NR // 8
        self.max_ptes_shared = HPAGE_PMD_NR // 2
        self.ksm = KsmState()
        self.ksm_max_page_sharing = 256  # /sys/kernel/mm/ksm/max_page_sharing (4.13)
        self.ksm_use_zero_pages = False  # /sys/kernel/mm/ksm/use_zero_pages (4.11)
        self.numa_misplaced = True
        self._ids = Ids()
        self._pids = Ids()
        self._pin_ids = Ids()

    # --- sysfs knobs ---------------------------------------------------------------------

    @property
    def thp_enabled(self) -> str:
        """/sys/kernel/mm/transparent_hugepage/enabled."""
        return self._thp_enabled

    @thp_enabled.setter
    def thp_enabled(self, mode: str) -> None:
        if mode not in THP_MODES:
            raise SyscallError("EINVAL", f"THP mode {mode!r} (expected always, madvise or never)")
        self._thp_enabled = mode

    @property
    def soft_dirty_enabled(self) -> bool:
        """CONFIG_MEM_SOFT_DIRTY of this build."""
        return self.config.soft_dirty

    @property
    def page_mapcount(self) -> bool:
        """A large folio keeps each page's _mapcount (not under CONFIG_NO_PAGE_MAPCOUNT)."""
        return not self.config.no_page_mapcount

    @property
    def nr_pages_mapped(self) -> bool:
        """A large folio keeps _nr_pages_mapped: the release's policy (6.2+) and the build say
        so. Read at each use, never cached at construction: the search runs one machine's copy
        under another kernel's policy (check.search)."""
        return self.policy.nr_pages_mapped and not self.config.no_page_mapcount

    # --- bookkeeping used by the kernel paths -------------------------------------------

    def next_anon_vma_id(self) -> int:
        return next(self._ids)

    def event(
        self,
        function: str,
        verdict: str = "",
        *,
        addr: int | None = None,
        pfn: int | None = None,
        read: Reads = (),
        rule: str = "",
        detail: str = "",
    ) -> None:
        """Record what a kernel function did (verdict "") or decided, when tracing."""
        if self.tracing:
            policy = self.policy.id if verdict else ""
            op = self.history.count
            self.events.append(Event(op, function, verdict, addr, pfn, read, rule, policy, detail))

    def record_cow(
        self,
        function: str,
        vma: VmArea,
        addr: int,
        old: int | None,
        new: int,
        why: object,
        nr: int = 1,
    ) -> None:
        """One copy; ``why`` is the decision (or a text), rendered only when read."""
        op = self.current_op()
        self.cow_log.add(self.history.count, op, function, vma.mm.pid, addr, old, new, nr, why)

    def current_op(self) -> object:
        return self.history.recent[-1] if self.history.count else "(setup)"

    @contextmanager
    def operation(self, fmt: str, *args: object) -> Iterator[None]:
        """One program-visible operation (str.format of fmt and args); self-checking follows it."""
        record = self.begin(fmt, *args)
        try:
            yield
        except (SyscallError, Segfault):
            self._selfcheck(record)
            raise
        self._selfcheck(record)

    def begin(self, fmt: str, *args: object) -> OpRecord:
        record = OpRecord(fmt, *args)
        self.history.append(record)
        return record

    def _selfcheck(self, record: OpRecord | CallFields) -> None:
        if self.selfcheck:
            problems = checker.check_invariants(self)
            if problems:
                shown = op_record(record)
                raise InvariantViolation(f"op {len(self.history)}: {shown}", problems)

    def mms(self) -> list[MmStruct]:
        return [p.mm for p in self.processes.values()]

    # --- the machine's own operations ---------------------------------------------------

    def spawn(self) -> Process:
        """A new process with an empty address space (what execve leaves)."""
        proc = Process(self, next(self._pids))
        with self.operation("spawn -> pid {}", proc.pid):
            self.processes[proc.pid] = proc
        return proc

    def unpin(self, pin: Pin) -> None:
        """put_page() on every page of a pin (ib_umem_release, vfio unpin)."""
        if pin.id not in self.pins:
            raise SyscallError("EINVAL", f"pin {pin.id} is not held")
        with self.operation("unpin {}", pin.id):
            del self.pins[pin.id]
            if pin.write:  # unpin_user_pages_dirty_lock(): the device may have written
                for pfn in pin.pages.tolist():
                    set_page_dirty(self.frames, pfn)
            release_pages(self, pin.pages, pin.gup_flags)

    def end_writeback(self) -> int:
        """Every swap write in flight completes (end_page_writeback); returns how many."""
        with self.operation("end_writeback"):
            return vmscan.end_writeback(self)

    def shrink_swapcache(self) -> int:
        """Memory pressure reclaims unmapped swap-cache pages; returns how many were freed."""
        with self.operation("shrink_swapcache"):
            return vmscan.shrink_swapcache(self)

    def khugepaged(self) -> int:
        """One full khugepaged pass over every process; returns how many THPs it made."""
        with self.operation("khugepaged"):
            return khugepaged.khugepaged_scan(self)

    def ksmd(self, scans: int = 1) -> int:
        """ksmd runs `scans` full passes; returns how many pages it merged."""
        with self.operation("ksmd({})", scans):
            return ksm.ksm_do_scan(self, scans)

    def split_huge_pages(self) -> int:
        """echo 1 > /sys/kernel/debug/split_huge_pages: try to split every THP."""
        with self.operation("split_huge_pages"):
            return huge_memory.split_huge_pages_all(self)

    def shrink_deferred_split(self) -> int:
        """Memory pressure runs the deferred-split shrinker over partly unmapped THPs."""
        with self.operation("shrink_deferred_split"):
            return huge_memory.deferred_split_scan(self)

    def check(self) -> list[str]:
        """Every broken counter or rmap invariant, now."""
        return checker.check_invariants(self)


ProcessMethod = Callable[Concatenate["Process", P], R]


def _op(fmt: str) -> Callable[[ProcessMethod[P, R]], ProcessMethod[P, R]]:
    """Run a Process method as one kernel operation described by fmt (formatted with its args)."""

    op_fmt = "pid {}: " + fmt + "({})"

    def wrap(fn: ProcessMethod[P, R]) -> ProcessMethod[P, R]:
        def inner(self: Process, /, *args: P.args, **kwargs: P.kwargs) -> R:
            if not self.alive:
                self._require_alive()
            k = self.kernel
            # its fields, not a CallRecord: a tuple of ints and bytes, which the collector
            # stops tracking (a CallRecord the COW log kept, one a page-by-page COW fault, cost
            # 0.6 us of it in full passes at 1 GiB), and quicker made
            record = (op_fmt, self.pid, args, kwargs or None)
            k.history.append(record)
            if not k.selfcheck:  # the common case: no check to run on any way out
                return fn(self, *args, **kwargs)
            try:
                result = fn(self, *args, **kwargs)
            except (SyscallError, Segfault):
                k._selfcheck(record)
                raise
            k._selfcheck(record)
            return result

        inner.__doc__ = fn.__doc__
        inner.__name__ = fn.__name__
        return inner

    return wrap


class Memset(bytes):
    """Bytes repeating one byte, `value` (a scenario's `data: {fill: N, size: N}`): a store of
    them is a memset, its whole pages one shared string, not sliced page by page. Shown and
    compared as the bytes they are."""

    value: int

    def __new__(cls, value: int, size: int) -> Memset:
        out = super().__new__(cls, bytes([value]) * size)
        out.value = value
        return out

    def __getnewargs__(self) -> tuple[int, int]:  # type: ignore[override]
        """What pickle and copy make it again from (bytes' own would be its bytes)."""
        return self.value, len(self)


@dataclass(eq=False)
class Pin:
    """The pages get_user_pages() returned, as the device (RDMA NIC, VFIO) holds them."""

    kernel: Kernel
    id: int
    pid: int
    addr: int
    length: int
    pages: IntArray  # the pfn of each 4 KiB page, in order
    write: bool
    flavour: str = "longterm"
    gup_flags: int = 0
    offset: int = field(init=False)

    def __post_init__(self) -> None:
        self.offset = self.addr % PAGE_SIZE

    def coherence_owed(self, pfn: int) -> bool:
        """Whether the pin, holding frame pfn, must go on seeing its process's later stores
        there: a DMA pin (FOLL_PIN, or the GUP reference a pre-5.7 driver took for one), but
        not a FOLL_GET reference (vmsplice: never promised; it may lag, not leak)."""
        return self.flavour != "get" and self.follows_stores(pfn)

    def follows_stores(self, pfn: int) -> bool:
        """Whether the pin's page pfn is owed its process's later stores at all, now or late:
        not a short-term R/O pin of the shared zero page (6.2's 84209e87c696: such a pin need
        not observe later changes; 5.19 made R/O pins of anonymous pages reliable)."""
        return self.write or self.flavour == "longterm" or not is_zero_pfn(self.kernel.frames, pfn)

    def _chunks(self, offset: int, n: int) -> Iterator[tuple[int, int, int, int]]:
        if offset < 0 or n < 0 or offset + n > self.length:
            raise SyscallError("EINVAL", f"DMA [{offset}, {offset + n}) outside pin {self.id}")
        pos = self.offset + offset
        done = 0
        while done < n:
            page, in_page = divmod(pos + done, PAGE_SIZE)
            chunk = min(n - done, PAGE_SIZE - in_page)
            yield int(self.pages[page]), in_page, done, chunk
            done += chunk

    def dma_write(self, offset: int, data: bytes) -> None:
        """The device writes into the pinned physical pages (an RDMA READ response lands)."""
        if not self.write:
            raise SyscallError("EFAULT", f"pin {self.id} is read-only: the device cannot write")
        if self.id not in self.kernel.pins:
            raise SyscallError("EINVAL", f"pin {self.id} was released")
        with self.kernel.operation("dma_write pin {} +{} {}", self.id, offset, data):
            for pfn, in_page, done, chunk in self._chunks(offset, len(data)):
                self.kernel.frames.write(pfn, in_page, data[done : done + chunk])

    def dma_read(self, offset: int, n: int) -> bytes:
        """The device reads the pinned physical pages (an RDMA WRITE sends them)."""
        if self.id not in self.kernel.pins:
            raise SyscallError("EINVAL", f"pin {self.id} was released")
        out = bytearray()
        with self.kernel.operation("dma_read pin {} +{} {}", self.id, offset, n):
            for pfn, in_page, _done, chunk in self._chunks(offset, n):
                out += self.kernel.frames.read(pfn, in_page, chunk)
        return bytes(out)


class Process:
    """A process: its mm and the system calls it makes. Addresses are plain ints."""

    def __init__(self, kernel: Kernel, pid: int, mm: MmStruct | None = None) -> None:
        self.kernel = kernel
        self.pid = pid
        self.mm = mm or MmStruct(pid)
        self.alive = True

    def __repr__(self) -> str:
        return f"Process(pid={self.pid})"

    def _require_alive(self) -> None:
        if not self.alive:
            raise SyscallError("ESRCH", f"pid {self.pid} has exited")

    # --- address space -------------------------------------------------------------------

    @_op("mmap")
    def mmap(
        self, length: int, prot: str | int = "rw", *, align: int = 0, addr: int | None = None
    ) -> int:
        """mmap(MAP_PRIVATE|MAP_ANONYMOUS); align gives an aligned start, addr means MAP_FIXED."""
        return mmap.do_mmap(self.kernel, self.mm, length, parse_prot(prot), align, addr)

    @_op("munmap")
    def munmap(self, addr: int, length: int) -> None:
        mmap.do_munmap(self.kernel, self.mm, addr, length)

    @_op("mprotect")
    def mprotect(self, addr: int, length: int, prot: str | int) -> None:
        mprotect.do_mprotect(self.kernel, self.mm, addr, length, parse_prot(prot))

    @_op("mremap")
    def mremap(
        self,
        addr: int,
        old_length: int,
        new_length: int,
        *,
        may_move: bool = False,
        fixed_addr: int | None = None,
    ) -> int:
        """mremap(); fixed_addr means MREMAP_MAYMOVE|MREMAP_FIXED to that address."""
        flags = mremap.mremap_flags(may_move, fixed_addr)
        return mremap.do_mremap(
            self.kernel, self.mm, addr, old_length, new_length, flags, fixed_addr
        )

    @_op("madvise")
    def madvise(self, addr: int, length: int, advice: str | int) -> None:
        """madvise(): 'dontneed', 'dontfork', 'dofork', 'hugepage', 'nohugepage' or MADV_*."""
        if isinstance(advice, str):
            if advice not in madvise.ADVICE:
                known = ", ".join(madvise.ADVICE)
                raise SyscallError("EINVAL", f"madvise: unknown advice {advice!r} ({known})")
            advice = madvise.ADVICE[advice]
        madvise.do_madvise(self.kernel, self.mm, addr, length, advice)

    @_op("clear_refs")
    def clear_refs(self, value: int = 4) -> None:
        """echo VALUE > /proc/PID/clear_refs (4 = soft-dirty: write-protect everything)."""
        task_mmu.clear_refs_write(self.kernel, self.mm, value)

    @_op("numa_balance")
    def numa_balance(self, addr: int, length: int) -> None:
        """task_numa_work's change_prot_numa over the range: the next touch takes a hint fault."""
        end = mmap.check_range(addr, length, "numa_balance")
        for vma in self.mm.vmas_in(addr, end):
            change_prot_numa(self.kernel, vma, max(addr, vma.vm_start), min(end, vma.vm_end))

    @_op("swapout")
    def swapout(self, addr: int, length: int, until: str = "freed") -> int:
        """MADV_PAGEOUT (5.4+), or the reclaim path before it, over the range, stopping each
        page at ``until``: 'swapcache', 'writeback', 'written' or 'freed' (vmscan.STAGES).
        Returns how many pages went to the swap cache."""
        if until not in vmscan.STAGES:
            stages = ", ".join(vmscan.STAGES)
            raise SyscallError("EINVAL", f"swapout: until {until!r} (expected one of {stages})")
        end = mmap.check_range(addr, length, "swapout")
        return vmscan.swapout_range(self.kernel, self.mm, addr, end, until)

    # --- processes -----------------------------------------------------------------------

    def fork(self) -> Process:
        """fork(): a child with a copy of the address space (dup_mmap)."""
        self._require_alive()
        k = self.kernel
        child = Process(k, next(k._pids))
        with k.operation("pid {}: fork() -> pid {}", self.pid, child.pid):
            dup_mmap(k, child.mm, self.mm)
            k.processes[child.pid] = child
        return child

    @_op("exit")
    def exit(self) -> None:
        """exit(): exit_mmap() tears the address space down. Pins belong to the device."""
        self._do_exit()

    def _do_exit(self) -> None:
        mmap.exit_mmap(self.kernel, self.mm)
        self.alive = False
        del self.kernel.processes[self.pid]

    def _fatal_signal(self) -> None:
        """SIGSEGV's default action (no handler is modelled): do_exit, so exit_mmap unmaps all."""
        detail = f"pid {self.pid}: SIGSEGV, default action: exit"
        self.kernel.event("force_sig_fault", "kill", rule="no handler is modelled", detail=detail)
        self._do_exit()

    # --- memory access -------------------------------------------------------------------

    @_op("write")
    def write(self, addr: int, data: bytes) -> None:
        """Store bytes, faulting page by page as the CPU does (Memset bytes as a fill does)."""
        self._copy(addr, len(data), data.value if isinstance(data, Memset) else data)

    @_op("fill")
    def fill(self, addr: int, length: int, value: int = 0) -> None:
        """memset(addr, value, length): one store operation over the whole range."""
        if not 0 <= value <= 255:
            raise SyscallError("EINVAL", f"fill: value {value} is not a byte (0..255)")
        self._copy(addr, length, value)

    @_op("read")
    def read(self, addr: int, n: int) -> bytes:
        """Load n bytes, faulting page by page (a read of untouched memory maps the zero page)."""
        return self._copy(addr, n, None)

    @_op("touch")
    def touch(self, addr: int, length: int, write: bool = False) -> None:
        """Fault every page of the range in for reading or writing, storing nothing
        (MADV_POPULATE_READ/WRITE as a program sees it; the bytes stay as they are)."""
        self._copy(addr, length, b"" if write else None, keep=True)

    def _copy(self, addr: int, n: int, data: bytes | int | None, keep: bool = False) -> bytes:
        """The CPU's access to [addr, addr + n): ``data`` bytes or a fill byte to store, None
        to load; ``keep`` faults without loading or storing. Runs of pages go through the range
        path (mm/range_fault.py) unless it is off or every event is traced."""
        k = self.kernel
        write = data is not None
        offset = addr % PAGE_SIZE
        if 0 < n <= PAGE_SIZE - offset and not isinstance(data, int):
            # within one page, bytes or a load (a page-by-page program's every call): one
            # access, stored as store() stores one page, without the loop's list and join
            pfn = self._access(addr, write, 0)
            return b"" if keep else store_page(k.frames, pfn, offset, n, data)
        batch = k.range_ops and n > RANGE_MIN_BYTES
        out: list[bytes] = []
        done = 0
        while done < n:
            va = addr + done
            pfns: IntArray | list[int] = (
                fault_in_range(k, self.mm, va, addr + n, write) if batch else NO_PAGES
            )
            if not len(pfns):
                pfns = [self._access(va, write, done)]
            chunk = min(n - done, len(pfns) * PAGE_SIZE - va % PAGE_SIZE)
            if not keep:
                out.append(store(k.frames, pfns, va % PAGE_SIZE, chunk, data, done))
            done += chunk
        return out[0] if len(out) == 1 else b"".join(out)

    def _access(self, addr: int, write: bool, done: int) -> int:
        """The MMU walk, with handle_mm_fault() until the entry allows the access. An access
        the VMA or the fault refuses is SIGSEGV, which kills the process (``done``: the bytes
        of the call made before)."""
        try:
            vma = self.mm.find_vma(addr)
            if vma is None or not access_permitted(vma, write):
                raise Segfault(addr, "write" if write else "read")
            for _ in range(MAX_FAULT_RETRIES):
                pfn = mmu_walk(self.mm, addr, write)
                if pfn is not None:
                    return pfn
                if handle_mm_fault(self.kernel, vma, addr, write) & VM_FAULT_SIGSEGV:
                    raise Segfault(addr, "write" if write else "read")
        except Segfault as e:
            self._fatal_signal()
            raise Segfault(e.addr, e.access, done, killed=True) from None
        raise KernelBug(f"fault at {addr:#x} does not settle after {MAX_FAULT_RETRIES} tries")

    def translate(self, addr: int) -> int | None:
        """The pfn addr maps now, without faulting (what /proc/PID/pagemap shows)."""
        entry = self.mm.pmds.get(pmd_index(addr))
        if isinstance(entry, HugePmd):
            return entry.pfn + pte_index(addr)
        if entry is None:
            return None
        i = pte_index(addr)
        pfn = int(entry.pfn[i])
        return None if pfn < 0 or entry.bits[i] & PTE_MIGRATION else pfn

    def peek(self, addr: int) -> bytes | None:
        """The 4 KiB page addr would read now, without faulting: a mapped page's bytes, or a
        swapped-out page's (from the swap cache or the device); None if nothing is there."""
        pfn = self.translate(addr)
        if pfn is not None:
            return self.kernel.frames.page_bytes(pfn)
        entry = self.mm.pmds.get(pmd_index(addr))
        if not isinstance(entry, PteTable):
            return None
        value = int(entry.pfn[pte_index(addr)])
        if not is_swap_pte(value):
            return None
        return self.kernel.swap.slot_bytes(self.kernel.frames, pte_to_swp_offset(value))

    # --- the device side -----------------------------------------------------------------

    def get_user_pages(
        self,
        addr: int,
        length: int,
        *,
        write: bool = True,
        force: bool = False,
        flavour: str = "longterm",
        fast: bool = False,
    ) -> Pin:
        """GUP as a device driver does it. flavour: 'get' (FOLL_GET: vmsplice, 4.x drivers),
        'pin' (FOLL_PIN: O_DIRECT) or 'longterm' (FOLL_PIN|FOLL_LONGTERM: RDMA, VFIO, io_uring
        fixed buffers); before 5.7 every flavour is a FOLL_GET reference."""
        self._require_alive()
        if flavour not in GUP_FLAVOURS:
            raise SyscallError("EINVAL", f"pin flavour {flavour!r} (expected get, pin or longterm)")
        k = self.kernel
        first = addr & ~(PAGE_SIZE - 1)
        nr = (addr + length - first + PAGE_SIZE - 1) // PAGE_SIZE
        if length <= 0:
            raise SyscallError("EINVAL", "get_user_pages: length must be positive")
        flags = (FOLL_WRITE if write else 0) | (FOLL_FORCE if force else 0) | GUP_FLAVOURS[flavour]
        pin_id = next(k._pin_ids)
        fmt = "pid {}: get_user_pages({}, {}, write={}, force={}) -> pin {}"
        with k.operation(fmt, self.pid, addr, length, write, force, pin_id):
            pages = get_user_pages(k, self.mm, first, nr, flags, fast)
            gup_flags = effective_gup_flags(k, flags)
            pin = Pin(k, pin_id, self.pid, addr, length, pages, write, flavour, gup_flags)
            k.pins[pin.id] = pin
        return pin


def store(
    f: PageFrames,
    pfns: IntArray | list[int],
    offset: int,
    n: int,
    data: bytes | int | None,
    at: int,
) -> bytes:
    """The bytes of one access to consecutive pages (frames pfns, from offset in the first):
    a load returns n bytes, a store writes data[at : at + n] or n fill bytes."""
    if isinstance(data, int):
        fill(f, np.asarray(pfns, dtype=np.int64), offset, n, data)
        return b""
    if len(pfns) == 1:
        pfn = pfns[0] if isinstance(pfns, list) else int(pfns[0])
        return store_page(f, pfn, offset, n, None if data is None else data[at : at + n])
    frames = pfns if isinstance(pfns, list) else pfns.tolist()
    if data is not None:
        _store_pages(f, frames, offset, n, data, at)
        return b""
    out = bytearray()
    pos = 0
    for pfn in frames:
        chunk = min(n - pos, PAGE_SIZE - offset)
        out += f.read(pfn, offset, chunk)
        pos += chunk
        offset = 0
    return bytes(out)


def store_page(f: PageFrames, pfn: int, offset: int, n: int, data: bytes | None) -> bytes:
    """The bytes of one access within frame pfn from offset: a load returns n bytes, a store
    writes data (n bytes)."""
    if data is None:
        return f.read(pfn, offset, n)
    f.write(pfn, offset, data)
    return b""


def _store_pages(f: PageFrames, pfns: list[int], offset: int, n: int, data: bytes, at: int) -> None:
    """data[at : at + n] into consecutive pages from offset in the first: a run of whole pages
    that get the same bytes (a fill pattern, a repeated buffer) is one write_pages()."""
    pos = 0
    run: list[int] = []
    last = b""
    for pfn in pfns:
        chunk = min(n - pos, PAGE_SIZE - offset)
        piece = data[at + pos : at + pos + chunk]
        if chunk < PAGE_SIZE or piece != last:
            if run:
                f.write_pages(run, last)
                run = []
            last = piece  # a repeated page: the same string, its hash known
        if chunk < PAGE_SIZE:
            f.write(pfn, offset, piece)
        else:
            run.append(pfn)
        pos += chunk
        offset = 0
    if run:
        f.write_pages(run, last)


def fill(f: PageFrames, pfns: IntArray, offset: int, n: int, value: int) -> None:
    """memset over consecutive pages: whole pages share one string, the edges are written."""
    i = 0
    if offset:
        head = min(n, PAGE_SIZE - offset)
        f.write(int(pfns[0]), offset, bytes([value]) * head)
        n, i = n - head, 1
    whole = n // PAGE_SIZE
    f.fill_pages(pfns[i : i + whole], value)
    if n % PAGE_SIZE:
        f.write(int(pfns[i + whole]), 0, bytes([value]) * (n % PAGE_SIZE))


def mmu_walk(mm: MmStruct, addr: int, write: bool) -> int | None:
    """The hardware page walk: the pfn if the entry permits the access (sets A/D bits).
    It runs twice a fault (before and on the retry): pmd_index and pte_index are written out."""
    entry = mm.pmds.get(addr >> PMD_SHIFT)
    i = (addr >> PAGE_SHIFT) & (HPAGE_PMD_NR - 1)
    if isinstance(entry, HugePmd):
        if entry.protnone or (write and not entry.write):
            return None
        entry.young = True
        entry.dirty |= write
        return entry.pfn + i
    if entry is None:
        return None
    pfn = entry.pfn_at[i]
    # pfn < 0 (none, swap): pte_access_permitted says no too, unasked and its bits unread; it
    # ends the first walk of every first-touch fault, where the call cost 3.5-5.7 % of the
    # fault (bench_faults --paired)
    if pfn < 0:
        return None
    bits = entry.bits_at[i]
    if not pte_access_permitted(pfn, bits, write):
        return None
    accessed = bits | PTE_YOUNG | (PTE_DIRTY if write else 0)
    if accessed != bits:
        entry.bits_at[i] = accessed
    return pfn


__all__ = ["HPAGE_PMD_NR", "Config", "CowEvent", "Kernel", "Pin", "Process"]
