"""Linux 6.14: rotational swap devices get clusters too."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "6.14",
    (),
    "mm, swap: the swap allocator rework (Kairui Song; cluster_info for every area, id not found)",
    "a rotational block device (hdd) also gives a THP or mTHP a run of slots, so it is swapped "
    "out whole; only a swap file still splits",
    "6.13.2 -> 6.14.0 mm/swapfile.c setup_clusters, scan_swap_map_slots, swapon (verified; "
    "docs/sources-swap.md §1a)",
)
class RotationalClusters(Policy):
    thp_swap_devices = frozenset({"hdd", "ssd", "zram"})
