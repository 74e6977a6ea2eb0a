"""Page tables: a PMD slot is empty, a huge PMD, or a table of 512 PTEs held in NumPy arrays.

A PTE's pfn field is the page frame (>= 0), -1 for pte_none, or a swap entry: -2 - offset of
the slot on the swap device (is_swap_pte). A swap PTE keeps only PTE_SOFT_DIRTY and
PTE_SWP_EXCLUSIVE in its bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

from cowlab.mm.constants import HPAGE_PMD_NR

# PTE bits (the model's, named after arch/x86 _PAGE_*); pfn -1 is pte_none.
PTE_WRITE = 1 << 0
PTE_DIRTY = 1 << 1
PTE_YOUNG = 1 << 2
PTE_SOFT_DIRTY = 1 << 3
PTE_SPECIAL = 1 << 4  # zero page: vm_normal_page() returns NULL
PTE_PROTNONE = 1 << 5  # NUMA hinting entry (present but inaccessible)
PTE_MIGRATION = 1 << 6  # a migration entry: not present, pfn kept (split_huge_page freeze)
PTE_SWP_EXCLUSIVE = 1 << 7  # 5.19 pte_swp_exclusive(): the swapped-out page was exclusive

PTE_BIT_NAMES = {
    PTE_WRITE: "W",
    PTE_DIRTY: "D",
    PTE_YOUNG: "A",
    PTE_SOFT_DIRTY: "SD",
    PTE_SPECIAL: "special",
    PTE_PROTNONE: "protnone",
    PTE_MIGRATION: "migration",
    PTE_SWP_EXCLUSIVE: "swp_exclusive",
}

PTE_NONE = -1


def swp_entry_to_pte(offset: int) -> int:
    """The pfn-field value of a swap PTE for swap slot ``offset``."""
    return -2 - offset


def pte_to_swp_offset(value: int) -> int:
    """The swap slot of a swap PTE's pfn-field value."""
    return -2 - value


def is_swap_pte(value: int) -> bool:
    """is_swap_pte(): not none, not present, not a migration entry."""
    return value <= -2


@cache
def pte_without(mask: int) -> np.uint8:
    """The complement of PTE bits as a uint8 (NumPy refuses negative Python ints); made once
    per mask."""
    return np.uint8(~mask & 0xFF)


class PteTable:
    """One page-table page: 512 PTEs as a pfn array (-1 = none) and a bits array, and a
    memoryview of each (``pfn_at``, ``bits_at``) for one PTE's read or write, as
    PageFrames has them (a fault reads its PTE 4 to 9 times; copied and pickled as views of
    the arrays' copies, page_alloc._view_of)."""

    __slots__ = ("bits", "bits_at", "pfn", "pfn_at")

    def __init__(self) -> None:
        self.pfn: npt.NDArray[np.int64] = np.full(HPAGE_PMD_NR, -1, dtype=np.int64)
        self.bits: npt.NDArray[np.uint8] = np.zeros(HPAGE_PMD_NR, dtype=np.uint8)
        self.pfn_at = self.pfn.data
        self.bits_at = self.bits.data

    def copy(self) -> PteTable:
        t = PteTable()
        t.pfn[:] = self.pfn
        t.bits[:] = self.bits
        return t

    def empty(self) -> bool:
        """No PTE maps a page or holds a swap entry (the table could be freed)."""
        return bool((self.pfn == PTE_NONE).all())


@dataclass
class HugePmd:
    """A huge PMD mapping the whole compound page whose head is ``pfn``."""

    pfn: int
    write: bool
    dirty: bool
    young: bool = True
    soft_dirty: bool = True
    protnone: bool = False
    huge_zero: bool = False


PmdEntry = HugePmd | PteTable


def pte_flags_str(bits: int) -> str:
    return "".join(name if bits & bit else "" for bit, name in PTE_BIT_NAMES.items()) or "-"
