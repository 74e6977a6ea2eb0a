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
    """A file to write: not a directory, in a directory that is there and can be written."""
    path = Path(text)
    if path.is_dir() or not (path.parent.is_dir() and _writable(path.parent)):
        raise argparse.ArgumentTypeError(f"{text}: expected a file in a writable directory")
    return text


def _writable(path: Path) -> bool:
    """PATH is a writable directory, or its nearest existing ancestor is one."""
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    return existing.is_dir() and os.access(existing, os.W_OK)
