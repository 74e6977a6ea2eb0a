"""The kernel's history as a list of rule changes, and the policy of any release made from it.

The policy of Linux x.y is every change that had landed by x.y; of a stable release x.y.z, that
plus the changes backported to the x.y line by x.y.z; of a review version, its base release
with that version of a patch. A policy is named after the release of its newest change
(`v6.9` answers for 6.9 to 6.12); the names cowlab used before (`v4.14`, `v5.19`, ...) resolve
as the releases they name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from cowlab.policy import (
    review,
    v4_5,
    v4_6,
    v4_7,
    v4_8,
    v4_11,
    v4_13,
    v4_14,
    v4_15,
    v5_1,
    v5_4,
    v5_6,
    v5_7,
    v5_8,
    v5_9,
    v5_11,
    v5_16,
    v5_18,
    v5_19,
    v6_0,
    v6_1,
    v6_2,
    v6_3,
    v6_4,
    v6_5,
    v6_6,
    v6_8,
    v6_9,
    v6_10,
    v6_11,
    v6_12,
    v6_13,
    v6_14,
    v6_15,
    v6_17,
    v6_18,
)
from cowlab.policy.base import Policy
from cowlab.policy.history import Landed, stable_commit_text
from cowlab.policy.release import (
    FIRST,
    NEWEST,
    Release,
    ReleaseError,
    UnknownStableError,
    mainline_releases,
    parse_release,
)

# mainline, in the order the changes landed
CHANGES: tuple[type[Policy], ...] = (
    v4_5.Linux4_5,
    v4_6.ThpMapcountOnWpFault,
    v4_6.RemapByMigrationEntries,
    v4_7.MoveAnonRmapRoundsAddress,
    v4_7.MoveAnonRmapWithoutAddress,
    v4_8.CollapseSwapsIn,
    v4_11.KsmUseZeroPages,
    v4_13.KsmMaxPageSharing,
    v4_13.ThpSwapClusterBeforeSplit,
    v4_14.ThpSwapOut,
    v4_14.ThpSwapCounts,
    v4_15.SwapinBypass,
    v5_1.ReuseKsmPage,
    v5_4.MadvPageout,
    v5_6.PageoutSkipsCowPages,
    v5_7.FollPinCounting,
    v5_8.ThpCowSplits,
    v5_8.GupBreaksCowOnRead,
    v5_8.CollapseSharedPages,
    v5_9.DoWpPageSimplification,
    v5_9.GupNoForcedCow,
    v5_9.ForkCopiesPinned,
    v5_9.SwapFileClusterFix,
    v5_11.ClearRefsSkipsPinned,
    v5_11.ReclaimSkipsPinned,
    v5_16.MremapLooksUpVma,
    v5_18.CowFixesPart1,
    v5_18.DoSwapPageByRefcount,
    v5_18.CollapseIgnoresSwapcache,
    v5_18.MremapEfaultNegative,
    v5_19.AnonExclusive,
    v6_0.MprotectDirtyExclusiveWritable,
    v6_1.MadvCollapse,
    v6_1.MigrationKeepsYoung,
    v6_2.NoDoubleMap,
    v6_2.MprotectExclusiveWritable,
    v6_2.KsmUnmergeUnshares,
    v6_2.LongtermRoPinUnsharesZeroPage,
    v6_2.PmdSplitKeepsDirty,
    v6_3.PageoutFolioMapcount,
    v6_4.CollapseUffdEbusy,
    v6_5.PageoutEstimatedSharers,
    v6_6.KsmZeroPagesUnshare,
    v6_8.AnonMthp,
    v6_8.KsmSwapinLargeFolio,
    v6_9.NoLargeFolioReuse,
    v6_9.PageoutZeroSharersSplits,
    v6_10.LargeMapcount,
    v6_10.MthpSwapOut,
    v6_10.PageoutSkipsLargeFolio,
    v6_10.CollapseLikelyShared,
    v6_10.PageoutLikelyShared,
    v6_11.SwapinMapsWholeFolio,
    v6_11.SwapinWritableOnRead,
    v6_11.KsmChecksumFirst,
    v6_12.SplitMapsZeropage,
    v6_12.LargeFolioSwapin,
    v6_12.SwapoutZeromap,
    v6_13.HugeZeroWpAllocates,
    v6_14.RotationalClusters,
    v6_15.LargeFolioReuse,
    v6_17.MremapMovesVmas,
    v6_18.CollapseReadOnly,
    v6_18.ZeropageRemapSoftDirty,
)

# stable-only forms of a change: a backport that decides differently from the mainline change
# (its @landed names the upstream commit; its stable= the releases that carry this form)
STABLE_ONLY: tuple[type[Policy], ...] = (v5_8.GupBreaksCowOnReadSlowOnly,)

# review versions of a patch: name -> (the release whose place they take, the changes they add
# to its mainline rules); a scenario's expectations for that release hold for them unless the
# scenario names the version itself
REVIEW_VERSIONS: dict[str, tuple[Release, tuple[type[Policy], ...]]] = {
    "v4.5+6d0a07e-early": (
        Release(4, 5, 5),
        (v4_6.ThpMapcountOnWpFault, review.EarlyMovesAlways),
    ),
    "v4.5+6d0a07e-uninit": (
        Release(4, 5, 5),
        (v4_6.ThpMapcountOnWpFault, review.UninitTotalMapcount),
    ),
}

# the names cowlab's policies had before the timeline, as the releases they meant
ALIASES: dict[str, str] = {
    "v4.5+6d0a07e": "4.5.5",
    # 5.4.47's policy before 5.4.28's 12e967fd8e4e was modelled (and joined its id)
    "v5.4+1783985": "5.4.47",
}


def landed_of(change: type[Policy]) -> Landed:
    record = change.landed
    assert record is not None, f"{change.__name__} has no @landed record"
    return record


@cache  # a change's class body does not change; all_policies asks thousands of times at import
def effective(change: type[Policy]) -> bool:
    """Does the change override any decision (an invisible one may only document)?"""
    return any(not name.startswith("_") and name != "landed" for name in vars(change))


@dataclass(frozen=True)
class Resolved:
    """A --kernel value resolved: the release asked for and the policy that answers for it."""

    asked: str
    release: Release
    policy: type[Policy]
    backports: tuple[tuple[type[Policy], str], ...] = ()  # (change, stable commit)
    review: bool = False

    @property
    def policy_id(self) -> str:
        return self.policy.id

    def describe(self) -> str:
        """`6.6 (6.6.0, policy v6.6)`: a bare x.y is the mainline x.y.0; `4.19.222 (policy
        v4.19+1783985: 4.19.0 with stable 5e24029791e8)`, the stable commits applied; a name
        that is the policy's own id is said once."""
        if self.asked == self.policy.id:
            return self.asked
        said = f"policy {self.policy.id}"
        if self.backports:
            stable = ", ".join(
                stable_commit_text(commit, landed_of(change).commits[0])
                for change, commit in self.backports
            )
            said += f": {self.release.mainline}.0 with stable {stable}"
        elif self.release.sublevel and not self.review:
            said += f": {self.release.mainline}.0, no modelled stable backport"
        if not self.review and _bare_release(self.asked):
            said = f"{self.release.mainline}.0, {said}"
        return f"{self.asked} ({said})"


