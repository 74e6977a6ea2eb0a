"""Which live differences are the machine's own doing (inconclusive), not disagreements."""

from __future__ import annotations

from cowlab.live.compare import noise
from cowlab.live.model_observe import absent
from cowlab.live.observe import PageObs, Snapshot


def _page(nr: int, level: str, sub: int = 0) -> PageObs:
    return absent()._replace(folio="F0", subpage=sub, nr=nr, level=level, mapcount=1)


def _snap(*pages: PageObs) -> Snapshot:
    return Snapshot({"P:buf": list(pages)}, {})


def test_a_collapse_of_a_pte_mapped_thp_is_khugepaged() -> None:
    live, model = _snap(_page(512, "pmd")), _snap(_page(512, "pte"))
    assert "khugepaged" in noise(live, model, {"thp_collapse_alloc": 5}, {"thp_collapse_alloc": 6})
    assert noise(live, model, {"thp_collapse_alloc": 5}, {"thp_collapse_alloc": 5}) == ""


def test_a_collapse_over_pages_the_model_never_mapped_is_khugepaged() -> None:
    live, model = _snap(_page(512, "pmd")), _snap(absent())
    assert "khugepaged" in noise(live, model, {"thp_collapse_alloc": 0}, {"thp_collapse_alloc": 1})


def test_an_mthp_the_kernel_could_not_allocate_is_a_fallback() -> None:
    live, model = _snap(_page(1, "pte")), _snap(_page(16, "pte"))
    key = "mthp_fault_fallback_64kB"
    assert "could not allocate" in noise(live, model, {key: 0}, {key: 1})
    assert noise(live, model, {key: 0}, {key: 0}) == ""  # it did not even try: a disagreement
    bigger = _snap(_page(16, "pte")), _snap(_page(1, "pte"))
    assert noise(*bigger, {key: 0}, {key: 1}) == ""  # a larger folio live is no fallback
