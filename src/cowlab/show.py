"""`cowlab show`: the memory at a step — processes, VMAs, page tables, and every folio's subpages.

Text for the terminal; SVG or one self-contained HTML file for a browser. In the pictures each
THP is a 32 x 16 grid of its 512 subpages coloured by page_mapcount; a blue frame marks every
anonymous folio (the screenshot test counts them), pins are black dots, PMD mappings a thick top
bar, DoubleMap and the anon_vma are written beside the grid.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np

from cowlab.kernel import Kernel
from cowlab.mm.constants import (
    HPAGE_PMD_NR,
    PMD_SHIFT,
    VM_FLAG_NAMES,
    PG_dirty,
    PG_double_map,
    PG_ksm,
    PG_writeback,
)
from cowlab.mm.ksm import NULL_STABLE_NODE
from cowlab.mm.mm import compound_head, folio_nr_pages, page_mapcount
from cowlab.mm.mm_types import VmArea
from cowlab.mm.page_alloc import HUGE_ZERO_PFN
from cowlab.mm.pgtable import PTE_SPECIAL, HugePmd, PteTable, pte_flags_str, pte_to_swp_offset
from cowlab.mm.trace import Event
from cowlab.scenario.model import Scenario
from cowlab.scenario.runner import Runner

COLOURS = ["#eeeeee", "#7fc97f", "#fdc086", "#f0027f"]
FRAME = "#0000ff"
CELL = 12


@dataclass
class FolioView:
    """One anonymous folio (a THP or a small page) as the pictures show it."""

    head: int
    nr: int
    mapcounts: list[int]
    pinned: list[int]
    pmd_by: list[str] = field(default_factory=list)
    pte_by: list[str] = field(default_factory=list)
    compound_mapcount: int = 0
    double_map: bool = False
    refcount: int = 0
    anon_vma: int = 0
    swapcache: str = ""  # "slot N" (", writeback" / ", dirty") while in the swap cache
    ksm_node: int = 0  # the stable node of a KSM page (-NULL_STABLE_NODE: none)

    def title(self) -> str:
        kind = "THP" if self.nr > 1 else f"KSM page ({self.node()})" if self.ksm_node else "page"
        maps = []
        if self.pmd_by:
            maps.append("PMD-mapped by " + ", ".join(self.pmd_by))
        if self.pte_by:
            maps.append("PTE-mapped by " + ", ".join(self.pte_by))
        extra = f", compound_mapcount {self.compound_mapcount}" if self.nr > 1 else ""
        extra += ", DoubleMap" if self.double_map else ""
        pins = f", {sum(self.pinned)} pinned" if any(self.pinned) else ""
        cached = f", swap cache {self.swapcache}" if self.swapcache else ""
        return (
            f"{kind} pfn {self.head:#x}: {'; '.join(maps) or 'unmapped'}{extra}, "
            f"_count {self.refcount}, anon_vma#{self.anon_vma}{pins}{cached}"
        )

    def node(self) -> str:
        """The KSM page's stable node as the kernel holds it: NULL between the two merges of
        try_to_merge_two_pages and after a failed second one, else the node's id."""
        if self.ksm_node == -NULL_STABLE_NODE:
            return "no stable node"
        return f"stable node {self.ksm_node}"


@dataclass
class ProcView:
    name: str
    pid: int
    vmas: list[str]
    tables: list[str]


@dataclass
class MemoryView:
    title: str
    processes: list[ProcView]
    folios: list[FolioView]
    zero: list[str]
    decisions: list[Event] = field(default_factory=list)  # what the kernel decided in the step
    swap: list[str] = field(default_factory=list)  # every swap slot in use


def memory_at(scenario: Scenario, kernel_id: str, step: int | None) -> MemoryView:
    """Run the scenario up to and including a step (default: the last) and look at memory."""
    runner = Runner(scenario, kernel_id, tracing=True)
    last = step if step is not None else len(scenario.steps)
    results = [runner.run_step(s) for s in scenario.steps[:last]]
    title = (
        f"{scenario.path} on {kernel_id} after step {last}: {scenario.steps[last - 1].describe()}"
    )
    view = snapshot(runner, title)
    view.decisions = [e for e in results[-1].events if e.decision] if results else []
    return view


def snapshot(runner: Runner, title: str) -> MemoryView:
    """Everything the pictures show, read from the runner's kernel without changing it."""
    k = runner.k
    folios: dict[int, FolioView] = {}
    zero: list[str] = []
    procs = []
    for name, proc in runner.procs.items():
        if proc.alive:
            view = ProcView(name, proc.pid, _vmas(proc.mm.vmas), [])
            procs.append(view)
            for idx, entry in sorted(proc.mm.pmds.items()):
                _entry(k, folios, zero, view, idx << PMD_SHIFT, entry)
    for pin in k.pins.values():
        for pfn in pin.pages.tolist():
            if pfn >= HUGE_ZERO_PFN + HPAGE_PMD_NR:
                folio = _folio(k, folios, compound_head(k.frames, pfn))
                folio.pinned[pfn - folio.head] += 1
    swap = _swap_slots(k, folios)
    folio_list = sorted(folios.values(), key=lambda v: v.head)
    return MemoryView(title, procs, folio_list, zero, swap=swap)


