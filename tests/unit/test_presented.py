"""Remembered report rows are the rows ``present`` builds, per content and per role."""

from __future__ import annotations

from api.presented import PresentedPages, PresentedRows
from breakout.aggregate import widened
from breakout.snapshot import Settled, Summary, present

GROUP_BY = ("customer", "destination")


def test_rows_equal_present_and_follow_the_counters_and_the_role() -> None:
    rows = PresentedRows(100)
    group = (("acme", "UK", "USD"), widened([10, 5, 300_500, 1_000_000, 1_500_000, 1, 2]))
    for with_costs in (True, False):
        assert rows.page(GROUP_BY, [group], with_costs=with_costs) == [
            present(GROUP_BY, group, with_costs=with_costs)
        ]
    moved = (group[0], widened([11, 5, 300_500, 1_000_000, 1_500_000, 1, 2]))
    assert rows.page(GROUP_BY, [moved], with_costs=False) == [present(GROUP_BY, moved, with_costs=False)]
    assert rows.page(("destination", "customer"), [group], with_costs=True) == [
        present(("destination", "customer"), group, with_costs=True)
    ]


def test_no_capacity_remembers_nothing_and_still_answers() -> None:
    group = (("acme", "UK", "USD"), widened([1, 1, 1000, 1, 2, 0, 0]))
    assert PresentedRows(0).page(GROUP_BY, [group], with_costs=True) == [
        present(GROUP_BY, group, with_costs=True)
    ]


def test_a_summary_page_is_built_once_and_equals_the_rows_presented() -> None:
    groups: dict[tuple[str, ...], list[int]] = {
        ("acme", "UK", "USD"): widened([10, 5, 300_500, 1_000_000, 1_500_000, 1, 2]),
        ("beta", "Peru", "EUR"): widened([3, 1, 61_000, 10, 20, 0, 1]),
    }
    summary = Summary(GROUP_BY, Settled(groups), {("acme", "UK", "USD"): widened([1, 1, 1000, 1, 2, 0, 0])})
    pages = PresentedPages(PresentedRows(100))
    first = pages.page(summary, "attempts", True, 0, 10, with_costs=False)
    assert first == [
        present(GROUP_BY, group, with_costs=False) for group in summary.page("attempts", True, 0, 10)
    ]
    assert pages.page(summary, "attempts", True, 0, 10, with_costs=False) is first
    assert pages.page(summary, "attempts", True, 0, 10, with_costs=True) == [
        present(GROUP_BY, group, with_costs=True) for group in summary.page("attempts", True, 0, 10)
    ]
    assert pages.page(summary, None, False, 1, 1, with_costs=False) == [
        present(GROUP_BY, group, with_costs=False) for group in summary.page(None, False, 1, 1)
    ]
