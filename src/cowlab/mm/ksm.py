"""mm/ksm.c: MADV_MERGEABLE memory, ksmd's full scans and merging identical anonymous pages into
read-only KSM pages (docs/sources-ksm.md).

A KSM page is a small anonymous page with PG_ksm whose page->mapping is its stable node (the
model stores -node id, so PageAnon() still holds), or NULL_STABLE_NODE between the two merges of
try_to_merge_two_pages and after a failed second one. The stable node lists the rmap_items (mm,
address, anon_vma) merged into it; rmap_walk_ksm finds every mapping through those anon_vmas,
forked children included (not the mappings a swap-in makes where ksmd dropped the address's item:
KsmState.unreached). The unstable tree (pages unchanged for one pass) is rebuilt each pass;
it is a red-black tree ordered by the pages' bytes (ksm_tree.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from cowlab.mm import huge_memory
from cowlab.mm.constants import (
    PAGE_SIZE,
    VM_MERGEABLE,
    PG_anon_exclusive,
    PG_dirty,
    PG_head,
    PG_ksm,
    PG_swapcache,
    PG_tail,
)
from cowlab.mm.ksm_tree import RbTree
from cowlab.mm.memory import handle_mm_fault
from cowlab.mm.mm import PageAnon, PageKsm, compound_head, get_page, page_count, put_page
from cowlab.mm.mm_types import AnonVma, MmStruct, VmArea, pmd_index, pte_index
from cowlab.mm.page_alloc import ZERO_PFN, flags_without
from cowlab.mm.pgtable import (
    PTE_DIRTY,
    PTE_MIGRATION,
    PTE_PROTNONE,
    PTE_SOFT_DIRTY,
    PTE_SPECIAL,
    PTE_WRITE,
    PTE_YOUNG,
    HugePmd,
    PteTable,
    pte_without,
)
from cowlab.mm.rmap import (
    Mapping,
    mappings_in_vma,
    page_anon_vma,
    page_remove_rmap,
    rmap_add_ptes,
    rmap_walk_anon,
)
from cowlab.mm.swapfile import try_to_free_swap

if TYPE_CHECKING:
    from cowlab.kernel import Kernel

# page->mapping of a KSM page whose stable node is NULL (set_page_stable_node(page, NULL)): no
# node id, and not 0, which would make the page not anonymous
NULL_STABLE_NODE = int(np.iinfo(np.int32).min)


@dataclass(eq=False)
class RmapItem:
    """struct ksm_rmap_item: one virtual page ksmd looks at, and its last checksum."""

    pid: int
    addr: int
    anon_vma: AnonVma | None = None
    oldchecksum: bytes | None = None
    node: int = 0  # the stable node it is merged into, 0 for none


@dataclass(eq=False)
class StableNode:
    """struct ksm_stable_node: one KSM page and the rmap_items merged into it."""

    id: int
    kpfn: int
    items: list[RmapItem] = field(default_factory=list)


@dataclass
class KsmState:
    """ksmd's rmap_items and stable tree, and full_scans (the knobs are Kernel attributes).
    `unreached` holds the (pid, address) pairs where a KSM page is mapped that no rmap_item
    reaches, so rmap_walk_ksm misses them (swapped_in, ksm_fork, _out_of_reach, ksm_moved,
    _strand; a KSM page whose stable node is NULL is out of reach whole); a pair leaves when
    ksmd hangs an item there (_append), or at its next pass once the address maps no KSM page
    (_prune)."""

    items: dict[tuple[int, int], RmapItem] = field(default_factory=dict)
    nodes: dict[int, StableNode] = field(default_factory=dict)
    unreached: set[tuple[int, int]] = field(default_factory=set)
    next_id: int = 1
    full_scans: int = 0

    def drop(self, node_id: int) -> None:
        """remove_node_from_stable_tree(): the KSM page was freed."""
        node = self.nodes.pop(node_id, None)
        for item in node.items if node else []:
            item.node, item.anon_vma = 0, None


def checksum(k: Kernel, pfn: int) -> bytes:
    """calc_checksum(): a digest of the page's bytes."""
    return checksum_of(k.frames.page_bytes(pfn))


