"""Argument types the commands share: a bad value is refused while the command line is read,
in one line naming the option, before any long run starts."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path


def at_least(low: int) -> Callable[[str], int]:
    """An integer option of LOW or more."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer of {low} or more, got {text!r}")
        return value

    return parse


def out_dir(text: str) -> str:
    """A directory to write into: one that is, or can be made (not made here)."""
    if not _writable(Path(text)):
        raise argparse.ArgumentTypeError(f"{text}: not a directory that can be written")
    return text


def out_file(text: str) -> str:
    """A file to write: not a directory, in a directory that is there and can be written, and
    writable itself if it is there."""
    path = Path(text)
    try:
        there = os.path.lexists(path)
        good = path.parent.is_dir() and _writable(path.parent) and not path.is_dir()
        good = good and (not there or os.access(path, os.W_OK))
    except OSError:
        good = False
    if not good:
        raise argparse.ArgumentTypeError(f"{text}: expected a file in a writable directory")
    return text


def _writable(path: Path) -> bool:
    """PATH is a writable directory, or the nearest of it and its ancestors that is there (a
    dangling symbolic link is there, and no directory) is one."""
    try:
        there = next(p for p in (path, *path.absolute().parents) if os.path.lexists(p))
        return there.is_dir() and os.access(there, os.W_OK)
    except OSError:  # a directory on the way that may not be searched
        return False