def _swap_slots(k: Kernel, folios: dict[int, FolioView]) -> list[str]:
    """Every swap slot in use: its swap PTEs, and its swap-cache page or "on the device"; the
    slots of a large folio in the swap cache as one line."""
    out = []
    f = k.frames
    for slot in k.swap.in_use().tolist():
        page = int(k.swap.cache[slot])
        if page < 0:
            out.append(
                f"swap slot {slot}: {int(k.swap.swap_map[slot])} swap PTEs, on the device only"
            )
            continue
        head = compound_head(f, page)
        first, nr = int(f.private[head]), folio_nr_pages(f, head)
        if slot != first:
            continue  # a later slot of a large folio: said with its first
        state = [
            n
            for bit, n in ((PG_writeback, "writeback"), (PG_dirty, "dirty"))
            if f.flags[head] & bit
        ]
        slots = f"slot {slot}" if nr == 1 else f"slots {slot}..{slot + nr - 1}"
        _folio(k, folios, head).swapcache = ", ".join([slots, *state])
        where = f"swap cache pfn {head:#x}" + ("" if nr == 1 else f" ({nr}-page folio, whole)")
        out.append(
            f"swap {slots}: {_swap_ptes(k, slot, nr)}, {where}" + "".join(f", {n}" for n in state)
        )
    return out


def _swap_ptes(k: Kernel, first: int, nr: int) -> str:
    """`1 swap PTEs`, or for a run of slots how many slots have each count."""
    counts = k.swap.swap_map[first : first + nr]
    if nr == 1:
        return f"{int(counts[0])} swap PTEs"
    values, many = np.unique(counts, return_counts=True)
    return "swap PTEs " + ", ".join(
        f"{int(v)} on {int(n)} slot{'s' if n > 1 else ''}"
        for v, n in zip(values.tolist(), many.tolist(), strict=True)
    )


def _entry(
    k: Kernel,
    folios: dict[int, FolioView],
    zero: list[str],
    view: ProcView,
    base: int,
    entry: HugePmd | PteTable,
) -> None:
    if isinstance(entry, HugePmd):
        if entry.huge_zero:
            zero.append(f"{view.name} {base:#x}: huge zero page (PMD)")
            return
        _folio(k, folios, entry.pfn).pmd_by.append(view.name)
        mode = "rw" if entry.write else "ro"
        view.tables.append(f"{base:#x} PMD {mode} -> THP {entry.pfn:#x}")
        return
    present = np.flatnonzero(entry.pfn >= 0)
    swapped = np.flatnonzero(entry.pfn <= -2)
    gone = f", {swapped.size} swapped out" if swapped.size else ""
    view.tables.append(f"{base:#x} PTE table: {present.size} present{gone}")
    if swapped.size <= 8:
        for i in swapped.tolist():
            bits = pte_flags_str(int(entry.bits[i]))
            slot = pte_to_swp_offset(int(entry.pfn[i]))
            view.tables.append(f"  {base + (i << 12):#x} -> swap slot {slot} [{bits}]")
    for i in present.tolist():
        pfn = int(entry.pfn[i])
        if entry.bits[i] & PTE_SPECIAL:
            zero.append(f"{view.name} {base + (i << 12):#x}: zero page")
            continue
        folio = _folio(k, folios, compound_head(k.frames, pfn))
        if view.name not in folio.pte_by:
            folio.pte_by.append(view.name)
        if present.size <= 8:  # a few PTEs are listed; a full table is the folio grid's job
            bits = pte_flags_str(int(entry.bits[i]))
            view.tables.append(f"  {base + (i << 12):#x} -> {pfn:#x} [{bits}]")


def _vmas(vmas: list[VmArea]) -> list[str]:
    out = []
    for v in vmas:
        flags = ",".join(n for bit, n in VM_FLAG_NAMES.items() if v.vm_flags & bit)
        chain = ",".join(f"#{a.id}" for a in v.anon_vma_chain) or "-"
        own = f"anon_vma#{v.anon_vma.id}" if v.anon_vma else "no anon_vma"
        span = f"{v.vm_start:#x}-{v.vm_end:#x}"
        out.append(f"{span} [{flags}] pgoff {v.vm_pgoff:#x} {own} chain {chain}")
    return out


def _folio(k: Kernel, folios: dict[int, FolioView], head: int) -> FolioView:
    f = k.frames
    if head not in folios:
        nr = folio_nr_pages(f, head)
        folios[head] = FolioView(
            head,
            nr,
            [page_mapcount(f, head + i) for i in range(nr)],
            [0] * nr,
            compound_mapcount=int(f.compound_mapcount[head + 1]) + 1 if nr > 1 else 0,
            double_map=nr > 1 and bool(f.flags[head + 1] & PG_double_map),
            refcount=int(f._count[head]),
            anon_vma=max(0, int(f.mapping[head])),
            ksm_node=-int(f.mapping[head]) if f.flags[head] & PG_ksm else 0,
        )
    return folios[head]


