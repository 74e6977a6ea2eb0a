"""cowlab explain names the decision that corrupts; cowlab diff finds where kernels part."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from cowlab.cli import main
from cowlab.explain import diff
from cowlab.scenario import load_scenario

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def explained(capsys: pytest.CaptureFixture[str], name: str, kernel: str, step: int) -> str:
    assert main(["explain", str(EXAMPLES / name), "--kernel", kernel, "--step", str(step)]) == 0
    return capsys.readouterr().out


def test_pmd_case_names_page_count(capsys: pytest.CaptureFixture[str]) -> None:
    out = explained(capsys, "rdma_pmd.yaml", "v4.5", 7)
    # 4.5.0's do_huge_pmd_wp_page: page_mapcount 1, but page_count is 1 + 512 pins
    assert "do_huge_pmd_wp_page: 0x7effffc00000 pfn 0x400: " in out
    assert "page_mapcount(head) = 1, page_count(head) = 513 -> copy" in out
    assert "compound_mapcount 1->0" in out  # the pinned THP loses its only PMD map


def test_pte_case_names_reuse_swap_page(capsys: pytest.CaptureFixture[str]) -> None:
    out = explained(capsys, "rdma_pte.yaml", "v4.5", 10)
    assert "PageTransCompound = 1 -> copy" in out
    assert "rule of v4.5: reuse_swap_page(): never for a THP subpage" in out
    assert "wp_page_copy: 0x7effffc02000 pfn 0x402: copied to a new page, pfn" in out


def test_fixed_kernel_explains_the_reuse(capsys: pytest.CaptureFixture[str]) -> None:
    out = explained(capsys, "rdma_pte.yaml", "v4.5+6d0a07e", 10)
    assert "page_trans_huge_mapcount = 1, total_mapcount = 512" in out and "-> reuse" in out


def test_early_version_shows_the_anon_vma_move(capsys: pytest.CaptureFixture[str]) -> None:
    out = explained(capsys, "kirill_anon_vma.yaml", "v4.5+6d0a07e-early", 10)
    assert "page_move_anon_rmap: pfn 0x400: move (to anon_vma#2)" in out
    assert "mapping anon_vma#1->anon_vma#2" in out


def test_diff_finds_the_write_after_fork() -> None:
    scenario = load_scenario(EXAMPLES / "rdma_pmd.yaml")
    assert diff(scenario, "v4.5", "v4.5+6d0a07e", Console(width=200)) == 7


def test_diff_of_kernels_that_agree() -> None:
    # Plain COW after fork: both copy when shared and reuse when alone, for different reasons.
    scenario = load_scenario(EXAMPLES / "cow_after_fork.yaml")
    assert diff(scenario, "v4.5", "v4.5+6d0a07e", Console(width=200)) is None


def test_diff_cli_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(EXAMPLES / "kirill_anon_vma.yaml")
    assert main(["diff", path, "--kernel", "v4.5+6d0a07e", "--kernel", "v4.5+6d0a07e-early"]) == 1
    out = capsys.readouterr().out
    assert "first difference at step 10" in out
    assert main(["diff", path, "--kernel", "v4.5"]) == 2


def test_decisions_are_data_in_the_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    path = str(EXAMPLES / "rdma_pmd.yaml")
    assert main(["run", path, "--kernel", "v4.5", "--json"]) == 0
    step7 = json.loads(capsys.readouterr().out)["runs"][0]["steps"][6]
    (decision,) = [e for e in step7["events"] if e["verdict"]]
    # 4.5.0 do_huge_pmd_wp_page: one PMD mapping, 512 pin references on the head
    assert decision["function"] == "do_huge_pmd_wp_page" and decision["verdict"] == "copy"
    assert decision["read"] == {"page_mapcount(head)": 1, "page_count(head)": 513}
    assert decision["rule"] == "page_mapcount(head) == 1 && page_count(head) == 1"
    assert decision["policy"] == "v4.5"


def test_diff_compares_verdicts_not_text() -> None:
    from cowlab.explain import signatures
    from cowlab.scenario.runner import run_scenario

    scenario = load_scenario(EXAMPLES / "rdma_pmd.yaml")
    a = signatures(run_scenario(scenario, "v4.5", tracing=True))[6]
    b = signatures(run_scenario(scenario, "v4.5+6d0a07e", tracing=True))[6]
    assert ("do_huge_pmd_wp_page", "copy") in a.decisions
    assert ("do_huge_pmd_wp_page", "reuse") in b.decisions


def test_show_names_the_decision_of_the_step(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(EXAMPLES / "rdma_pmd.yaml")
    assert main(["show", path, "--kernel", "v4.5+6d0a07e", "--step", "7"]) == 0
    out = capsys.readouterr().out
    assert "decided: do_huge_pmd_wp_page: " in out and "page_trans_huge_mapcount = 1" in out
    assert "-> reuse" in out


@pytest.mark.parametrize(
    ("kernel", "rule", "read"),
    [
        # 5.9 do_wp_page: a page shared by fork has two PTEs and two references
        (
            "v5.9",
            "!PageKsm && page_count == 1 && page_mapcount == 1",
            {"PageKsm": 0, "page_count": 2, "page_mapcount": 2},
        ),
        # 5.19: fork cleared PageAnonExclusive; not in the swap cache; page_count 2 -> copy
        (
            "v5.19",
            "PageAnonExclusive || (!PageKsm && page_count == 1 (after try_to_free_swap))",
            {"PageAnonExclusive": 0, "PageKsm": 0, "PageSwapCache": 0, "page_count": 2},
        ),
    ],
)
def test_the_decision_names_what_its_rule_read(
    kernel: str, rule: str, read: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    path = str(EXAMPLES / "cow_after_fork.yaml")
    main(["run", path, "--kernel", kernel, "--json"])
    step10 = json.loads(capsys.readouterr().out)["runs"][0]["steps"][9]  # P writes `small`
    (decision,) = [e for e in step10["events"] if e["verdict"]]
    assert (decision["function"], decision["verdict"]) == ("do_wp_page", "copy")
    assert decision["rule"] == rule and decision["read"] == read


def test_whole_thp_swapout_and_its_reuse_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    """4.14 on an SSD: reclaim keeps the PMD-mapped THP whole (bd4c82c22c36), and the write to
    the page read back counts map + swap per subpage (ba3c4ce6def4): 1, with 511 slots still
    held by swap PTEs and none by page 3's."""
    name = "timeline/4.14_thp_swap_counts.yaml"
    out = explained(capsys, name, "v4.14", 4)
    assert "folio_order = 9, a run of slots on this area = 1, compound_mapcount = 1 -> whole" in out
    assert "get_swap_pages() on a non-rotational block device" in out
    out = explained(capsys, name, "v4.14", 6)
    assert "page_trans_huge_map_swapcount = 1, total_swapcount = 511" in out
    assert "page_swapcount = 0 -> reuse" in out
    out = explained(capsys, name, "v6.11", 5)  # 6.11: the cached THP is mapped whole
    assert "folio_nr_pages = 512 -> whole folio" in out


def test_zram_swapin_names_the_bypass_and_the_order(capsys: pytest.CaptureFixture[str]) -> None:
    """6.12 on zram: the slot's count is 1, so the swap cache is bypassed (0bcac06f27d7), and
    alloc_swap_folio picks the 64 KiB order (242d12c98174)."""
    out = explained(capsys, "timeline/6.12_large_folio_swapin.yaml", "v6.12", 6)
    assert "SWP_SYNCHRONOUS_IO = 1, __swap_count = 1 -> bypass" in out
    assert "alloc_swap_folio: 0x7efffffe2000: order = 4 -> order 4" in out
