"""Remembered report rows are the rows ``present`` builds, per content and per role."""

from __future__ import annotations

from api.presented import PresentedRows
from breakout.aggregate import widened
from breakout.snapshot import present

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
