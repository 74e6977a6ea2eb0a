"""mm/ksm.c's unstable tree: rmap_items in a red-black tree ordered by their pages' bytes.

unstable_tree_search_insert() walks from the root comparing the scanned page with each node's
page (memcmp_pages) as it is *now*; the tree is rebuilt every pass (root_unstable_tree reset to
RB_ROOT). A node whose page get_mergeable_page() no longer finds (unmapped, or no longer an
anonymous page: e.g. mapped to the shared zero page by a THP split) ends the search: nothing is
inserted and nothing found, for the page searched for and for every later search that meets
that node in this pass. A node leaves the tree when its page was merged
(try_to_merge_with_ksm_page -> remove_rmap_item_from_tree -> rb_erase).

The balancing is lib/rbtree.c's (the classic red-black insertion and deletion, a deleted node
with two children replaced by its in-order successor), so the shape, and with it which nodes a
search meets, is the kernel's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False)
class RbNode(Generic[T]):
    """struct rb_node with its payload (an rmap_item)."""

    item: T
    red: bool = True
    parent: RbNode[T] | None = None
    left: RbNode[T] | None = None
    right: RbNode[T] | None = None


class RbTree(Generic[T]):
    """struct rb_root: rb_link_node + rb_insert_color, rb_erase."""

    def __init__(self) -> None:
        self.root: RbNode[T] | None = None
        self.of: dict[int, RbNode[T]] = {}  # id(item) -> its node

    def walk(
        self, compare: Callable[[T], int | None]
    ) -> tuple[RbNode[T] | None, RbNode[T] | None, int]:
        """Descend from the root: compare(item) < 0 goes left, > 0 right, 0 stops there, None
        ends the walk. Returns (node it stopped at or None, parent for an insert, direction)."""
        node, parent, side = self.root, None, 0
        while node is not None:
            got = compare(node.item)
            if got is None:
                return None, None, 2  # the walk was abandoned
            if got == 0:
                return node, None, 0
            parent, side = node, got
            node = node.left if got < 0 else node.right
        return None, parent, side

    def insert(self, item: T, parent: RbNode[T] | None, side: int) -> None:
        """rb_link_node() under parent (side < 0: left) and rb_insert_color()."""
        node = RbNode(item, parent=parent)
        self.of[id(item)] = node
        if parent is None:
            self.root = node
        elif side < 0:
            parent.left = node
        else:
            parent.right = node
        self._insert_fixup(node)

    def erase(self, item: T) -> None:
        """rb_erase() of the item's node, if it is in the tree."""
        node = self.of.pop(id(item), None)
        if node is not None:
            self._delete(node)

    # --- balancing ---------------------------------------------------------------------

    def _rotate(self, x: RbNode[T], left: bool) -> None:
        """Rotate left (x's right child takes its place) or right."""
        y = x.right if left else x.left
        assert y is not None
        inner = y.left if left else y.right
        if left:
            x.right = inner
        else:
            x.left = inner
        if inner is not None:
            inner.parent = x
        self._replace(x, y)
        if left:
            y.left = x
        else:
            y.right = x
        x.parent = y

    def _replace(self, old: RbNode[T], new: RbNode[T] | None) -> None:
        """new takes old's place under old's parent."""
        parent = old.parent
        if parent is None:
            self.root = new
        elif parent.left is old:
            parent.left = new
        else:
            parent.right = new
        if new is not None:
            new.parent = parent

    def _insert_fixup(self, z: RbNode[T]) -> None:
        while z.parent is not None and z.parent.red:
            parent = z.parent
            grand = parent.parent
            assert grand is not None  # a red node is never the root
            on_left = parent is grand.left
            uncle = grand.right if on_left else grand.left
            if uncle is not None and uncle.red:
                parent.red = uncle.red = False
                grand.red = True
                z = grand
                continue
            if z is (parent.right if on_left else parent.left):
                z = parent
                self._rotate(z, left=on_left)
                up = z.parent
                assert up is not None
                parent = up
            parent.red = False
            grand.red = True
            self._rotate(grand, left=not on_left)
        assert self.root is not None
        self.root.red = False

    def _delete(self, z: RbNode[T]) -> None:
        """Remove z; with two children its in-order successor takes its place and colour."""
        removed_red = z.red
        if z.left is None or z.right is None:
            child = z.left if z.right is None else z.right
            parent = z.parent
            self._replace(z, child)
        else:
            y = _leftmost(z.right)
            removed_red = y.red
            child = y.right
            if y.parent is z:
                parent = y
            else:
                parent = y.parent
                self._replace(y, child)
                y.right = z.right
                z.right.parent = y
            self._replace(z, y)
            y.left = z.left
            z.left.parent = y
            y.red = z.red
        if not removed_red:
            self._delete_fixup(child, parent)

    def _delete_fixup(self, x: RbNode[T] | None, parent: RbNode[T] | None) -> None:
        while x is not self.root and (x is None or not x.red):
            assert parent is not None
            on_left = x is parent.left
            w = parent.right if on_left else parent.left
            assert w is not None  # x carries an extra black: its sibling exists
            if w.red:
                w.red, parent.red = False, True
                self._rotate(parent, left=on_left)
                w = parent.right if on_left else parent.left
                assert w is not None
            near, far = (w.left, w.right) if on_left else (w.right, w.left)
            if (near is None or not near.red) and (far is None or not far.red):
                w.red = True
                x, parent = parent, parent.parent
                continue
            if far is None or not far.red:
                assert near is not None
                near.red, w.red = False, True
                self._rotate(w, left=not on_left)
                w = parent.right if on_left else parent.left
                assert w is not None
                far = w.right if on_left else w.left
            w.red, parent.red = parent.red, False
            if far is not None:
                far.red = False
            self._rotate(parent, left=on_left)
            x = self.root
            parent = None
        if x is not None:
            x.red = False


def _leftmost(node: RbNode[T]) -> RbNode[T]:
    while node.left is not None:
        node = node.left
    return node