def _bare_release(name: str) -> bool:
    """`6.6` or `v5.10`: a release given without its stable sublevel."""
    return bool(re.fullmatch(r"v?\d+\.\d+", name.strip()))


@cache
def mainline_changes(release: Release) -> tuple[type[Policy], ...]:
    mainline = release.mainline  # a new Release at each read: made once, not once per change
    return tuple(c for c in CHANGES if landed_of(c).release <= mainline)


def stable_backports(release: Release) -> tuple[tuple[type[Policy], str], ...]:
    """Changes of a later mainline release carried by this stable release of its line, oldest
    backport first; a later backport of the same upstream commit replaces an earlier one (4.9.298
    reverted 4.9.287's form of 17839856fd58 and redid it)."""
    found: dict[str, tuple[Release, type[Policy], str]] = {}
    mainline = release.mainline  # a new Release at each read: made once, not once per change
    for change in (*CHANGES, *STABLE_ONLY):
        record = landed_of(change)
        if record.release <= mainline:
            continue
        for first, commit in record.stable:
            first_release = parse_release(first)
            if first_release.line != release.line or first_release > release:
                continue
            upstream = record.commits[0]
            if upstream not in found or found[upstream][0] < first_release:
                found[upstream] = (first_release, change, commit)
    ordered = sorted(found.values(), key=lambda f: (f[0], landed_of(f[1]).commits))
    return tuple((change, commit) for _, change, commit in ordered)


def policy_id(
    changes: tuple[type[Policy], ...],
    backports: tuple[tuple[type[Policy], str], ...],
    line: tuple[int, int] | None = None,
) -> str:
    """`v6.9`: the release of the newest change. A stable release with backports is named after
    its own x.y line and the upstream commits it adds (`v4.19+1783985`), so that two lines whose
    x.y.0 share a policy (4.14, 4.19: `v4.13`) keep apart."""
    newest = max(landed_of(c).release for c in changes if effective(c))
    base = f"v{newest}" if not backports or line is None else f"v{line[0]}.{line[1]}"
    return base + "".join(f"+{_tag(c, commit)}" for c, commit in backports)


def _tag(change: type[Policy], commit: str) -> str:
    """A backport's part of a policy id: the upstream commit, or for a stable-only form the
    stable commit (`v4.9+9bbd42e`, 4.9.287's form of 17839856fd58)."""
    return (commit if change in STABLE_ONLY else landed_of(change).commits[0])[:7]


def first_with(release: Release, backports: tuple[tuple[type[Policy], str], ...]) -> Release:
    """The first stable release of `release`'s line that carries all of `backports`."""
    firsts = [
        parse_release(first)
        for change, commit in backports
        for first, stable in landed_of(change).stable
        if parse_release(first).line == release.line and stable == commit
    ]
    return max(firsts)


