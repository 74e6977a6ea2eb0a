"""The swap device of each random program: drawn from the seed and the program's index only, and
written into the scenario as `config: swap_device`. Model only, no live kernel."""

from __future__ import annotations

import random
from collections import Counter

from cowlab.live.randomprog import (
    ALPHABET,
    NEEDS_SYSTEM_CHANGES,
    SWAP_DEVICE_SHARES,
    generate,
    parse_ops,
    swap_device,
    to_scenario,
    to_yaml,
)
from cowlab.mm.swapfile import SWAP_DEVICES


def test_devices_are_drawn_deterministically_from_the_seed() -> None:
    first = [swap_device(4242, i, ALPHABET) for i in range(200)]
    assert first == [swap_device(4242, i, ALPHABET) for i in range(200)]
    assert first != [swap_device(4243, i, ALPHABET) for i in range(200)]
    # each program's device depends on its index only, not on the draws before it
    assert [swap_device(4242, i, ALPHABET) for i in range(199, -1, -1)] == first[::-1]


def test_every_device_is_drawn_and_the_swap_file_keeps_half() -> None:
    assert set(SWAP_DEVICE_SHARES) == set(SWAP_DEVICES)
    counts = Counter(swap_device(7, i, ALPHABET) for i in range(3000))
    assert set(counts) == set(SWAP_DEVICES)
    assert 0.45 < counts["file"] / 3000 < 0.55  # shares 3 : 1 : 1 : 1
    for device in ("hdd", "ssd", "zram"):
        assert 0.13 < counts[device] / 3000 < 0.20


def test_without_system_changes_every_program_keeps_the_swap_file() -> None:
    ops = parse_ops(None, system_changes=False)
    assert not set(NEEDS_SYSTEM_CHANGES) & set(ops)
    assert {swap_device(4242, i, ops) for i in range(300)} == {"file"}


def test_the_device_does_not_change_the_programs() -> None:
    """The device comes from a stream of its own: the seed's programs are the ones it gave
    before devices were drawn, so figures stay comparable."""
    a, b = random.Random(11), random.Random(11)
    for i in range(20):
        swap_device(11, i, ALPHABET)
        assert generate(a, ALPHABET) == generate(b, ALPHABET)


def test_the_device_is_written_into_the_scenario() -> None:
    steps = generate(random.Random(3), ALPHABET)
    assert "config:" not in to_yaml("r", steps)  # the default swap file: no config line
    for device in SWAP_DEVICES:
        scenario = to_scenario("r", steps, device=device)
        assert scenario is not None and scenario.config.swap_device == device
