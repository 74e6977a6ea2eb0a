"""`cowlab kernels`: the timeline as rows (for --json) and as text."""

from __future__ import annotations

from typing import Any

from cowlab.policy.base import Policy
from cowlab.policy.release import mainline_releases
from cowlab.policy.timeline import (
    CHANGES,
    REVIEW_VERSIONS,
    all_policies,
    effective,
    landed_of,
    resolve,
    resolve_release,
)


def change_row(change: type[Policy]) -> dict[str, Any]:
    record = landed_of(change)
    return {
        "change": change.__name__,
        "release": str(record.release),
        "commits": list(record.commits),
        "title": record.title,
        "what": record.what,
        "evidence": record.evidence,
        "invisible": record.invisible or None,
        "decides": effective(change),
        "stable": [{"release": r, "commit": c} for r, c in record.stable],
    }


def timeline_rows() -> dict[str, Any]:
    """Every mainline release with its policy and the changes landing there; the stable
    backports; the review versions."""
    releases = []
    for release in mainline_releases():
        landing = [c for c in CHANGES if landed_of(c).release == release]
        policy = resolve_release(f"v{release}", release).policy
        releases.append(
            {
                "release": str(release),
                "long_term": release.long_term,
                "policy": policy.id,
                "policy_answers_for": policy.release,
                "changes": [change_row(c) for c in landing],
            }
        )
    backports = [
        {"release": first, "commit": commit, "upstream": change_row(c), "policy": policy_of(first)}
        for c in CHANGES
        for first, commit in landed_of(c).stable
    ]
    reviews = [
        {"name": name, "in_place_of": str(base), "changes": [change_row(c) for c in extra]}
        for name, (base, extra) in REVIEW_VERSIONS.items()
    ]
    return {"releases": releases, "stable_backports": backports, "review_versions": reviews}


def policy_of(release: str) -> str:
    return resolve(release).policy_id


def render_timeline(rows: dict[str, Any]) -> str:
    """One line per release (LTS marked), each change under the release it landed in."""
    out = ["release   policy          rule changes landing in the release (LTS: long-term)"]
    for r in rows["releases"]:
        mark = " LTS" if r["long_term"] else ""
        head = f"{r['release'] + mark:<9} {r['policy']:<15}"
        if not r["changes"]:
            out.append(head.rstrip())
            continue
        for i, c in enumerate(r["changes"]):
            prefix = head if i == 0 else " " * len(head)
            commits = ", ".join(c["commits"]) or "id not confirmed"
            out.append(f"{prefix} {c['title']} [{commits}]")
            out.append(f"{'':<26}  {c['what']}")
            if c["invisible"]:
                out.append(f"{'':<26}  (no scenario tells it apart: {c['invisible']})")
    out.append("")
    out.append(
        "stable backports (release -> policy): a stable x.y.z carries them from that release"
    )
    for b in rows["stable_backports"]:
        up = b["upstream"]
        out.append(
            f"  {b['release']:<9} {b['policy']:<15} {b['commit']} = {', '.join(up['commits'])} "
            f"({up['release']}): {up['title']}"
        )
    out.append("")
    out.append("review versions (never released):")
    for v in rows["review_versions"]:
        for c in v["changes"]:
            out.append(f"  {v['name']:<24} in place of {v['in_place_of']}: {c['what']}")
    return "\n".join(out)


def policy_table() -> str:
    """A markdown table: each policy, the releases it answers for, and what changed there."""
    lines = [
        "| policy | answers for | what changed at its release (commits) |",
        "|---|---|---|",
    ]
    for pid, policy in all_policies().items():
        lines.append(f"| `{pid}` | {policy.release} | {_policy_news(policy)} |")
    return "\n".join(lines) + "\n"


def _policy_news(policy: type[Policy]) -> str:
    """What the policy's own changes do: its newest effective changes, or the extras of a
    stable release or review version."""
    resolved = resolve(policy.id)
    if resolved.review or resolved.backports:
        extra = policy.changes[-1]
        what = landed_of(extra).what
        if resolved.backports:
            ((_, commit),) = resolved.backports
            return (
                f"{resolved.release.mainline}'s rules and the stable backport {commit} of: {what}"
            )
        return f"never released: {what}"
    newest = max(landed_of(c).release for c in policy.changes if effective(c))
    return "; ".join(
        f"{landed_of(c).what} ({', '.join(landed_of(c).commits) or 'id not confirmed'})"
        for c in policy.changes
        if effective(c) and landed_of(c).release == newest
    )
