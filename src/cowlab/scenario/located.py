"""A scenario document's mappings and lists with the line and column of every value, kept for
error messages: read from YAML (yaml_text.load_located) or built from data (located)."""

from __future__ import annotations

from typing import Any, NamedTuple


class Loc(NamedTuple):
    """1-based line and column, as editors and compilers print them (a tuple: one is made for
    every key and value of a file)."""

    line: int
    col: int


class LMap(dict[str, Any]):
    """A YAML mapping; ``loc`` is its own position, ``key_locs``/``val_locs`` its entries'."""

    def __init__(self, loc: Loc) -> None:
        super().__init__()
        self.loc = loc
        self.key_locs: dict[str, Loc] = {}
        self.val_locs: dict[str, Loc] = {}


class LList(list[Any]):
    """A YAML sequence; ``item_locs[i]`` is the position of item i."""

    def __init__(self, loc: Loc) -> None:
        super().__init__()
        self.loc = loc
        self.item_locs: list[Loc] = []


def located(value: Any, loc: Loc) -> Any:
    """Data a program built (dicts, lists and scalars, as yaml.safe_load would give them) as
    load_located's LMap/LList, every position loc: there is no text to point into."""
    if isinstance(value, dict):
        out = LMap(loc)
        for key, item in value.items():
            out[key] = located(item, loc)
            out.key_locs[key] = out.val_locs[key] = loc
        return out
    if isinstance(value, list):
        seq = LList(loc)
        seq.extend(located(item, loc) for item in value)
        seq.item_locs = [loc] * len(seq)
        return seq
    return value
