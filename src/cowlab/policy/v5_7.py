"""Linux 5.7: FOLL_PIN pins are counted apart from references."""

from __future__ import annotations

from cowlab.policy.base import Policy
from cowlab.policy.history import landed


@landed(
    "5.7",
    ("3faa52c03f44", "47e29d32afba"),
    "mm/gup: track FOLL_PIN pages; page->hpage_pinned_refcount: exact pin counts for huge pages",
    "a FOLL_PIN pin adds GUP_PIN_COUNTING_BIAS (1024) to a small page's refcount, and 1 plus a "
    "pin count in the THP's third page to a compound page",
    "5.6.4 -> 5.7.14 include/linux/mm.h GUP_PIN_COUNTING_BIAS, mm/gup.c try_grab_page; ids: "
    "Greg KH's 5.8-stable dependency list from Linus' tree names both (Sep 2020), Fixes: tags "
    "name 3faa52c03f44 (fc1d8e7cca2d, recorded before, is 5.3's put_user_page placeholders)",
)
class FollPinCounting(Policy):
    foll_pin = True
