"""Exhaustive exploration for minimal counterexamples: every program over an alphabet, shortest
first, until one breaks the property. What Hypothesis finds by chance, this finds by construction
(for small alphabets and lengths)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def shortest_violation(
    breaks: Callable[[list[T]], bool],
    alphabet: Sequence[T],
    max_len: int,
    prefix: Sequence[T] = (),
) -> list[T] | None:
    """The first program (prefix + ops, fewest ops first, alphabet order) for which ``breaks``
    holds; None when no program up to max_len ops does."""
    for length in range(max_len + 1):
        for ops in itertools.product(alphabet, repeat=length):
            program = [*prefix, *ops]
            if breaks(program):
                return program
    return None