def checksum_of(page: bytes) -> bytes:
    """The checksum of a page holding these bytes (zeros after them)."""
    import hashlib  # here: its import (7 ms) is paid by the runs that hash a page

    return hashlib.blake2b(page.ljust(PAGE_SIZE, b"\0"), digest_size=8).digest()


def stable_node_of(k: Kernel, pfn: int) -> StableNode | None:
    """page_stable_node(): the KSM page's stable node."""
    node_id = -int(k.frames.mapping[compound_head(k.frames, pfn)])
    return k.ksm.nodes.get(node_id)


def walk_reaches(node: StableNode, vma: VmArea, addr: int) -> bool:
    """rmap_walk_ksm() visits addr in vma: an rmap_item of the node at addr whose anon_vma's
    interval tree holds the VMA (first round: the item's own mm; second: another, forked from
    it since ksmd passed). The same in 4.5.0 and 6.18.2 mm/ksm.c."""
    return any(
        i.addr == addr and i.anon_vma is not None and vma in i.anon_vma.vmas for i in node.items
    )


def swapped_in(k: Kernel, vma: VmArea, addr: int, pfn: int) -> None:
    """do_swap_page() mapped the KSM page pfn at addr as it is: ksm_might_need_to_copy() keeps a
    KSM page that has a stable node (4.5.0, 6.18.2 mm/ksm.c). If ksmd dropped this address's
    rmap_item while it held a swap PTE (get_next_rmap_item frees the items of the addresses it
    passes without a page, remove_trailing_rmap_items those after the last; 4.5.0, 6.18.2) and
    no other item reaches the VMA there, rmap_walk_ksm misses the mapping until ksmd visits the
    address again."""
    _note_reach(k, vma, addr, pfn)


def ksm_might_need_to_copy(k: Kernel, vma: VmArea, addr: int, page: int) -> int:
    """ksm_might_need_to_copy(): the page do_swap_page() found in the swap cache, or a private
    copy of it for this mapping (dirty, not in the swap cache, counted as ksm_swpin_copy). A
    KSM page is copied where its stable node is NULL (or while ksmd unmerges everything,
    KSM_RUN_UNMERGE: no model step writes 2 to run); another anonymous page where this VMA's
    anon_vma root or this address's linear index is not the page's: a swap slot a KSM page
    shared comes back as a plain page, mapped as it is only where its first swap-in mapped it
    (4.5.0, 5.10.7, 6.1.20, 6.18.2 mm/ksm.c; the counter from the 5.18 tree, the model's on
    every release). From 6.8 a large folio is returned as it is (ksm_swapin_large_as_is);
    before (4.14.177, 5.10.7, 6.1.20, 6.6.9, 6.7.3) the page of a THP in the swap cache is
    tested as a small page: the head by the index __page_set_anon_rmap gave it, a tail by its
    own ->index, which no path sets (4.14-6.1: the second tail's holds the deferred-split
    list's prev pointer; 6.6-6.7: the first tail's the pin count and folio size; the rest
    stale from the frame's last use): a tail is copied (docs/sources-ksm.md §4)."""
    f = k.frames
    if f.flags.item(page) & (PG_head | PG_tail):
        if k.policy.ksm_swapin_large_as_is or (
            not f.flags.item(page) & PG_tail and anon_in_place(k, vma, addr, page)
        ):
            return page
    elif f.flags.item(page) & PG_ksm:
        if stable_node_of(k, page) is not None:
            return page
    elif anon_in_place(k, vma, addr, page):
        return page
    new = f.alloc_page()
    f.copy_page(new, page)
    f.flags[new] |= PG_dirty
    k.vmstat["ksm_swpin_copy"] += 1
    if k.tracing:
        rule = (
            "a THP's tail page: its own ->index is not the linear index"
            if f.flags.item(page) & PG_tail
            else "PageKsm without a stable node, or another anon_vma root or linear index"
        )
        k.event("ksm_might_need_to_copy", "copy", addr=addr, pfn=page, rule=rule)
    return new


