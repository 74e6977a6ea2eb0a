"""Kernel policies: the rule changes of each release (vX_Y.py), composed per release by
timeline.py."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.release import Release, ReleaseError, parse_release
from cowlab.policy.timeline import CHANGES, Resolved, all_policies, resolve

POLICIES: dict[str, type[Policy]] = all_policies()


def get_policy(kernel: str) -> Policy:
    """The policy answering for a release, policy id or review version; ReleaseError (a
    ValueError) names the range."""
    return resolve(kernel).policy()


__all__ = [
    "CHANGES",
    "POLICIES",
    "Policy",
    "Release",
    "ReleaseError",
    "Resolved",
    "get_policy",
    "parse_release",
    "resolve",
]
