"""Release arithmetic for tests: a kernel (release, policy id or review version) against the
release a rule landed in, as the tests' own statement of where the rule holds."""

from __future__ import annotations

from cowlab.policy import parse_release, resolve


def since(kernel: str, release: str) -> bool:
    """Is `kernel` at or after mainline `release` (a stable or review kernel by its release)?"""
    return resolve(kernel).release >= parse_release(release)


def between(kernel: str, first: str, until: str) -> bool:
    """first <= kernel < until."""
    return since(kernel, first) and not since(kernel, until)
