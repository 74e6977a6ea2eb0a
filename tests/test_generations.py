"""One test per decision a generation changed, derived from the rules in docs/kernels.md."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest

from cowlab import Kernel
from cowlab.kernel import Config, Process
from cowlab.mm.constants import PG_anon_exclusive
from cowlab.mm.mm import GUP_PIN_COUNTING_BIAS, PageAnonExclusive, page_count
from cowlab.mm.mm_types import VmArea, pmd_index
from cowlab.mm.pgtable import PTE_WRITE, HugePmd, PteTable
from cowlab.policy import all_policies
from cowlab.policy.base import Policy, WpDecision, large_folios_only

THP = 2 << 20
POLICY_IDS = list(all_policies())


def thp(kernel_id: str) -> tuple[Kernel, Process, int]:
    k = Kernel(kernel_id, selfcheck=True)
    k.thp_enabled = "madvise"
    p = k.spawn()
    buf = p.mmap(THP, align=THP)
    p.madvise(buf, THP, "hugepage")
    p.write(buf, b"x")
    return k, p, buf


def entry(p: Process, addr: int) -> HugePmd | PteTable:
    return p.mm.pmds[pmd_index(addr)]


@pytest.mark.parametrize(
    ("kernel_id", "split"), [("v4.14", False), ("v5.8", True), ("v6.18", True)]
)
def test_shared_pmd_write_copies_2m_or_splits(kernel_id: str, split: bool) -> None:
    # 3917c80280c9 (5.8): a shared PMD is split and only the faulting 4 KiB copied
    k, p, buf = thp(kernel_id)
    p.fork()
    p.write(buf + 4096, b"y")
    assert isinstance(entry(p, buf), PteTable) is split
    copied = [e.nr for e in k.cow_log]
    assert copied == ([1] if split else [512])


def test_v58_read_pin_breaks_cow() -> None:
    # 17839856fd58: a read GUP on a COW mapping faults as a write, so the pin holds a private copy
    _k, p, buf = thp("v5.8")
    child = p.fork()
    pin = p.get_user_pages(buf, 4096, write=False)
    assert pin.pages[0] == p.translate(buf) != child.translate(buf)


@pytest.mark.parametrize(("kernel_id", "bias"), [("v5.8", GUP_PIN_COUNTING_BIAS), ("v4.14", 1)])
def test_foll_pin_counting(kernel_id: str, bias: int) -> None:
    # 5.7: FOLL_PIN adds GUP_PIN_COUNTING_BIAS to a small page; before, a pin is a reference
    k = Kernel(kernel_id, selfcheck=True)
    p = k.spawn()
    buf = p.mmap(4096)
    p.write(buf, b"x")
    p.get_user_pages(buf, 4096, flavour="longterm")
    assert page_count(k.frames, p.translate(buf) or 0) == 1 + bias


@pytest.mark.parametrize(
    ("kernel_id", "copied"), [("v5.8", False), ("v5.9", True), ("v5.19", True)]
)
def test_fork_copies_pinned_page_for_child(kernel_id: str, copied: bool) -> None:
    # 70e806e4e645 (5.9): the child gets its own copy of a maybe-pinned page; parent keeps it
    k = Kernel(kernel_id, selfcheck=True)
    p = k.spawn()
    buf = p.mmap(4096)
    p.write(buf, b"x")
    pin = p.get_user_pages(buf, 4096)
    child = p.fork()
    assert (child.translate(buf) != int(pin.pages[0])) is copied
    assert p.translate(buf) == pin.pages[0]


def test_v59_pinned_pmd_split_at_fork() -> None:
    # d042035eaf5f: a pinned PMD is split in the parent; every subpage is copied for the child
    k, p, buf = thp("v5.9")
    p.get_user_pages(buf, 4096)
    child = p.fork()
    assert isinstance(entry(p, buf), PteTable) and isinstance(entry(child, buf), PteTable)
    assert len([e for e in k.cow_log if e.function == "copy_present_page"]) == 512


@pytest.mark.parametrize(("kernel_id", "reuse"), [("v5.9", True), ("v5.18", False)])
def test_pinned_pmd_after_mprotect(kernel_id: str, reuse: bool) -> None:
    # 5.9-5.17 keep the PMD mapcount rule; 3bff7e3f1f16 (5.18): page_count == 1 or split
    _k, p, buf = thp(kernel_id)
    pin = p.get_user_pages(buf, 4096)
    p.mprotect(buf, THP, "r")
    p.mprotect(buf, THP, "rw")
    p.write(buf, b"y")
    assert (p.translate(buf) == int(pin.pages[0])) is reuse


def test_v519_exclusive_pinned_page_reused_after_mprotect() -> None:
    k, p, buf = thp("v5.19")
    pin = p.get_user_pages(buf, 4096)
    assert PageAnonExclusive(k.frames, pin.pages[0])
    p.mprotect(buf, THP, "r")
    p.mprotect(buf, THP, "rw")
    p.write(buf, b"y")
    assert p.translate(buf) == pin.pages[0] and k.cow_log == []


def test_v519_ro_pin_unshares_a_shared_page() -> None:
    # a7f226604170: a R/O FOLL_PIN of a shared anonymous page unshares it first (the PTE stays RO)
    k = Kernel("v5.19", selfcheck=True)
    p = k.spawn()
    buf = p.mmap(4096)
    p.write(buf, b"x")
    shared = p.translate(buf)
    child = p.fork()
    pin = p.get_user_pages(buf, 4096, write=False)
    assert child.translate(buf) == shared != pin.pages[0] == p.translate(buf)
    table = entry(p, buf)
    assert isinstance(table, PteTable) and not table.bits[(buf >> 12) & 511] & PTE_WRITE
    assert k.frames.flags[pin.pages[0]] & PG_anon_exclusive


@pytest.mark.parametrize(("kernel_id", "writable"), [("v5.19", False), ("v6.15", True)])
def test_mprotect_maps_exclusive_pages_writable(kernel_id: str, writable: bool) -> None:
    # 64fe24a3e05e (6.0) / 6.2: RW maps an exclusive anonymous page writable at once
    k = Kernel(kernel_id, selfcheck=True)
    p = k.spawn()
    buf = p.mmap(4096)
    p.write(buf, b"x")
    p.mprotect(buf, 4096, "r")
    p.mprotect(buf, 4096, "rw")
    table = entry(p, buf)
    assert isinstance(table, PteTable)
    assert bool(table.bits[(buf >> 12) & 511] & PTE_WRITE) is writable


@pytest.mark.parametrize("protected", [True, False])
@pytest.mark.parametrize("kernel_id", ["v4.5", "v6.18"])
def test_clear_refs_needs_mem_soft_dirty(kernel_id: str, protected: bool) -> None:
    # a build option on every release: without CONFIG_MEM_SOFT_DIRTY (this machine's 6.18 build)
    # clear_refs 4 is a no-op (fs/proc/task_mmu.c clear_soft_dirty is an empty stub)
    k = Kernel(kernel_id, Config(soft_dirty=protected), selfcheck=True)
    p = k.spawn()
    buf = p.mmap(4096)
    p.write(buf, b"x")
    p.clear_refs(4)
    table = entry(p, buf)
    assert isinstance(table, PteTable)
    assert (not table.bits[(buf >> 12) & 511] & PTE_WRITE) is protected


@pytest.mark.parametrize(("kernel_id", "splits"), [("v5.8", True), ("v6.15", False)])
def test_huge_zero_page_write(kernel_id: str, splits: bool) -> None:
    # 5.8 splits the huge zero PMD; 6.13 allocates a THP again
    k = Kernel(kernel_id, selfcheck=True)
    k.thp_enabled = "always"
    p = k.spawn()
    buf = p.mmap(THP, align=THP)
    p.read(buf, 1)
    p.write(buf, b"x")
    assert isinstance(entry(p, buf), PteTable) is splits


# after fork each page is mapped by both processes' PTEs: page_mapcount 2, page_count 2 (one
# reference a PTE), not exclusive, neither KSM nor in the swap cache
FORKED_PAGE_READS = {
    "v4.5": (("page_mapcount", 2),),
    "v5.9": (("PageKsm", 0), ("page_count", 2), ("page_mapcount", 2)),
    "v5.18": (("PageKsm", 0), ("PageSwapCache", 0), ("page_count", 2)),
    "v6.18": (("PageAnonExclusive", 0), ("PageKsm", 0), ("PageSwapCache", 0), ("page_count", 2)),
}


@pytest.mark.parametrize("kernel_id", FORKED_PAGE_READS)
def test_equal_decisions_are_one_object(kernel_id: str) -> None:
    """A page-by-page write after fork copies each page on the same values read: the COW log
    keeps one decision object for all of them (policy/base.py, DECISIONS_KEPT: one made a
    fault was most of what the garbage collector's full passes walked)."""
    k = Kernel(kernel_id, range_ops=False)
    k.thp_enabled = "never"
    p = k.spawn()
    buf = p.mmap(16 * 4096)
    for i in range(16):
        p.write(buf + i * 4096, b"a")
    p.fork()
    for i in range(16):
        p.write(buf + i * 4096, b"b")
    reasons = [e.reason for e in k.cow_log]
    assert len(reasons) == 16
    assert {r.read for r in reasons} == {FORKED_PAGE_READS[kernel_id]}
    assert not reasons[0].reuse
    assert len({id(r) for r in reasons}) == 1


def _small_reuse_mismatches(kernel_id: str) -> list[str]:
    """Small pages where wp_reuse_small (do_wp_page's question for them) and wp_reuse answer
    otherwise, in four states of 8 written pages: exclusive, shared with a child, also held by
    a R/O GUP reference (FOLL_GET), and after the child's exit. No page is in the swap cache or
    KSM: each call only reads."""
    k = Kernel(kernel_id)
    k.thp_enabled = "never"
    p = k.spawn()
    buf = p.mmap(8 * 4096)
    p.fill(buf, 8 * 4096, 1)
    vma, out = p.mm.find_vma(buf), []
    assert vma is not None

    def compare(when: str) -> None:
        for i in range(8):
            pfn = p.translate(buf + i * 4096)
            assert pfn is not None
            small, page = k.policy.wp_reuse_small(k, vma, pfn), k.policy.wp_reuse(k, vma, pfn)
            if small != page:
                out.append(f"{when} page {i}: {small} != {page}")

    compare("exclusive")
    child = p.fork()
    compare("shared")
    pin = p.get_user_pages(buf, 8 * 4096, write=False, flavour="get")
    compare("pinned")
    child.exit()
    compare("child gone")
    k.unpin(pin)
    return out


@pytest.mark.parametrize("kernel_id", POLICY_IDS)
def test_wp_reuse_small_is_wp_reuse(kernel_id: str) -> None:
    """A small page's verdict by wp_reuse_small (the newest change whose wp_reuse decides any
    page; 6.9 and 6.15 decide only large folios' pages, large_folios_only) is wp_reuse's, with
    the same reads."""
    assert _small_reuse_mismatches(kernel_id) == []


def test_a_small_page_rule_passed_by_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A later rule for small pages that wp_reuse_small would not reach (here: marked
    large_folios_only, or set on the class after it was made) differs on every page in each of
    the four states: 32."""
    cls = type(Kernel("v6.18").policy)
    inner = cls.wp_reuse

    @large_folios_only
    def later(self: Policy, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        return inner(self, k, vma, pfn)._replace(rule="a later release's rule")

    monkeypatch.setattr(cls, "wp_reuse", later)
    assert len(_small_reuse_mismatches("v6.18")) == 32


def test_a_change_stating_wp_reuse_decides_small_pages() -> None:
    """A change (or a user's patch) whose wp_reuse is not marked large_folios_only is asked for
    small pages too; a marked one is not."""

    class Later(type(Kernel("v6.18").policy)):  # type: ignore[misc]
        def wp_reuse(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
            return super().wp_reuse(k, vma, pfn)

    class LargeOnly(Later):
        @large_folios_only
        def wp_reuse(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
            return super().wp_reuse(k, vma, pfn)

    assert vars(Later)["wp_reuse_small"] is vars(Later)["wp_reuse"]
    assert "wp_reuse_small" not in vars(LargeOnly)
    assert LargeOnly.wp_reuse_small is vars(Later)["wp_reuse"]


ALWAYS_REUSE = WpDecision(True, False, False, (), "the patch: always reuse")


class _Helper:
    """A helper class of a user's patch, not a Policy: its wp_reuse is the patch's rule."""

    def wp_reuse(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        return ALWAYS_REUSE


class _Traced:
    """A decorator made as a class (an object, not a function, in the class body)."""

    def __init__(self, fn: Callable[..., WpDecision]) -> None:
        self.fn = fn

    def __get__(self, policy: object, owner: object = None) -> Callable[..., WpDecision]:
        return partial(self.fn, policy)


class _ByHelper(_Helper, Policy):
    pass


class _ByDecorator(Policy):
    @_Traced
    def wp_reuse(self, k: Kernel, vma: VmArea, pfn: int) -> WpDecision:
        return ALWAYS_REUSE


@pytest.mark.parametrize("patch", [_ByHelper, _ByDecorator])
def test_a_patch_stating_wp_reuse_otherwise_decides_small_pages(patch: type[Policy]) -> None:
    """A user's patch whose wp_reuse comes from a helper class or a decorator object is asked
    for small pages as for any page: its reuse of a page shared after fork is taken (v6.18
    would copy it: page_count 2)."""
    k = Kernel("v6.18")
    k.thp_enabled = "never"
    k.policy = type("Patched", (patch, type(k.policy)), {})()
    p = k.spawn()
    buf = p.mmap(4096)
    p.write(buf, b"a")
    p.fork()
    p.write(buf, b"b")
    assert list(k.cow_log) == []
