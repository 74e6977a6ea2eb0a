"""The unstable tree's red-black tree (cowlab.mm.ksm_tree): the shape lib/rbtree.c gives, and the
red-black rules after any sequence of inserts and erases."""

from __future__ import annotations

import random

from cowlab.mm.ksm_tree import RbNode, RbTree


def put(tree: RbTree[int], key: int) -> None:
    _found, parent, side = tree.walk(lambda other: (key > other) - (key < other))
    tree.insert(key, parent, side)


def shape(node: RbNode[int] | None) -> object:
    """(key, 'r'/'b', left, right), or None."""
    if node is None:
        return None
    return (node.item, "r" if node.red else "b", shape(node.left), shape(node.right))


def check(node: RbNode[int] | None, lo: float, hi: float) -> int:
    """BST order within (lo, hi), parent links, no red child of a red node; the black height."""
    if node is None:
        return 1
    assert lo < node.item < hi
    for child in (node.left, node.right):
        if child is not None:
            assert child.parent is node and not (node.red and child.red)
    left = check(node.left, lo, node.item)
    assert left == check(node.right, node.item, hi)
    return left + (not node.red)


def test_the_shape_by_hand() -> None:
    """1, 2, 3: the third insert rotates, 2 is the black root of two red leaves; 4: its red
    uncle 1 makes a colour flip (1 and 3 black); 5: a rotation at 3 (4 black over 3 and 5,
    red). Erasing 2 (two children) moves its successor 3 up in 2's colour; 3 was a red leaf,
    so nothing else changes."""
    tree: RbTree[int] = RbTree()
    for key in (1, 2, 3):
        put(tree, key)
    assert shape(tree.root) == (2, "b", (1, "r", None, None), (3, "r", None, None))
    put(tree, 4)
    put(tree, 5)
    assert shape(tree.root) == (
        2, "b", (1, "b", None, None), (4, "b", (3, "r", None, None), (5, "r", None, None))
    )  # fmt: skip
    tree.erase(2)
    assert shape(tree.root) == (3, "b", (1, "b", None, None), (4, "b", None, (5, "r", None, None)))


def test_red_black_rules_hold_through_inserts_and_erases() -> None:
    rng = random.Random(7)
    for _ in range(50):
        tree: RbTree[int] = RbTree()
        keys = rng.sample(range(1000), rng.randint(1, 60))
        for key in keys:
            put(tree, key)
            assert tree.root is not None and not tree.root.red
            check(tree.root, -1, 1000)
        for key in rng.sample(keys, len(keys)):
            tree.erase(key)
            assert tree.root is None or not tree.root.red
            check(tree.root, -1, 1000)
        assert tree.root is None and not tree.of


def test_a_walk_can_be_abandoned() -> None:
    tree: RbTree[int] = RbTree()
    for key in (5, 3, 8):
        put(tree, key)
    assert tree.walk(lambda other: None) == (None, None, 2)
    found, _parent, _side = tree.walk(lambda other: (other < 8) - (other > 8))
    assert found is not None and found.item == 8
