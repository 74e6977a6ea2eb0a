"""The PTE an unshare fault maps its copy with (FAULT_FLAG_UNSHARE, c89357e27f20, 5.19).

Derived from wp_page_copy in the 5.19.0, 6.1.20, 6.2.1, 6.6.9, 6.9.0, 6.12.0, 6.14.0 and 6.18.2
trees (docs/timeline-sources.md, §0): a write's copy gets maybe_mkwrite(pte_mkdirty()), an
unshare's copy only vm_page_prot (read-only for a private mapping), the old PTE's soft-dirty bit
and nothing else — so it is clean, and soft-dirty only if the old PTE was. The three ways to an
unshare: a R/O FOLL_PIN of a shared anonymous page (5.19), a R/O long-term pin of the zero page
(6.2) and MADV_UNMERGEABLE on a KSM page (6.2). examples/timeline/5.19_unshare_copy_is_clean.yaml
shows what reads the bits (mprotect, swap-in).
"""

from __future__ import annotations

import pytest

from cowlab import Kernel, Process
from cowlab.kernel import Config
from cowlab.mm.constants import PG_anon_exclusive
from cowlab.mm.pgtable import PTE_DIRTY, PTE_SOFT_DIRTY, PTE_WRITE, PteTable
from cowlab.policy import POLICIES
from tests.releases import since
from tests.test_checker_breaks import ksm_pair

PAGE = 4096
UNSHARE_RO_PIN = [k for k in POLICIES if since(k, "5.19")]
UNSHARE_ZERO_AND_KSM = [k for k in POLICIES if since(k, "6.2")]


def bits_at(p: Process, addr: int) -> tuple[int, int]:
    table = p.mm.pmds[addr >> 21]
    assert isinstance(table, PteTable)
    i = (addr >> 12) & 511
    return int(table.pfn[i]), int(table.bits[i])


def assert_clean_read_only_copy(
    k: Kernel, p: Process, addr: int, old: int, soft_dirty: bool
) -> None:
    pfn, bits = bits_at(p, addr)
    assert pfn != old and k.frames.flags[pfn] & PG_anon_exclusive
    assert not bits & (PTE_WRITE | PTE_DIRTY)
    assert bool(bits & PTE_SOFT_DIRTY) is soft_dirty


@pytest.mark.parametrize("tracked", [False, True], ids=["old_pte_soft_dirty", "after_clear_refs"])
@pytest.mark.parametrize("kernel", UNSHARE_RO_PIN)
def test_a_read_only_pin_of_a_shared_page(kernel: str, tracked: bool) -> None:
    """The child's PTE after fork is P's, write-protected: dirty and soft-dirty from P's write,
    or neither soft-dirty nor writable after the child's clear_refs; the copy keeps exactly the
    soft-dirty bit."""
    k = Kernel(kernel, selfcheck=True, config=Config(soft_dirty=True))
    p = k.spawn()
    buf = p.mmap(4 * PAGE)
    p.write(buf, b"shared")
    child = p.fork()
    if tracked:
        child.clear_refs(4)
    old, old_bits = bits_at(child, buf)
    assert bool(old_bits & PTE_SOFT_DIRTY) is not tracked
    child.get_user_pages(buf, PAGE, write=False, flavour="pin")
    assert_clean_read_only_copy(k, child, buf, old, soft_dirty=not tracked)
    assert child.read(buf, 6) == b"shared"


@pytest.mark.parametrize("kernel", UNSHARE_ZERO_AND_KSM)
def test_a_long_term_read_pin_of_the_zero_page(kernel: str) -> None:
    """do_anonymous_page's zero PTE is special and never soft-dirty, so neither is the copy."""
    k = Kernel(kernel, selfcheck=True)
    p = k.spawn()
    buf = p.mmap(2 * PAGE)
    p.read(buf, 1)
    zero, _ = bits_at(p, buf)
    p.get_user_pages(buf, PAGE, write=False, flavour="longterm")
    assert_clean_read_only_copy(k, p, buf, zero, soft_dirty=False)


@pytest.mark.parametrize("kernel", UNSHARE_ZERO_AND_KSM)
def test_madv_unmergeable_of_a_ksm_page(kernel: str) -> None:
    """replace_page maps the KSM page by mk_pte(vm_page_prot): clean, not soft-dirty (6.2.1,
    6.18.2 mm/ksm.c); break_ksm's unshare copy inherits that."""
    s = ksm_pair(kernel)
    kpage, kbits = bits_at(s.p, s.addr)
    assert kpage == s.pfn and not kbits & PTE_SOFT_DIRTY
    s.p.madvise(s.addr, 2 * PAGE, "unmergeable")
    assert_clean_read_only_copy(s.k, s.p, s.addr, kpage, soft_dirty=False)
