"""mm/rmap.c: anon_vma lifetime and linking, mapcount accounting, and the anonymous rmap walk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cowlab.errors import KernelBug
from cowlab.mm.constants import HPAGE_PMD_NR, PG_double_map, PG_swapbacked
from cowlab.mm.mm import PageDoubleMap, PageTransCompound, compound_head
from cowlab.mm.mm_types import AnonVma, MmStruct, VmArea, pmd_index, pte_index
from cowlab.mm.page_alloc import flags_without
from cowlab.mm.pgtable import PTE_MIGRATION, HugePmd

if TYPE_CHECKING:
    from cowlab.kernel import Kernel


# --- anon_vma -----------------------------------------------------------------------------


def anon_vma_alloc(k: Kernel) -> AnonVma:
    """anon_vma_alloc(): a new anon_vma that is its own root, degree 1 for its first VMA."""
    av = AnonVma(id=k.next_anon_vma_id())
    av.root = av
    av.parent = av
    k.anon_vmas[av.id] = av
    return av


def anon_vma_chain_link(vma: VmArea, av: AnonVma) -> None:
    vma.anon_vma_chain.append(av)
    av.vmas.add(vma)


def anon_vma_prepare(k: Kernel, vma: VmArea) -> None:
    """anon_vma_prepare(): give the VMA its own anon_vma at its first anonymous fault.

    4.5 first tries find_mergeable_anon_vma() on the neighbours; the model's neighbours were
    already merged by vma_merge at mmap time, so a fresh anon_vma is what that search yields.
    """
    if vma.anon_vma is not None:
        return
    av = anon_vma_alloc(k)
    vma.anon_vma = av
    anon_vma_chain_link(vma, av)


def anon_vma_clone(dst: VmArea, src: VmArea) -> None:
    """anon_vma_clone(): link dst into every anon_vma src is linked into.

    From a fork (dst.anon_vma is None) it may adopt an ancestor anon_vma of degree < 2, one no
    VMA uses any more (the 3.19 reuse heuristic, 7a3ef208e662).
    """
    for av in list(src.anon_vma_chain):  # oldest first, as the kernel's reverse list walk
        anon_vma_chain_link(dst, av)
        if dst.anon_vma is None and av is not src.anon_vma and av.degree < 2:
            dst.anon_vma = av
    if dst.anon_vma is not None:
        dst.anon_vma.degree += 1


def anon_vma_fork(k: Kernel, vma: VmArea, pvma: VmArea) -> None:
    """anon_vma_fork(): clone the parent's chain, then a fresh anon_vma child of the parent's."""
    if pvma.anon_vma is None:
        return
    vma.anon_vma = None
    vma.anon_vma_chain = []
    anon_vma_clone(vma, pvma)
    if vma.anon_vma is not None:
        return
    av = anon_vma_alloc(k)
    parent = pvma.anon_vma
    av.root = parent.root
    av.parent = parent
    vma.anon_vma = av
    anon_vma_chain_link(vma, av)
    parent.degree += 1


def unlink_anon_vmas(k: Kernel, vma: VmArea) -> None:
    """unlink_anon_vmas(): drop the VMA from every tree; free anon_vmas left empty."""
    if vma.anon_vma is not None:
        vma.anon_vma.degree -= 1
    for av in vma.anon_vma_chain:
        av.vmas.discard(vma)
    for av in vma.anon_vma_chain:
        if not av.vmas and av.degree <= 0 and av.id in k.anon_vmas:
            if av.parent is not None and av.parent is not av:
                av.parent.degree -= 1
            del k.anon_vmas[av.id]
    vma.anon_vma_chain = []


def page_anon_vma(k: Kernel, pfn: int) -> AnonVma | None:
    """page_anon_vma(): the anon_vma in the compound head's mapping."""
    return k.anon_vmas.get(int(k.frames.mapping[compound_head(k.frames, pfn)]))


# --- mapcounts ----------------------------------------------------------------------------


def __page_set_anon_rmap(k: Kernel, pfn: int, vma: VmArea, addr: int, exclusive: bool) -> None:
    """__page_set_anon_rmap(): first mapping sets mapping and index (the root when shared)."""
    f = k.frames
    if f.mapping[pfn]:
        return
    assert vma.anon_vma is not None and vma.anon_vma.root is not None
    av = vma.anon_vma if exclusive else vma.anon_vma.root
    f.mapping[pfn] = av.id
    f.index[pfn] = vma.linear_page_index(addr)


def page_add_new_anon_rmap(k: Kernel, pfn: int, vma: VmArea, addr: int, compound: bool) -> None:
    """page_add_new_anon_rmap(): a freshly allocated page's first mapping (PTE or PMD)."""
    f = k.frames
    f.flags[pfn] |= PG_swapbacked
    if compound:
        f.compound_mapcount[pfn + 1] = 0
    else:
        f._mapcount[pfn] = 0
    __page_set_anon_rmap(k, pfn, vma, addr, exclusive=True)