def anon_in_place(k: Kernel, vma: VmArea, addr: int, page: int) -> bool:
    """ksm_might_need_to_copy()'s test of a page that is not KSM: it may be mapped at addr as
    it is - it has no anon_vma yet, or its anon_vma's root is the VMA's and its index is
    addr's linear page index."""
    av = page_anon_vma(k, page)
    if av is None:
        return True
    assert vma.anon_vma is not None and av.root is not None and vma.anon_vma.root is not None
    same_root = av.root.id == vma.anon_vma.root.id
    return same_root and int(k.frames.index[page]) == vma.linear_page_index(addr)


def _note_reach(k: Kernel, vma: VmArea, addr: int, pfn: int) -> None:
    """List (pid, addr) in `unreached` unless an rmap_item of the KSM page's stable node
    reaches the mapping (the pair discarded then: an older pair must not hide a later miss)."""
    node = stable_node_of(k, pfn)
    if node is None or not walk_reaches(node, vma, addr):
        k.ksm.unreached.add((vma.mm.pid, addr))
    else:
        k.ksm.unreached.discard((vma.mm.pid, addr))


def ksm_moved(k: Kernel, vma: VmArea, old_addr: int, new_addr: int, length: int) -> None:
    """move_vma() moved the PTEs of [old_addr, +length) to new_addr in vma. KSM pages move with
    them where the old VMA lacks VM_MERGEABLE (its ksm_madvise(MADV_UNMERGEABLE) is ignored:
    4.5.0 and 6.18.2 mm/mremap.c, mm/ksm.c), and rmap_walk_ksm looks for a page at its
    rmap_items' addresses, none of them new_addr: the moved mapping is out of its reach."""
    mm = vma.mm
    moved = [a for pid, a in k.ksm.unreached if pid == mm.pid and 0 <= a - old_addr < length]
    k.ksm.unreached.difference_update((mm.pid, a) for a in moved)
    for addr in range(new_addr, new_addr + length, PAGE_SIZE):
        pfn = _mapped_page(mm, addr)
        if pfn is not None and PageKsm(k.frames, pfn):
            _note_reach(k, vma, addr, pfn)


def ksm_fork(k: Kernel, child: MmStruct, parent: MmStruct) -> None:
    """The child's copy (copy_present_pte) of a mapping no rmap_item reaches is out of reach
    too: fork copies no rmap_items (the note above remove_trailing_rmap_items, 4.5.0 and 6.18.2
    mm/ksm.c), and the child's VMA joins the trees of its parent VMA's anon_vmas
    (anon_vma_clone) and of its own new or reused one (anon_vma_fork), none of which an item at
    that address holds (4.5.0, 6.18.2 mm/rmap.c)."""
    for addr in [addr for pid, addr in k.ksm.unreached if pid == parent.pid]:
        pfn = _mapped_page(child, addr)
        if pfn is not None and PageKsm(k.frames, pfn):
            k.ksm.unreached.add((child.pid, addr))


# --- MADV_MERGEABLE / MADV_UNMERGEABLE ----------------------------------------------------


def ksm_madvise(k: Kernel, mm: MmStruct, start: int, end: int, merge: bool) -> None:
    """ksm_madvise(): set VM_MERGEABLE, or break every KSM page of the range and clear it. A
    VMA without VM_MERGEABLE ignores MADV_UNMERGEABLE, whatever it maps: a parent's PTE of a
    page its child merged stays (4.5.0, 6.18.2 mm/ksm.c)."""
    from cowlab.mm.mmap import vma_modify_flags

    if not merge:
        for vma in mm.vmas_in(start, end):
            if vma.vm_flags & VM_MERGEABLE and vma.anon_vma:
                unmerge_ksm_pages(k, vma, max(start, vma.vm_start), min(end, vma.vm_end))
    vma_modify_flags(k, mm, start, end, lambda f: f | VM_MERGEABLE if merge else f & ~VM_MERGEABLE)


