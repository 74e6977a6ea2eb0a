"""A copy of a machine for the search: what `copy.deepcopy` makes, several times faster.

The search copies its machine once per letter. `copy.deepcopy` spends most of that on its
generic protocol (`__reduce_ex__`, a dispatch and a memo entry for every int of every list).
`deep_copy` makes the same copy — every object reached, aliases kept as aliases, the memo's
shared objects shared — but walks the common kinds itself: NumPy arrays by `.copy()` (a
memoryview of one as a view of the copy, as mm/page_alloc.py has copy.deepcopy make it), lists,
dicts, sets and tuples element by element (immutable elements taken as they are), and plain
objects by their `__dict__` or `__slots__`, whatever attributes they hold, so a field added to
any class of the machine is copied without this module knowing of it. A class with its own
`__deepcopy__` (History, CowLog) is asked directly, as `copy.deepcopy` asks it, and a
`Counter` is rebuilt from its items, as its `__reduce__` has it; anything else (a class with
its own `__reduce__`, another dict subclass, an iterator) goes to `copy.deepcopy` with the same
memo. How to copy each class is decided once, on its first copy.
"""

from __future__ import annotations

import copy
from collections import Counter
from types import FunctionType
from typing import Any

import numpy as np

# kinds whose values never change: a copy is the value itself (as copy.deepcopy has it)
IMMUTABLE = frozenset(
    {int, float, bool, complex, str, bytes, type(None), type, range, FunctionType}
    | {np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.float64}
)
_PLAIN = (object.__reduce_ex__, object.__reduce__)


def deep_copy(value: Any, memo: dict[int, Any]) -> Any:
    """copy.deepcopy(value, memo), faster for the kinds a machine is made of."""
    kind = type(value)
    if kind in IMMUTABLE:
        return value
    done = memo.get(id(value), memo)
    if done is not memo:
        return done
    if kind is np.ndarray:
        out: Any = value.copy()
        memo[id(value)] = out
        return out
    # a frame array's or a page table's, the only views a machine holds: a view of the array's
    # copy (not checked as page_alloc._view_of checks any view: a tenth of a machine's copy)
    if kind is memoryview:
        out = memo[id(value)] = deep_copy(value.obj, memo).data
        return out
    if kind is list:
        out = memo[id(value)] = []
        out += [v if type(v) in IMMUTABLE else deep_copy(v, memo) for v in value]
        return out
    if kind is dict:
        out = memo[id(value)] = {}
        return _fill(out, value, memo)
    if kind is set:
        out = memo[id(value)] = set()
        out.update([deep_copy(v, memo) for v in value])
        return out
    if kind is tuple or kind is frozenset:
        if all(type(v) in IMMUTABLE for v in value):
            return value
        items = [deep_copy(v, memo) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value  # as copy.deepcopy: nothing in it changed
        return memo.setdefault(id(value), kind(items))
    plan = _PLANS.get(kind)
    if plan is None:
        plan = _PLANS[kind] = _plan(kind)
    if type(plan) is tuple:
        return _copy_object(value, kind, plan, memo)
    if plan is _OWN:  # its own __deepcopy__, called as copy.deepcopy calls it
        out = memo[id(value)] = value.__deepcopy__(memo)
        return out
    if plan is _COUNTER:  # what Counter.__reduce__ rebuilds it from: its items
        out = memo[id(value)] = Counter()
        return _fill(out, value, memo)
    return copy.deepcopy(value, memo)


def _fill(out: dict[Any, Any], value: dict[Any, Any], memo: dict[int, Any]) -> Any:
    """out, given a copy of each of value's items in order."""
    for key, v in value.items():
        key = key if type(key) in IMMUTABLE else deep_copy(key, memo)
        out[key] = v if type(v) in IMMUTABLE else deep_copy(v, memo)
    return out


def _plan(kind: type) -> object:
    """How deep_copy copies an object of kind: _OWN (its __deepcopy__), _COUNTER, the
    attribute names of its slots (a plain object: copied attribute by attribute, as
    copy.deepcopy would), or _OTHER (copy.deepcopy's protocol)."""
    if kind is Counter:
        return _COUNTER
    if getattr(kind, "__deepcopy__", None) is not None and not issubclass(kind, type):
        return _OWN
    plain = (
        (kind.__reduce_ex__, kind.__reduce__) == _PLAIN
        and getattr(kind, "__setstate__", None) is None
        and kind.__getstate__ is object.__getstate__
        and kind.__new__ is object.__new__
    )
    return _slots(kind) if plain else _OTHER


_OWN, _OTHER, _COUNTER = object(), object(), object()
_PLANS: dict[type, object] = {}


def _copy_object(value: Any, kind: type, slots: tuple[str, ...], memo: dict[int, Any]) -> Any:
    out: Any = object.__new__(kind)
    memo[id(value)] = out
    for name in slots:
        if hasattr(value, name):
            object.__setattr__(out, name, deep_copy(getattr(value, name), memo))
    if kind.__dictoffset__:
        copied = out.__dict__
        for name, v in value.__dict__.items():
            copied[name] = v if type(v) in IMMUTABLE else deep_copy(v, memo)
    return out


def _slots(kind: type) -> tuple[str, ...]:
    """Every slot of kind and its bases (not __dict__ or __weakref__)."""
    declared = [cls.__dict__.get("__slots__", ()) for cls in kind.__mro__]
    return tuple(
        name
        for slots in declared
        for name in ((slots,) if isinstance(slots, str) else slots)
        if name not in ("__dict__", "__weakref__")
    )


def release(memo: dict[int, Any]) -> None:
    """Empty the attributes of every instance a deep_copy with this memo made, for a copy
    that is used no more (what the memo shares, an entry of an object to itself, is left).
    A machine is cycles (a VMA and its mm, a process and its kernel, a row field and its
    rows), which only the cyclic collector frees, after a scan of every object it holds: it
    took 7 % of the search's CPU. Without them reference counting frees the copy at once."""
    for original, made in memo.items():
        state = getattr(made, "__dict__", None) if id(made) != original else None
        if state is not None:
            state.clear()