def page_add_anon_rmap(k: Kernel, pfn: int, vma: VmArea, addr: int, compound: bool) -> None:
    """page_add_anon_rmap(): one more mapping of a page that may already be anonymous."""
    f = k.frames
    if compound:
        f.compound_mapcount[pfn + 1] += 1
    else:
        f._mapcount[pfn] += 1
    __page_set_anon_rmap(k, compound_head(f, pfn), vma, addr, exclusive=False)


def page_dup_rmap(k: Kernel, pfn: int, compound: bool) -> None:
    """page_dup_rmap(): fork's +1 on the compound mapcount (PMD) or the subpage's _mapcount."""
    if compound:
        k.frames.compound_mapcount[pfn + 1] += 1
    else:
        k.frames._mapcount[pfn] += 1


def page_remove_rmap(k: Kernel, pfn: int, compound: bool) -> None:
    """page_remove_rmap(): -1 mapping; a THP subpage reaching -1 queues the THP for splitting."""
    f = k.frames
    if compound:
        page_remove_anon_compound_rmap(k, pfn)
        return
    f._mapcount[pfn] -= 1
    if f._mapcount[pfn] >= 0:
        return
    if f._mapcount[pfn] < -1:
        raise KernelBug(f"page_remove_rmap: _mapcount of pfn {pfn:#x} below -1")
    if PageTransCompound(f, pfn):
        deferred_split_huge_page(k, compound_head(f, pfn))


def page_remove_anon_compound_rmap(k: Kernel, head: int) -> None:
    """page_remove_anon_compound_rmap(): -1 PMD map; the last one undoes the DoubleMap offset."""
    f = k.frames
    f.compound_mapcount[head + 1] -= 1
    if f.compound_mapcount[head + 1] >= 0:
        return
    nr = HPAGE_PMD_NR
    if PageDoubleMap(f, head):
        f.flags[head + 1] &= flags_without(PG_double_map)
        f._mapcount[head : head + HPAGE_PMD_NR] -= 1
        nr = int((f._mapcount[head : head + HPAGE_PMD_NR] == -1).sum())
    if nr:
        deferred_split_huge_page(k, head)


def page_move_anon_rmap(k: Kernel, pfn: int, vma: VmArea, addr: int) -> None:
    """page_move_anon_rmap(): make vma's own anon_vma the page's (4.5, with its index check).

    4.5's VM_BUG_ON compares the passed page's index with the faulting address; passing a THP
    head with a tail's address trips it under CONFIG_DEBUG_VM (fixed by 0798d3c022dc).
    """
    f = k.frames
    assert vma.anon_vma is not None
    if k.config.debug_vm and int(f.index[pfn]) != vma.linear_page_index(addr):
        raise KernelBug(
            f"VM_BUG_ON_PAGE(page->index != linear_page_index) in page_move_anon_rmap: "
            f"pfn {pfn:#x} index {int(f.index[pfn])} vs {vma.linear_page_index(addr)}"
        )
    f.mapping[pfn] = vma.anon_vma.id


def deferred_split_huge_page(k: Kernel, head: int) -> None:
    """deferred_split_huge_page(): queue a partly unmapped THP for the split shrinker."""
    k.deferred_split.add(head)


# --- the rmap walk ------------------------------------------------------------------------


@dataclass(frozen=True)
class Mapping:
    """One virtual mapping of a page: a PMD (``pfn`` is the head) or a PTE of ``pfn``."""

    mm: MmStruct
    vma: VmArea
    addr: int
    pfn: int
    pmd: bool


def mappings_in_vma(k: Kernel, vma: VmArea, head: int, nr: int) -> list[Mapping]:
    """What vma maps of pages head..head+nr-1 at the addresses their index gives."""
    f = k.frames
    found: list[Mapping] = []
    first = int(f.index[head])
    lo = max(first, vma.vm_pgoff)
    hi = min(first + nr, vma.vm_pgoff + vma.pages)
    pgoff = lo
    while pgoff < hi:
        addr = vma.vma_address(pgoff)
        entry = vma.mm.pmds.get(pmd_index(addr))
        if isinstance(entry, HugePmd):
            if entry.pfn == head and not entry.huge_zero:
                found.append(Mapping(vma.mm, vma, addr & ~((HPAGE_PMD_NR << 12) - 1), head, True))
            pgoff += HPAGE_PMD_NR - pte_index(addr)
            continue
        if entry is not None:
            i = pte_index(addr)
            pfn = head + (pgoff - first)
            if entry.pfn[i] == pfn and not entry.bits[i] & PTE_MIGRATION:
                found.append(Mapping(vma.mm, vma, addr, pfn, False))
        pgoff += 1
    return found


def rmap_walk_anon(k: Kernel, head: int) -> list[Mapping]:
    """rmap_walk_anon(): every mapping reachable from the page's anon_vma interval tree."""
    av = page_anon_vma(k, head)
    if av is None:
        return []
    nr = HPAGE_PMD_NR if PageTransCompound(k.frames, head) else 1
    found: list[Mapping] = []
    for vma in sorted(av.vmas, key=lambda v: (v.mm.pid, v.vm_start)):
        found.extend(mappings_in_vma(k, vma, head, nr))
    return found