def unmerge_ksm_pages(k: Kernel, vma: VmArea, start: int, end: int) -> None:
    """unmerge_ksm_pages(): break_ksm() at every address of the range."""
    for addr in range(start, end, PAGE_SIZE):
        break_ksm(k, vma, addr)


def break_ksm(k: Kernel, vma: VmArea, addr: int) -> None:
    """break_ksm(): where a KSM page is mapped, a write fault (6.2: an unshare fault, leaving a
    read-only private copy) makes this mapping a page of its own; from 6.6 a zero page KSM
    placed (is_ksm_zero_pte: the zero pfn, dirty) too."""
    unshare = k.policy.ksm_unmerge_unshares
    pfn = _mapped_page(vma.mm, addr)
    if pfn is not None and PageKsm(k.frames, pfn):
        handle_mm_fault(k, vma, addr, write=not unshare, unshare=unshare)
        k.event("break_ksm", addr=addr, pfn=pfn, detail="the KSM page is copied here")
    elif k.policy.ksm_zero_pages_marked and _is_ksm_zero_pte(vma.mm, addr):
        handle_mm_fault(k, vma, addr, write=False, unshare=True)
        k.event("break_ksm", addr=addr, detail="the KSM-placed zero page is unshared here")


def _is_ksm_zero_pte(mm: MmStruct, addr: int) -> bool:
    """is_ksm_zero_pte() (6.6): the zero pfn with the dirty bit only replace_page sets."""
    table = mm.pmds.get(pmd_index(addr))
    if not isinstance(table, PteTable):
        return False
    i = pte_index(addr)
    return int(table.pfn[i]) == ZERO_PFN and bool(table.bits[i] & PTE_DIRTY)


# --- ksmd ---------------------------------------------------------------------------------


def ksm_do_scan(k: Kernel, scans: int = 1) -> int:
    """ksmd: `scans` full passes over every mergeable VMA; returns the pages merged."""
    merged = 0
    for _ in range(scans):
        unstable: RbTree[RmapItem] = RbTree()  # emptied at the start of every pass
        _prune(k)
        for proc in sorted(k.processes.values(), key=lambda p: p.pid):
            for vma in list(proc.mm.vmas):
                if vma in proc.mm.vmas and vma.vm_flags & VM_MERGEABLE and vma.anon_vma:
                    merged += _scan_vma(k, vma, unstable)
        k.ksm.full_scans += 1
    return merged


def _scan_vma(k: Kernel, vma: VmArea, unstable: RbTree[RmapItem]) -> int:
    merged = 0
    for addr in range(vma.vm_start, vma.vm_end, PAGE_SIZE):
        pfn = _mapped_page(vma.mm, addr)
        if pfn is None or not PageAnon(k.frames, pfn):
            continue
        item = k.ksm.items.setdefault((vma.mm.pid, addr), RmapItem(vma.mm.pid, addr))
        merged += cmp_and_merge_page(k, vma, addr, pfn, item, unstable)
    return merged