# --- text ---------------------------------------------------------------------------------


def render_text(view: MemoryView) -> str:
    lines = [view.title]
    lines += [f"decided: {e.render()}" for e in view.decisions]
    for p in view.processes:
        lines.append(f"process {p.name} (pid {p.pid})")
        lines += [f"  vma {v}" for v in p.vmas]
        lines += [f"  {t}" for t in p.tables]
    for folio in view.folios:
        lines.append(folio.title())
        if folio.nr > 1:
            lines += _text_grid(folio)
    lines += view.zero
    lines += view.swap
    return "\n".join(lines)


def _text_grid(folio: FolioView) -> list[str]:
    """8 rows of 64 subpages: the mapcount digit ('.' for 0), '*' where pinned."""
    rows = []
    for r in range(8):
        cells = []
        for i in range(r * 64, r * 64 + 64):
            if folio.pinned[i]:
                cells.append("*")
            else:
                cells.append("." if folio.mapcounts[i] == 0 else str(min(folio.mapcounts[i], 9)))
        rows.append(f"  {r * 64:3d} " + "".join(cells))
    return rows


# --- SVG and HTML -------------------------------------------------------------------------


def _folio_svg(folio: FolioView) -> str:
    cols = min(32, folio.nr)
    rows = folio.nr // cols
    w, h = cols * CELL + 8, rows * CELL + 14
    parts = [
        f'<svg class="folio" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'shape-rendering="crispEdges" data-pfn="{folio.head:#x}">',
        f'<rect x="1" y="1" width="{w - 2}" height="{h - 2}" fill="white" stroke="{FRAME}" '
        'stroke-width="2"/>',
    ]
    if folio.pmd_by:
        parts.append(f'<rect x="4" y="4" width="{cols * CELL}" height="5" fill="#333333"/>')
    for i in range(folio.nr):
        x, y = 4 + (i % cols) * CELL, 10 + (i // cols) * CELL
        colour = COLOURS[min(folio.mapcounts[i], 3)]
        parts.append(
            f'<rect x="{x}" y="{y}" width="{CELL - 1}" height="{CELL - 1}" fill="{colour}">'
            f"<title>subpage {i}: page_mapcount {folio.mapcounts[i]}</title></rect>"
        )
        if folio.pinned[i]:
            parts.append(f'<rect x="{x + 4}" y="{y + 4}" width="3" height="3" fill="black"/>')
    parts.append("</svg>")
    return "".join(parts)


def render_svg(view: MemoryView) -> str:
    text = '<text x="4" y="{}" font-family="monospace" font-size="12">{}</text>'
    body = [text.format(14, html.escape(view.title))]
    y = 20
    for folio in view.folios:
        body.append(text.format(y + 12, html.escape(folio.title())))
        body.append(_folio_svg(folio).replace("<svg ", f'<svg x="4" y="{y + 16}" ', 1))
        y += 16 + folio.nr // min(32, folio.nr) * CELL + 22
    width = 32 * CELL + 700
    head = f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y + 10}">'
    return head + "".join(body) + "</svg>"


def render_html(view: MemoryView) -> str:
    procs = []
    for p in view.processes:
        rows = "".join(f"<li><code>{html.escape(v)}</code></li>" for v in p.vmas + p.tables)
        procs.append(f"<section><h2>process {p.name} (pid {p.pid})</h2><ul>{rows}</ul></section>")
    folios = "".join(
        f"<figure><figcaption>{html.escape(fv.title())}</figcaption>{_folio_svg(fv)}</figure>"
        for fv in view.folios
    )
    legend = "".join(
        f'<span style="background:{c};padding:0 8px;margin-right:6px">{label}</span>'
        for c, label in zip(COLOURS, ["mapcount 0", "1", "2", "3+"], strict=True)
    )
    zero = "".join(f"<li>{html.escape(z)}</li>" for z in view.zero + view.swap)
    decided = "".join(
        f"<li><code>{html.escape(e.render())}</code> ({html.escape(e.render_rule())})</li>"
        for e in view.decisions
    )
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(view.title)}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; color: #222; }}
code, figcaption {{ font-family: monospace; font-size: 12px; }}
figure {{ margin: 12px 0; }}
h1 {{ font-size: 18px; }} h2 {{ font-size: 15px; margin-bottom: 4px; }}
ul {{ margin-top: 2px; }}
</style></head>
<body>
<h1>{html.escape(view.title)}</h1>
<p>{legend} &#9632; black dot: pinned subpage; dark bar: PMD-mapped</p>
<ul class="decisions">{decided}</ul>
{"".join(procs)}
<h2>folios</h2>
{folios}
<ul>{zero}</ul>
</body></html>
"""
