"""YAML loaded safely, with the line and column of every value kept for error messages (its
own module: a document built as data, cow_matrix's, imports no YAML)."""

from __future__ import annotations

import functools
from typing import Any

import yaml

from cowlab.scenario.located import LList, LMap, Loc


class YamlSyntaxError(Exception):
    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def _loc(node: yaml.Node) -> Loc:
    return Loc(node.start_mark.line + 1, node.start_mark.column + 1)


@functools.lru_cache(maxsize=4096)
def _tag(kind: type, value: str | None, implicit: object) -> str:
    """SafeLoader's tag for a node: with no path resolvers (SafeLoader has none) a function of
    the node's kind, text and implicitness alone; scenario files repeat the same words."""
    return str(yaml.SafeLoader.resolve(_RESOLVER, kind, value, implicit))


_RESOLVER = yaml.SafeLoader("")


class _CachedTags:
    """SafeLoader's tags from _tag, and no path of nodes kept for path resolvers it lacks."""

    def resolve(self, kind: type, value: str | None, implicit: object) -> str:
        return _tag(kind, value, implicit)

    def descend_resolver(self, current_node: object, current_index: object) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass


# libyaml's composer, when PyYAML has it: the same nodes, tags and positions as the Python one
# (checked on every example), ten times faster. Text it refuses, or with characters the Python
# reader refuses, is composed again by the Python loader, whose messages the errors quote.
_C_LOADER = getattr(yaml, "CSafeLoader", None)
FAST_LOADER = (
    None
    if _C_LOADER is None or yaml.SafeLoader.yaml_path_resolvers
    else type("FastLoader", (_CachedTags, _C_LOADER), {})
)


def load_located(text: str) -> Any:
    """Parse one YAML document into LMap/LList/scalars; YamlSyntaxError on anything else."""
    if FAST_LOADER is not None and not yaml.reader.Reader.NON_PRINTABLE.search(text):
        try:
            node = yaml.compose(text, Loader=FAST_LOADER)
        except yaml.YAMLError:
            pass  # the Python loader says why, below
        else:
            return None if node is None else _build(node, yaml.SafeLoader(""))
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        loc = Loc(mark.line + 1, mark.column + 1) if mark else Loc(1, 1)
        raise YamlSyntaxError(loc, f"invalid YAML: {e.problem or e.context}") from None
    except yaml.reader.ReaderError as e:
        before = text[: e.position]
        loc = Loc(before.count("\n") + 1, len(before) - before.rfind("\n"))
        raise YamlSyntaxError(
            loc, f"invalid YAML: character {e.character!r} is not allowed"
        ) from None
    except yaml.YAMLError as e:
        raise YamlSyntaxError(Loc(1, 1), f"invalid YAML: {e}") from None
    if node is None:
        return None
    return _build(node, yaml.SafeLoader(""))


def _build(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    if isinstance(node, yaml.MappingNode):
        out = LMap(_loc(node))
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlSyntaxError(_loc(key_node), "a mapping key must be a plain word")
            _scalar(key_node, loader)  # a bad scalar is still an error
            key = key_node.value  # as written: `5.10` is release 5.10, not the number 5.1
            if key in out:
                raise YamlSyntaxError(_loc(key_node), f"key {key!r} appears twice")
            out[key] = _build(value_node, loader)
            out.key_locs[key] = _loc(key_node)
            out.val_locs[key] = _loc(value_node)
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = LList(_loc(node))
        for item in node.value:
            seq.append(_build(item, loader))
            seq.item_locs.append(_loc(item))
        return seq
    return _scalar(node, loader)


# the tag the composer gives a plain word or quoted text (and an explicit !!str)
STR_TAG = "tag:yaml.org,2002:str"


def _scalar(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    """A scalar as safe_load would build it; unknown tags (!!python/...) are refused. Text is
    its own value (SafeConstructor.construct_yaml_str returns node.value): most scalars skip
    the constructor's bookkeeping."""
    if node.tag == STR_TAG:
        return node.value
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e)
        raise YamlSyntaxError(_loc(node), f"invalid value: {problem}") from None
    except ValueError as e:  # an integer of more digits than int() takes
        raise YamlSyntaxError(_loc(node), f"invalid value: {e}") from None