def cmp_and_merge_page(
    k: Kernel, vma: VmArea, addr: int, pfn: int, item: RmapItem, unstable: RbTree[RmapItem]
) -> int:
    """cmp_and_merge_page(): join a KSM page with the same bytes (6.11+: only once the page is
    unchanged for a pass), else merge with an unchanged page of the unstable tree, else go
    into it. Returns 1 for a page merged. A zero-filled page with use_zero_pages is tried
    against the zero page right after the checksum test (4.14.177, 6.9.0), which 6.11 moved
    before the stable-tree search (6.11.11 try_to_merge_with_zero_page); if that merge fails
    the page goes on (all of them). A failed merge with a stable KSM page ends the page's turn
    (_merge_with_stable)."""
    f = k.frames
    node = stable_node_of(k, pfn) if PageKsm(f, pfn) else None
    if node is not None:
        _append(k, node, item, vma)
        return 0
    _leave(k, item)  # remove_rmap_item_from_tree(): the page here is no longer that KSM page
    digest = checksum(k, pfn)
    stable_first = not k.policy.ksm_checksum_before_stable
    if stable_first and (merged := _merge_with_stable(k, vma, addr, pfn, item, digest)) is not None:
        return merged
    if item.oldchecksum != digest:
        item.oldchecksum = digest
        k.event("cmp_and_merge_page", "volatile", addr=addr, pfn=pfn, rule="checksum changed")
        return 0
    if k.ksm_use_zero_pages and not f.content[pfn] and _merge_with_zero_page(k, vma, addr, pfn):
        return 1
    if (
        not stable_first
        and (merged := _merge_with_stable(k, vma, addr, pfn, item, digest)) is not None
    ):
        return merged
    other = unstable_tree_search_insert(k, unstable, item, pfn)
    if other is None:
        return 0
    return try_to_merge_two_pages(k, vma, addr, pfn, item, other, unstable)


def unstable_tree_search_insert(
    k: Kernel, tree: RbTree[RmapItem], item: RmapItem, pfn: int
) -> RmapItem | None:
    """unstable_tree_search_insert(): the rmap_item of a page with the same bytes, found by
    memcmp from the root (ksm_tree.py); else the page goes into the tree where the search
    ended. A node whose page get_mergeable_page() no longer finds, or that is this very page
    (forked), ends the search with nothing found and nothing inserted."""
    data = k.frames.page_bytes(pfn)
    ended = ""

    def compare(node: RmapItem) -> int | None:
        nonlocal ended
        tree_pfn = get_mergeable_page(k, node)
        if tree_pfn is None or tree_pfn == pfn:
            ended = "a page no longer there" if tree_pfn is None else "this page (forked)"
            return None
        other = k.frames.page_bytes(tree_pfn)
        return (data > other) - (data < other)

    found, parent, side = tree.walk(compare)
    if found is not None:
        return found.item
    if ended:
        k.event("unstable_tree_search_insert", "stop", pfn=pfn, rule=f"the search met {ended}")
        return None
    tree.insert(item, parent, side)
    return None


def get_mergeable_page(k: Kernel, item: RmapItem) -> int | None:
    """get_mergeable_page(): the anonymous page mapped at the rmap_item's address now."""
    pfn = _page_of(k, item)
    return pfn if pfn is not None and PageAnon(k.frames, pfn) else None


def _merge_with_stable(
    k: Kernel, vma: VmArea, addr: int, pfn: int, item: RmapItem, digest: bytes
) -> int | None:
    """stable_tree_search(): a KSM page with these bytes and room for one more sharer (a full
    chain is no match: the page goes on to the unstable tree). Returns None where there is
    none, else what cmp_and_merge_page returns: 1 merged, 0 when the merge failed - it returns
    then, before the checksum test and the unstable tree (4.5.0, 5.10.7, 6.1.20, 6.18.2
    mm/ksm.c cmp_and_merge_page: the page is neither rechecksummed nor inserted)."""
    for node in k.ksm.nodes.values():
        full = k.policy.ksm_max_page_sharing and len(node.items) >= k.ksm_max_page_sharing
        if full or checksum(k, node.kpfn) != digest:
            continue
        if try_to_merge_one_page(k, vma, addr, pfn, node.kpfn):
            _append(k, node, item, vma)
            return 1
        rule = "the merge with the stable KSM page failed: cmp_and_merge_page returns"
        k.event("cmp_and_merge_page", "stop", addr=addr, pfn=pfn, rule=rule)
        return 0
    return None


