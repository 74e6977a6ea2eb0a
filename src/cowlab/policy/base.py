"""The decisions a kernel generation makes, as one interface; the kernel paths ask, never branch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple

from cowlab.mm.page_alloc import PageFrames


class ReuseCount(NamedTuple):
    """The mapcount reuse_swap_page() compares with 1 (None: "never reuse") and total_mapcount."""

    mapcount: int | None
    total_mapcount: int
    why: str


class ReuseDecision(NamedTuple):
    """reuse_swap_page()'s answer with the total mapcount do_wp_page may consult."""

    reuse: bool
    total_mapcount: int
    why: str


class Policy(ABC):
    """One kernel generation: identity, provenance and the answers to the COW questions."""

    id: ClassVar[str]
    release: ClassVar[str]
    commits: ClassVar[tuple[str, ...]]  # the commits whose rules this kernel follows
    summary: ClassVar[str]

    @abstractmethod
    def reuse_mapcount(self, f: PageFrames, pfn: int) -> ReuseCount:
        """The count reuse_swap_page() uses for a PTE write fault on pfn."""

    @abstractmethod
    def move_anon_rmap_on_reuse(self, total_mapcount: int) -> bool:
        """Whether do_wp_page's reuse moves the page to the faulting VMA's anon_vma."""

    @abstractmethod
    def huge_pmd_wp_reuse(self, f: PageFrames, head: int) -> tuple[bool, str]:
        """Whether do_huge_pmd_wp_page reuses the PMD-mapped THP, and why."""
