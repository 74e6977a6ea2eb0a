"""The model's side of a live comparison: the same canonical Snapshot that observe.py reads.

Per 4 KiB page of each named region of a modelled process: folio label (first sight, shared
across the regions in the order given), subpage, folio size, level (pmd/pte/None), mapcount as
/proc/kpagecount reports it, anon_exclusive where kpageflags shows it, KSM/zero/swap fields and a
digest of the bytes. PFNs never leave this module.

The mapcount is derived from the page tables of every live modelled mm, not from the model's
struct page counters: kpagecount reports folio_precise_page_mapcount() (this page's PTE maps plus
the folio's PMD maps), which is what the counters *should* say; whether they do is the model's own
self-check (cowlab.checker), and kernel generations keep those counters in different shapes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from cowlab.kernel import Kernel, Process
from cowlab.live.observe import ZERO_DIGEST, PageObs, Snapshot
from cowlab.mm.constants import (
    HPAGE_PMD_NR,
    PAGE_SIZE,
    PG_anon_exclusive,
    PG_ksm,
    PG_swapcache,
)
from cowlab.mm.mm import compound_head, folio_nr_pages
from cowlab.mm.mm_types import pmd_index, pte_index
from cowlab.mm.pgtable import (
    PTE_MIGRATION,
    PTE_SPECIAL,
    HugePmd,
    PteTable,
    is_swap_pte,
    pte_to_swp_offset,
)
from cowlab.policy import resolve


def models_anon_exclusive(kernel_id: str) -> bool:
    """Whether a kernel generation keeps PG_anon_exclusive, so the model can show it: the
    policy's answer (cowlab.policy), never a version test here."""
    return resolve(kernel_id).policy.anon_exclusive


def mapcounts(k: Kernel) -> tuple[dict[int, int], dict[int, int]]:
    """(PTE maps per pfn, PMD maps per head pfn) over every live process's page tables."""
    pte_pfns: list[np.ndarray] = []
    pmd: dict[int, int] = {}
    for proc in k.processes.values():
        for entry in proc.mm.pmds.values():
            if isinstance(entry, HugePmd):
                if not entry.huge_zero:
                    pmd[entry.pfn] = pmd.get(entry.pfn, 0) + 1
                continue
            # The zero page is mapped special: kpagecount shows 0 for it, as the kernel counts.
            normal = (entry.pfn >= 0) & ((entry.bits & (PTE_SPECIAL | PTE_MIGRATION)) == 0)
            pte_pfns.append(entry.pfn[normal])
    pte: dict[int, int] = {}
    if pte_pfns:
        values, counts = np.unique(np.concatenate(pte_pfns), return_counts=True)
        pte = dict(zip(values.tolist(), counts.tolist(), strict=True))
    return pte, pmd


class _Observer:
    """Labels and mapcounts shared by every region of one model snapshot."""

    def __init__(self, k: Kernel, show_exclusive: bool) -> None:
        self.k = k
        self.f = k.frames
        self.show_exclusive = show_exclusive
        self.labels: dict[int, str] = {}
        self.swaps: dict[int, str] = {}  # swap slot -> "S0".., first sight, as observe.py labels
        self.pte_maps, self.pmd_maps = mapcounts(k)

    def label(self, head: int) -> str:
        return self.labels.setdefault(head, f"F{len(self.labels)}")

    def digest(self, pfn: int) -> str:
        """blake2b-48 of the page's bytes, as observe.py computes it for the live page."""
        data = self.f.contents.get(pfn)
        if data is None or not any(data):
            return ZERO_DIGEST
        return hashlib.blake2b(self.f.page_bytes(pfn), digest_size=6).hexdigest()

    def page(self, entry: HugePmd | PteTable | None, va: int) -> PageObs:
        """One page's canonical observation from the PMD slot that covers va."""
        if isinstance(entry, HugePmd):
            return self.pmd_page(entry, pte_index(va))
        if entry is None:
            return absent()
        i = pte_index(va)
        pfn, bits = int(entry.pfn[i]), int(entry.bits[i])
        if is_swap_pte(pfn):
            return swapped(self.swaps.setdefault(pte_to_swp_offset(pfn), f"S{len(self.swaps)}"))
        if pfn < 0 or bits & PTE_MIGRATION:
            return absent()
        if bits & PTE_SPECIAL:
            return zero_page("Z", 0, 1, "pte")
        return self.mapped(pfn, "pte")

    def pmd_page(self, entry: HugePmd, sub: int) -> PageObs:
        if entry.huge_zero:
            return zero_page("HZ", sub, HPAGE_PMD_NR, "pmd")
        return self.mapped(entry.pfn + sub, "pmd")

    def mapped(self, pfn: int, level: str) -> PageObs:
        """A normal anonymous page (a subpage of a THP or an mTHP, or a small page) at level."""
        flags = self.f.flags
        head = compound_head(self.f, pfn)
        nr = folio_nr_pages(self.f, head)
        large = nr > 1
        sub = pfn - head
        count = self.pte_maps.get(pfn, 0) + self.pmd_maps.get(head, 0)
        # kpageflags shows PG_anon_exclusive on a large folio's head only; a PMD mapping makes
        # observe.py use the head's flag for every subpage (see observe._exclusive).
        visible = self.show_exclusive and (not large or sub == 0 or level == "pmd")
        excl = bool(flags[head] & PG_anon_exclusive) if visible else None
        return PageObs(
            folio=self.label(head),
            subpage=sub,
            nr=nr,
            level=level,
            mapcount=count,
            anon_exclusive=excl,
            ksm=bool(flags[head] & PG_ksm),
            zero=False,
            swapped=False,
            swap=None,
            swapcache=bool(flags[pfn] & PG_swapcache),
            pm_exclusive=None,
            digest=self.digest(pfn),
            head=bytes(self.f.read(pfn, 0, 8)),
        )

    def region(self, proc: Process, addr: int, length: int) -> list[PageObs]:
        first = addr - addr % PAGE_SIZE
        n = (addr + length - first + PAGE_SIZE - 1) // PAGE_SIZE
        if not proc.alive:
            return [absent() for _ in range(n)]
        pmds = proc.mm.pmds
        return [
            self.page(pmds.get(pmd_index(first + i * PAGE_SIZE)), first + i * PAGE_SIZE)
            for i in range(n)
        ]


def absent() -> PageObs:
    """A page nothing maps (pagemap entry 0)."""
    return PageObs(
        None, None, None, None, None, None, False, False, False, None, False, None, None, None
    )


def swapped(label: str) -> PageObs:
    """A swap PTE (pagemap PM_SWAP): no folio, the slot's first-sight label."""
    return PageObs(
        None, None, None, None, None, None, False, False, True, label, False, None, None, None
    )


def zero_page(label: str, sub: int, nr: int, level: str) -> PageObs:
    """The shared zero page ("Z") or a subpage of the huge zero page ("HZ"): kpagecount 0."""
    return PageObs(
        label, sub, nr, level, 0, None, False, True, False, None, False, None, ZERO_DIGEST, bytes(8)
    )


def model_snapshot(
    k: Kernel,
    regions: Sequence[tuple[str, Process, int, int]],
    *,
    show_exclusive: bool | None = None,
) -> Snapshot:
    """Observe (name, process, addr, length) regions of the model with labels shared in order."""
    if show_exclusive is None:
        show_exclusive = k.policy.anon_exclusive
    obs = _Observer(k, show_exclusive)
    out = {name: obs.region(proc, addr, length) for name, proc, addr, length in regions}
    return Snapshot(out, {label: pfn for pfn, label in obs.labels.items()}, 0.0, True)