def try_to_merge_two_pages(
    k: Kernel,
    vma: VmArea,
    addr: int,
    pfn: int,
    item: RmapItem,
    other: RmapItem,
    unstable: RbTree[RmapItem],
) -> int:
    """try_to_merge_two_pages(): the scanned page becomes the KSM page, the unstable tree's page
    is replaced by it and leaves the tree, and stable_tree_insert() gives the KSM page its
    stable node. If the second merge fails, break_cow() breaks only the scanned mapping
    (break_ksm) and no node is inserted: a PTE that shares the page by fork keeps a KSM page
    whose stable node is NULL (4.5.0, 5.10.7, 6.1.20, 6.18.2 mm/ksm.c), which rmap_walk_ksm
    leaves at once and a write fault copies."""
    if not try_to_merge_one_page(k, vma, addr, pfn, None):
        return 0
    pfn = _page_of(k, item) or pfn  # a THP was split (the same frame, now a small page)
    mapped = _mappings_before_node(k, pfn)
    k.frames.mapping[pfn] = NULL_STABLE_NODE  # set_page_stable_node(page, NULL)
    other_vma = k.processes[other.pid].mm.find_vma(other.addr)
    other_pfn = _page_of(k, other)
    if not (
        other_vma and other_pfn and try_to_merge_one_page(k, other_vma, other.addr, other_pfn, pfn)
    ):
        rule = "the second page's merge failed: break_cow() breaks the first"
        k.event("try_to_merge_two_pages", "fail", addr=addr, pfn=pfn, rule=rule)
        break_ksm(k, vma, addr)
        return 0
    unstable.erase(other)  # try_to_merge_with_ksm_page -> remove_rmap_item_from_tree
    node = StableNode(k.ksm.next_id, pfn)  # stable_tree_insert()
    k.ksm.next_id += 1
    k.ksm.nodes[node.id] = node
    k.frames.mapping[pfn] = -node.id
    _append(k, node, item, vma)
    _append(k, node, other, other_vma)
    _out_of_reach(k, node, mapped)
    k.event("try_to_merge_two_pages", "merge", addr=addr, pfn=pfn, detail="a new KSM page")
    return 2


def _mappings_before_node(k: Kernel, pfn: int) -> list[Mapping]:
    """Every PTE of the page about to get a stable node: through its anon_vma, before the page
    leaves it, or - a KSM page a failed second merge left with a NULL stable node, which kept
    no anon_vma - in every VMA at the page's linear index (fork and mremap keep it); its
    fork sharers keep mapping it (4.5.0, 6.18.2 mm/ksm.c try_to_merge_two_pages)."""
    if int(k.frames.mapping[pfn]) != NULL_STABLE_NODE:
        return rmap_walk_anon(k, pfn)
    vmas = [vma for proc in k.processes.values() for vma in proc.mm.vmas]
    return [m for vma in vmas for m in mappings_in_vma(k, vma, pfn, 1)]


def _out_of_reach(k: Kernel, node: StableNode, mapped: list[Mapping]) -> None:
    """The page that became the KSM page keeps every PTE that mapped it: one of a process that
    shares it by fork but whose VMA is not in the tree of the merging item's anon_vma (its own
    VMA's, try_to_merge_with_ksm_page) is one rmap_walk_ksm misses - a parent whose child
    marked the range mergeable (4.5.0 and 6.18 mm/ksm.c; live 6.18 shows the parent's page KSM,
    2026-12-02)."""
    for m in mapped:
        if not walk_reaches(node, m.vma, m.addr):
            k.ksm.unreached.add((m.mm.pid, m.addr))


