"""Linux 6.14: rotational swap devices get clusters too."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "6.14",
    ("7277433096f6", "0b310d9cfd94"),
    "mm, swap: remove old allocation path for HDD; mm, swap: use cluster lock for HDD (Kairui "
    "Song's swap allocator rework)",
    "a rotational block device (hdd) also gives a THP or mTHP a run of slots, so it is swapped "
    "out whole; only a swap file still splits",
    "6.13.2 -> 6.14.0 mm/swapfile.c setup_clusters, scan_swap_map_slots, swapon (verified; "
    "docs/sources-swap.md §1a). The first patch's v1 (Oct 2024) moves setup_clusters out of "
    "swapon's non-rotational branch and says it enables mTHP swap on HDD; the second drops "
    "scan_swap_map_slots' cluster_info test. Ids: akpm's mm push of 26 Jan 2025 (the day "
    "mm-stable-2025-01-26-14-59 was tagged), unchanged in next-20250128 after Linus' merge "
    "9c5968db9e62 of that tag, and in another tree's push of 30 Jan 2025",
)
class RotationalClusters(Policy):
    thp_swap_devices = frozenset({"hdd", "ssd", "zram"})
