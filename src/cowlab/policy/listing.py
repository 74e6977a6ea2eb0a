"""`cowlab kernels`: the timeline as rows (for --json) and as text."""

from __future__ import annotations

from typing import Any

from cowlab.policy.base import Policy
from cowlab.policy.history import stable_commit_text
from cowlab.policy.release import LONG_TERM, mainline_releases, newest_stable, parse_release
from cowlab.policy.timeline import (
    CHANGES,
    REVIEW_VERSIONS,
    STABLE_ONLY,
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
        "stable": [{"release": r, "commit": c or None} for r, c in record.stable],
        "stable_evidence": record.stable_evidence or None,
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
        {
            "line": str(parse_release(first).mainline),
            "release": first,
            "commit": commit or None,
            "upstream": change_row(c),
            "policy": policy_of(first),
        }
        for first, commit, c in sorted(
            ((f, commit, c) for c in (*CHANGES, *STABLE_ONLY) for f, commit in landed_of(c).stable),
            key=lambda t: (parse_release(t[0]), landed_of(t[2]).commits),
        )
    ]
    reviews = [
        {"name": name, "in_place_of": str(base), "changes": [change_row(c) for c in extra]}
        for name, (base, extra) in REVIEW_VERSIONS.items()
    ]
    return {
        "releases": releases,
        "stable_backports": backports,
        "stable_lines": stable_lines(backports),
        "review_versions": reviews,
    }


def stable_lines(backports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each long-term line (and each other line with a recorded backport): its x.y.0 policy, the
    newest stable release cowlab knows and its policy, and the backports, oldest first."""
    lines = sorted({*LONG_TERM, *(parse_release(b["release"]).line for b in backports)})
    out = []
    for line in lines:
        name = f"{line[0]}.{line[1]}"
        newest = newest_stable(line)
        out.append(
            {
                "line": name,
                "long_term": line in LONG_TERM,
                "mainline_policy": policy_of(name),
                "newest": None if newest is None else str(newest),
                "newest_policy": None if newest is None else policy_of(str(newest)),
                "backports": [b for b in backports if b["line"] == name],
            }
        )
    return out


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
        "stable backports, per stable line: a release x.y alone is x.y.0; x.y.z adds every "
        "backport its line had by z"
    )
    out.append("  first     stable commit  upstream (release)     policy from there    rule change")
    for line in rows["stable_lines"]:
        newest = (
            f"newest known {line['newest']}, policy {line['newest_policy']}"
            if line["newest"]
            else "no newest release recorded"
        )
        mark = " LTS" if line["long_term"] else ""
        out.append(f"  {line['line']}.y{mark}: x.y.0 policy {line['mainline_policy']}; {newest}")
        if not line["backports"]:
            out.append("    (no modelled change recorded as backported)")
        for b in line["backports"]:
            up = b["upstream"]
            upstream = f"{', '.join(up['commits'])} ({up['release']})"
            out.append(
                f"    {b['release']:<9} {stable_commit_text(b['commit'] or ''):<14} {upstream:<22} "
                f"{b['policy']:<20} "
                f"{up['title']}"
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
    if resolved.backports:
        ports = "; ".join(
            f"{commit + ' of ' if commit else ''}{landed_of(c).commits[0]}"
            f"{'' if commit else ' (stable id not found)'}: {landed_of(c).what}"
            for c, commit in resolved.backports
        )
        several = "s" if len(resolved.backports) > 1 else ""
        return f"{resolved.release.mainline}'s rules and the stable backport{several} {ports}"
    if resolved.review:
        return f"never released: {landed_of(policy.changes[-1]).what}"
    newest = max(landed_of(c).release for c in policy.changes if effective(c))
    return "; ".join(
        f"{landed_of(c).what} ({', '.join(landed_of(c).commits) or 'id not confirmed'})"
        for c in policy.changes
        if effective(c) and landed_of(c).release == newest
    )