def try_to_merge_one_page(k: Kernel, vma: VmArea, addr: int, pfn: int, kpage: int | None) -> bool:
    """try_to_merge_one_page(): split a THP first; write_protect_page() (no reference beyond the
    mappings and the swap cache; 5.19: an exclusive page that may be pinned refuses); then the
    page becomes the KSM page (kpage None) or its PTE points to kpage (replace_page)."""
    f = k.frames
    if pfn == kpage:
        return True
    if f.order[pfn]:
        if huge_memory.split_huge_page(k, compound_head(f, pfn)) != 0:
            k.event("try_to_merge_one_page", "fail", pfn=pfn, rule="the THP cannot be split")
            return False
        if _mapped_page(vma.mm, addr) != pfn:  # the split mapped it as the zero page (6.12)
            k.event("try_to_merge_one_page", "fail", pfn=pfn, rule="no longer mapped here")
            return False
    if not write_protect_page(k, vma, addr, pfn):
        return False
    if kpage is None:
        f.flags[pfn] |= PG_ksm | PG_dirty
        return True
    replace_page(k, vma, addr, pfn, kpage)
    return True


def write_protect_page(k: Kernel, vma: VmArea, addr: int, pfn: int) -> bool:
    """write_protect_page(): for a writable or dirty PTE (5.19: or an exclusive page), refcount
    == mapcount (+ swap cache), else the merge fails; then the PTE is read-only and clean (its
    dirty bit moves to the page)."""
    f = k.frames
    table = vma.mm.pmds[pmd_index(addr)]
    assert isinstance(table, PteTable)
    i = pte_index(addr)
    exclusive = bool(f.flags[pfn] & PG_anon_exclusive) and k.policy.anon_exclusive
    if not table.bits[i] & (PTE_WRITE | PTE_DIRTY) and not exclusive:
        return True  # already read-only and clean: nothing to check (all releases)
    refuse, read, rule = k.policy.ksm_refuses(k, pfn)
    expected = int(f._mapcount[pfn]) + 1 + int(bool(f.flags[pfn] & PG_swapcache))
    count = page_count(f, pfn)
    if refuse or count != expected:
        if not refuse:
            read = (("page_count", count), ("mapcount + swapcache", expected))
            rule = "no reference beyond the mappings and the swap cache"
        k.event("write_protect_page", "fail", addr=addr, pfn=pfn, read=read, rule=rule)
        return False
    f.flags[pfn] &= flags_without(PG_anon_exclusive)
    if table.bits[i] & PTE_DIRTY:
        f.flags[pfn] |= PG_dirty
    table.bits[i] &= pte_without(PTE_WRITE | PTE_DIRTY)
    return True


def replace_page(k: Kernel, vma: VmArea, addr: int, pfn: int, kpage: int) -> None:
    """replace_page(): this PTE maps the KSM page read-only; the old page loses the mapping.
    The PTE is mk_pte(kpage, vm_page_prot), young because x86's PAGE_COPY/PAGE_READONLY carry
    _PAGE_ACCESSED; no release makes it old (4.5.0 .. 6.18.2 mm/ksm.c)."""
    table = vma.mm.pmds[pmd_index(addr)]
    assert isinstance(table, PteTable)
    i = pte_index(addr)
    get_page(k.frames, kpage)
    rmap_add_ptes(k, vma.mm, _one(kpage))
    table.pfn[i] = kpage
    table.bits[i] = PTE_YOUNG  # read-only, clean, not soft-dirty
    page_remove_rmap(k, vma.mm, pfn, compound=False)
    if k.frames._mapcount[pfn] < 0:
        try_to_free_swap(k, pfn)
    put_page(k, pfn)
    k.event("replace_page", addr=addr, pfn=kpage, detail=f"pfn {pfn:#x} merged into it")


