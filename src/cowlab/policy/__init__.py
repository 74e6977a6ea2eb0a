"""Kernel generations as policies: each module holds only the decisions of one kernel."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.v4_5 import V4_5
from cowlab.policy.v4_5_6d0a07e import V4_5_6d0a07e
from cowlab.policy.v4_5_6d0a07e_early import V4_5_6d0a07e_early

POLICIES: dict[str, type[Policy]] = {p.id: p for p in (V4_5, V4_5_6d0a07e, V4_5_6d0a07e_early)}


def get_policy(kernel_id: str) -> Policy:
    """The policy for a kernel id; ValueError names the known ids."""
    try:
        return POLICIES[kernel_id]()
    except KeyError:
        known = ", ".join(POLICIES)
        raise ValueError(f"unknown kernel id {kernel_id!r} (known: {known})") from None


__all__ = ["POLICIES", "Policy", "get_policy"]
