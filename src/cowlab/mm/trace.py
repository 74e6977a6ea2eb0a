"""Kernel events as data: what a kernel function did or decided, as a tracepoint would record it.

A *decision* is an event with a verdict (reuse, copy, split, -EBUSY, ...): the values the rule
read, the rule in the kernel's terms, and the policy that applied it. Other events are actions
(a page mapped, a PMD split). `explain`, `diff`, `show` and the JSON report read these events;
their text is rendered from them only when shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cowlab.mm.decision import Reads, show_reads


@dataclass(frozen=True, slots=True)
class Event:
    op: int  # the program operation it happened in (an index into Kernel.history)
    function: str  # the kernel function
    verdict: str  # a decision's answer; "" for an action
    addr: int | None
    pfn: int | None  # the page (or THP head) it concerns
    read: Reads  # what the rule read, in the kernel's names
    rule: str  # the condition of the rule, e.g. "page_count == 1 && page_mapcount == 1"
    policy: str  # the policy id that decided; "" for an action
    detail: str  # what was done, in a few words

    @property
    def decision(self) -> bool:
        return bool(self.verdict)

    def render(self) -> str:
        """`do_wp_page: 0x7f..000 pfn 0x401: page_count = 2, page_mapcount = 1 -> copy: ...`"""
        where = " ".join(
            part
            for part in (
                f"{self.addr:#x}" if self.addr is not None else "",
                f"pfn {self.pfn:#x}" if self.pfn is not None else "",
            )
            if part
        )
        body = show_reads(self.read)
        if self.verdict:
            body = f"{body} -> {self.verdict}" if body else self.verdict
            if self.detail:
                body += f" ({self.detail})"
        elif self.detail:
            body = f"{body}: {self.detail}" if body else self.detail
        return f"{self.function}: {where}: {body}" if where else f"{self.function}: {body}"

    def render_rule(self) -> str:
        return f"rule of {self.policy}: {self.rule}" if self.rule else ""

    def to_json(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "verdict": self.verdict or None,
            "addr": self.addr,
            "pfn": self.pfn,
            "read": dict(self.read),
            "rule": self.rule or None,
            "policy": self.policy or None,
            "detail": self.detail or None,
        }