@cache
def compose(name: str, changes: tuple[type[Policy], ...], answers_for: str) -> type[Policy]:
    """The policy made of `changes` (oldest first): newest first in the MRO."""
    attrs = {
        "id": name,
        "release": answers_for,
        "commits": tuple(sha for c in changes for sha in landed_of(c).commits),
        "summary": "; ".join(landed_of(c).what for c in _newest(changes)),
        "changes": changes,
        "landed": None,
    }
    return type(name, tuple(reversed(changes)), attrs)


def _newest(changes: tuple[type[Policy], ...]) -> list[type[Policy]]:
    """The effective changes at the newest release among `changes`."""
    newest = max(landed_of(c).release for c in changes if effective(c))
    return [c for c in changes if effective(c) and landed_of(c).release == newest]


@cache  # all_policies asks for each release of a policy
def _releases_answered(first: Release) -> str:
    """`6.9 .. 6.12`: from the release of a policy's newest change to the release before the
    next effective change."""
    later = [landed_of(c).release for c in CHANGES if effective(c) and landed_of(c).release > first]
    next_change = min(later, default=None)
    before = [r for r in mainline_releases() if next_change is None or r < next_change][-1]
    return str(first) if before == first else f"{first} .. {before}"


# policies made outside the timeline (a proposed patch on top of a release's policy), by id:
# resolve() answers their id with the Resolved stored here
PATCHED: dict[str, Resolved] = {}


def resolve(name: str) -> Resolved:
    """A --kernel value (`6.6`, `v5.10`, `4.19.0`, `5.4.286`, a policy id, a review version)
    -> the release and the policy that answers for it. ReleaseError names the range."""
    text = name.strip()
    if text in PATCHED:
        return PATCHED[text]
    return _resolve(name, text)


@cache
def _resolve(name: str, text: str) -> Resolved:
    if text in REVIEW_VERSIONS:
        base, extra = REVIEW_VERSIONS[text]
        changes = (*mainline_changes(base), *extra)
        policy = compose(text, changes, f"never released (a review version, in place of {base})")
        return Resolved(name, base, policy, review=True)
    try:
        release = parse_release(ALIASES.get(text) or stable_policy_ids().get(text) or text)
    except UnknownStableError as e:
        raise ReleaseError(f"unknown kernel {name!r}: {e}") from None
    except ReleaseError:
        known = ", ".join([*ALIASES, *REVIEW_VERSIONS])
        first = ".".join(map(str, FIRST))
        newest = ".".join(map(str, NEWEST))
        raise ReleaseError(
            f"unknown kernel {name!r}: expected a release from {first} to {newest} "
            f"(6.6, v5.10, 5.4.286) or one of {known}"
        ) from None
    return resolve_release(name, release)


def resolve_release(asked: str, release: Release) -> Resolved:
    changes = mainline_changes(release)
    backports = stable_backports(release)
    answers = _releases_answered(max(landed_of(c).release for c in changes if effective(c)))
    if backports:
        changes = (*changes, *(c for c, _ in backports))
        answers = f"{release.line[0]}.{release.line[1]}.y from {first_with(release, backports)}"
    pid = policy_id(mainline_changes(release), backports, release.line)
    return Resolved(asked, release, compose(pid, changes, answers), backports)


@cache
def stable_policy_ids() -> dict[str, str]:
    """The id of each stable policy (`v5.4+12e967f+1783985`) -> the first release it answers for, so
    that the id resolves as that release (as `v4.5+6d0a07e` is 4.5.5)."""
    out: dict[str, str] = {}
    for change in (*CHANGES, *STABLE_ONLY):
        for first, _ in landed_of(change).stable:
            out.setdefault(resolve_release(first, parse_release(first)).policy_id, first)
    return out


def pick_key(keys: Iterable[str], kernel: str) -> str | None:
    """The key of a per-kernel value that speaks for `kernel`: the kernel's own name, else the
    newest release key at or before its release (a stable key x.y.z only on its own x.y line;
    a review version only by its name). None if no key does."""
    names = list(keys)
    if kernel in names:
        return kernel
    release = resolve(kernel).release
    best: tuple[Release, str] | None = None
    for name in names:
        key = resolve(name)
        if key.review or key.release > release:
            continue
        if key.release.sublevel and key.release.line != release.line:
            continue
        if best is None or key.release > best[0]:
            best = (key.release, name)
    return None if best is None else best[1]


def all_policies() -> dict[str, type[Policy]]:
    """Every distinct policy: one per release where an effective change landed, the stable
    releases with a modelled backport, and the review versions."""
    out: dict[str, type[Policy]] = {}
    for change in (*CHANGES, *STABLE_ONLY):
        record = landed_of(change)
        if effective(change) and change not in STABLE_ONLY:
            p = resolve_release(f"v{record.release}", record.release).policy
            out.setdefault(p.id, p)
        for first, _ in record.stable:
            p = resolve_release(first, parse_release(first)).policy
            out.setdefault(p.id, p)
    for name in REVIEW_VERSIONS:
        out[name] = resolve(name).policy
    return dict(sorted(out.items(), key=lambda kv: _order(kv[0])))


def _order(policy_name: str) -> tuple[Release, int]:
    r = resolve(policy_name)
    return (r.release, int(r.review) + len(r.backports))
