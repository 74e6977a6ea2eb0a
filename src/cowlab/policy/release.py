"""Linux release numbers: parsing `6.6`, `v5.10`, `4.19.0`, `5.4.286`, their order, the range
cowlab models (4.5 to 6.18), and the newest stable release known on each long-term line."""

from __future__ import annotations

import re
from dataclasses import dataclass

# the last minor release of each major line (4.20 was followed by 5.0, 5.19 by 6.0)
LAST_MINOR = {4: 20, 5: 19}
FIRST = (4, 5)
NEWEST = (6, 18)
LONG_TERM = ((4, 9), (4, 14), (4, 19), (5, 4), (5, 10), (5, 15), (6, 1), (6, 6), (6, 12))

# the newest stable release of each long-term line, as the stable announcements on
# stable@vger.kernel.org show it (docs/timeline-sources.md, "Stable backports"): 4.9, 4.14, 4.19
# and 5.4 are end of life (their last release); the others as of the newest announcement read,
# 4 Jul 2026. A later x.y.z of these lines is refused: cowlab cannot know what it carries.
NEWEST_STABLE: dict[tuple[int, int], int] = {
    (4, 9): 337,  # 7 Jan 2023, the last 4.9.y
    (4, 14): 336,  # 10 Jan 2024, the last 4.14.y
    (4, 19): 325,  # 5 Dec 2024, the last 4.19.y
    (5, 4): 302,  # 3 Dec 2025, "the LAST 5.4.y release"
    (5, 10): 260,  # 4 Jul 2026
    (5, 15): 211,  # 4 Jul 2026
    (6, 1): 177,  # 4 Jul 2026
    (6, 6): 144,  # 4 Jul 2026
    (6, 12): 95,  # 4 Jul 2026
}

_RELEASE = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


class ReleaseError(ValueError):
    """A text that is not a release cowlab models; the message names the range."""


class UnknownStableError(ReleaseError):
    """x.y.z beyond the newest stable release known on a long-term line; the message names it."""


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
    last = NEWEST_STABLE.get(release.line)
    if last is not None and release.sublevel > last:
        raise UnknownStableError(
            f"Linux {release} is not a known release: the newest {release.mainline}.y cowlab "
            f"knows is {release.mainline}.{last}"
        )
    return release


def newest_stable(line: tuple[int, int]) -> Release | None:
    """The newest known stable release of a long-term line (None for other lines)."""
    last = NEWEST_STABLE.get(line)
    return None if last is None else Release(*line, last)


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
