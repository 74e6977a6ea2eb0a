"""Kernel generations as policies: each module holds only the decisions of one kernel."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.v4_5 import V4_5
from cowlab.policy.v4_5_6d0a07e import V4_5_6d0a07e
from cowlab.policy.v4_5_6d0a07e_early import V4_5_6d0a07e_early
from cowlab.policy.v4_14 import V4_14
from cowlab.policy.v5_8 import V5_8
from cowlab.policy.v5_9 import V5_9
from cowlab.policy.v5_18 import V5_18
from cowlab.policy.v5_19 import V5_19
from cowlab.policy.v6_15 import V6_15
from cowlab.policy.v6_18 import V6_18

GENERATIONS = (
    V4_5,
    V4_5_6d0a07e,
    V4_5_6d0a07e_early,
    V4_14,
    V5_8,
    V5_9,
    V5_18,
    V5_19,
    V6_15,
    V6_18,
)
POLICIES: dict[str, type[Policy]] = {p.id: p for p in GENERATIONS}


def get_policy(kernel_id: str) -> Policy:
    """The policy for a kernel id; ValueError names the known ids."""
    try:
        return POLICIES[kernel_id]()
    except KeyError:
        known = ", ".join(POLICIES)
        raise ValueError(f"unknown kernel id {kernel_id!r} (known: {known})") from None


__all__ = ["POLICIES", "Policy", "get_policy"]