def _merge_with_zero_page(k: Kernel, vma: VmArea, addr: int, pfn: int) -> bool:
    """use_zero_pages (4.11+): a zero-filled page is replaced by the shared zero page (6.6,
    79271476b336: its PTE marked with pte_mkdirty, which on x86 sets soft-dirty too)."""
    if not write_protect_page(k, vma, addr, pfn):
        return False
    table = vma.mm.pmds[pmd_index(addr)]
    assert isinstance(table, PteTable)
    i = pte_index(addr)
    table.pfn[i] = ZERO_PFN
    marked = PTE_DIRTY | PTE_SOFT_DIRTY if k.policy.ksm_zero_pages_marked else 0
    table.bits[i] = PTE_SPECIAL | PTE_YOUNG | marked
    page_remove_rmap(k, vma.mm, pfn, compound=False)
    put_page(k, pfn)
    vma.mm.anon_rss -= 1
    k.event("try_to_merge_with_zero_page", addr=addr, pfn=pfn, detail="mapped as the zero page")
    return True


def _append(k: Kernel, node: StableNode, item: RmapItem, vma: VmArea) -> None:
    """stable_tree_append(): the rmap_item hangs on the node (once)."""
    if item.node == node.id:
        return
    _leave(k, item)
    item.node, item.anon_vma = node.id, vma.anon_vma
    node.items.append(item)
    k.ksm.unreached.discard((item.pid, item.addr))


def _leave(k: Kernel, item: RmapItem) -> None:
    """remove_rmap_item_from_tree(): off its stable node, if it hangs on one."""
    node = k.ksm.nodes.get(item.node)
    if node is not None:
        node.items.remove(item)
        _strand(k, node, item)
    item.node, item.anon_vma = 0, None


def _strand(k: Kernel, node: StableNode, item: RmapItem) -> None:
    """The item has left the node: a mapping of the KSM page at the item's address that it
    alone reached - a forked child's, in a VMA of the item's anon_vma tree - is out of
    rmap_walk_ksm's reach from now on, which goes through the node's items only (4.5.0 and
    6.18.2 mm/ksm.c rmap_walk_ksm, remove_rmap_item_from_tree)."""
    addr = item.addr
    for vma in item.anon_vma.vmas if item.anon_vma else ():
        mapped = vma.vm_start <= addr < vma.vm_end and _mapped_page(vma.mm, addr) == node.kpfn
        if mapped and not walk_reaches(node, vma, addr):
            k.ksm.unreached.add((vma.mm.pid, addr))


def _prune(k: Kernel) -> None:
    """ksm_exit() / remove_trailing_rmap_items(): the rmap_items of gone processes and of
    addresses that no longer map their stable node's page leave the tree. A pair of
    `unreached` whose address no longer maps a KSM page (unmapped, copied, exited) goes."""
    for pid, addr in list(k.ksm.unreached):
        proc = k.processes.get(pid)
        pfn = _mapped_page(proc.mm, addr) if proc is not None else None
        if pfn is None or not PageKsm(k.frames, pfn):
            k.ksm.unreached.discard((pid, addr))
    for key, item in list(k.ksm.items.items()):
        proc = k.processes.get(item.pid)
        pfn = _mapped_page(proc.mm, item.addr) if proc is not None else None
        node = k.ksm.nodes.get(item.node)
        if proc is None or pfn is None:
            _leave(k, item)
            del k.ksm.items[key]
        elif node is not None and node.kpfn != pfn:
            _leave(k, item)


def _page_of(k: Kernel, item: RmapItem) -> int | None:
    proc = k.processes.get(item.pid)
    return _mapped_page(proc.mm, item.addr) if proc is not None else None


def _mapped_page(mm: MmStruct, addr: int) -> int | None:
    """follow_page(): the normal page mapped at addr (a THP's subpage), or None."""
    entry = mm.pmds.get(pmd_index(addr))
    if isinstance(entry, HugePmd):
        return None if entry.huge_zero else entry.pfn + pte_index(addr)
    if entry is None:
        return None
    i = pte_index(addr)
    pfn = int(entry.pfn[i])
    if pfn < 0 or entry.bits[i] & (PTE_SPECIAL | PTE_MIGRATION | PTE_PROTNONE):
        return None
    return pfn


def _one(pfn: int) -> npt.NDArray[np.int64]:
    return np.array([pfn], dtype=np.int64)
