"""One rule change of the kernel's history: the release it landed in, its commits, what it changes
for cowlab, and where the sources show it. A change is a Policy subclass holding only the
decisions it changed; `landed` attaches this record to it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from cowlab.policy.release import Release, parse_release

if TYPE_CHECKING:
    from cowlab.policy.base import Policy

P = TypeVar("P", bound="type[Policy]")

# a backport whose first stable release is established but whose stable commit was not found
STABLE_ID_NOT_FOUND = ""


def stable_commit_text(commit: str, upstream: str = "") -> str:
    """A stable commit as reports print it: its id, or that it was not found (naming the
    upstream commit it carries when given)."""
    if commit:
        return commit
    return f"{upstream}'s backport (stable id not found)" if upstream else "id not found"


@dataclass(frozen=True)
class Landed:
    release: Release
    commits: tuple[str, ...]
    title: str  # the commit's subject (or the series')
    what: str  # one line, our words: what the model does differently from here on
    evidence: str  # the release trees read, before and after (docs/verification-later.md)
    invisible: str = ""  # why no scenario can tell the two sides apart, if none can
    # (first stable release with it, stable commit or STABLE_ID_NOT_FOUND)
    stable: tuple[tuple[str, str], ...] = ()
    stable_evidence: str = ""  # the stable trees read, and how a backport differs from upstream


def landed(
    release: str,
    commits: tuple[str, ...],
    title: str,
    what: str,
    evidence: str,
    invisible: str = "",
    stable: tuple[tuple[str, str], ...] = (),
    stable_evidence: str = "",
) -> Callable[[P], P]:
    """Record on a change class the release it landed in, its provenance, and the stable
    releases that carry it (docs/timeline-sources.md, "Stable backports")."""
    record = Landed(
        parse_release(release), commits, title, what, evidence, invisible, stable, stable_evidence
    )

    def attach(cls: P) -> P:
        cls.landed = record
        return cls

    return attach
