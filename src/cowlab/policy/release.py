"""Linux release numbers: parsing `6.6`, `v5.10`, `4.19.0`, `5.4.286`, their order, and the range
cowlab models (4.5 to 6.18)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# the last minor release of each major line (4.20 was followed by 5.0, 5.19 by 6.0)
LAST_MINOR = {4: 20, 5: 19}
FIRST = (4, 5)
NEWEST = (6, 18)
LONG_TERM = ((4, 9), (4, 14), (4, 19), (5, 4), (5, 10), (5, 15), (6, 1), (6, 6), (6, 12))

_RELEASE = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


class ReleaseError(ValueError):
    """A text that is not a release cowlab models; the message names the range."""


@dataclass(frozen=True, order=True)
class Release:
    """x.y.z; z = 0 is the mainline release, z > 0 a stable release of the x.y line."""

    major: int
    minor: int
    sublevel: int = 0

    def __str__(self) -> str:
        base = f"{self.major}.{self.minor}"
        return f"{base}.{self.sublevel}" if self.sublevel else base

    @property
    def line(self) -> tuple[int, int]:
        return (self.major, self.minor)

    @property
    def mainline(self) -> Release:
        return Release(self.major, self.minor)

    @property
    def long_term(self) -> bool:
        return self.line in LONG_TERM


def parse_release(text: str) -> Release:
    """`6.6`, `v6.1`, `4.19.0`, `5.4.286` -> Release; ReleaseError names the modelled range."""
    m = _RELEASE.fullmatch(text.strip())
    if m is None:
        raise ReleaseError(f"expected a Linux release such as 6.6, v5.10 or 5.4.286, got {text!r}")
    release = Release(int(m[1]), int(m[2]), int(m[3] or 0))
    if not exists(release.line):
        first, newest = ".".join(map(str, FIRST)), ".".join(map(str, NEWEST))
        raise ReleaseError(f"Linux {release.mainline} is not a release from {first} to {newest}")
    return release


def exists(line: tuple[int, int]) -> bool:
    """Is x.y a mainline release from 4.5 to 6.18?"""
    major, minor = line
    if not FIRST <= line <= NEWEST:
        return False
    return minor <= LAST_MINOR.get(major, NEWEST[1])


def mainline_releases() -> list[Release]:
    """Every mainline release cowlab models, oldest first."""
    out = []
    for major in range(FIRST[0], NEWEST[0] + 1):
        for minor in range(LAST_MINOR.get(major, NEWEST[1]) + 1):
            if exists((major, minor)):
                out.append(Release(major, minor))
    return out
