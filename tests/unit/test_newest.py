"""The newest bucket's groups kept up to date customer by customer equal grouping every row again."""

from __future__ import annotations

import random

import pytest

from api.newest import BucketGroups, regroup
from breakout.aggregate import widened
from breakout.snapshot import Filters, SourceRow, currency_totals, group_rows

GROUPINGS = [
    ("customer", "destination"),
    ("destination",),
    ("customer",),
    ("provider",),
    ("destination", "provider"),
]
Customers = dict[str, tuple[bytes | None, list[SourceRow]]]


def customer_rows(rng: random.Random, customer: str) -> list[SourceRow]:
    rows = []
    for destination in rng.sample(["UK", "France", "Spain", "Peru", "Chad"], rng.randint(0, 4)):
        for provider in rng.sample(["p1", "p2", "p3"], rng.randint(1, 2)):
            attempts = rng.choice([0, 1, 5, 40])  # 0: a row revisions emptied
            counters = widened([attempts, attempts // 2, 1000 * attempts, 7 * attempts, 9 * attempts, 0, 1])
            rows.append((customer, destination, provider, rng.choice(["USD", "EUR"]), counters))
    return rows


def everything(
    customers: Customers, group_by: tuple[str, ...], filters: Filters
) -> tuple[dict[tuple[str, ...], list[int]], dict[str, list[int]]]:
    """What grouping every row of the bucket at once gives: the reference."""
    groups = group_rows([row for _, rows in customers.values() for row in rows], group_by, filters)
    return groups, currency_totals(groups.items())


def check(groups: BucketGroups, customers: Customers, group_by: tuple[str, ...], filters: Filters) -> None:
    expected_groups, expected_totals = everything(customers, group_by, filters)
    assert groups.groups == expected_groups
    assert groups.totals == expected_totals
    assert list(groups.totals) == sorted(groups.totals)


@pytest.mark.parametrize("group_by", GROUPINGS)
@pytest.mark.parametrize("filters", [Filters(), Filters(destinations=frozenset({"UK", "Peru"}))])
def test_updates_equal_grouping_every_row_again(group_by: tuple[str, ...], filters: Filters) -> None:
    rng = random.Random(7)
    customers: Customers = {f"c{n}": (b"1", customer_rows(rng, f"c{n}")) for n in range(12)}
    groups = regroup(None, customers, group_by, filters)
    check(groups, customers, group_by, filters)
    for step in range(60):
        customers = dict(customers)
        for name in rng.sample(sorted(customers), rng.randint(0, 3)):
            customers[name] = (str(step + 2).encode(), customer_rows(rng, name))  # moved
        if rng.random() < 0.2 and customers:
            del customers[rng.choice(sorted(customers))]  # the customer's hash went
        if rng.random() < 0.2:
            customers[f"new{step}"] = (b"1", customer_rows(rng, f"new{step}"))
        groups = regroup(groups, customers, group_by, filters)
        check(groups, customers, group_by, filters)


def touched(rng: random.Random, rows: list[SourceRow], customer: str) -> list[SourceRow]:
    """``rows`` as the reader hands a moved customer over: the unchanged rows the same
    objects, a few rows with new values, gone or new."""
    rows = list(rows)
    for _ in range(rng.randint(1, 3)):
        action = rng.random()
        if rows and action < 0.5:
            at = rng.randrange(len(rows))
            _, destination, provider, currency, counters = rows[at]
            more = [value + rng.choice([0, 1, 3]) for value in counters]
            rows[at] = (customer, destination, provider, currency, more)  # a new object
        elif rows and action < 0.7:
            del rows[rng.randrange(len(rows))]
        else:
            rows.extend(customer_rows(rng, customer)[:1])
    return rows


@pytest.mark.parametrize("group_by", GROUPINGS)
@pytest.mark.parametrize("filters", [Filters(), Filters(destinations=frozenset({"UK", "Peru"}))])
def test_row_updates_equal_grouping_every_row_again(group_by: tuple[str, ...], filters: Filters) -> None:
    """Live traffic: each moved customer's hash has a few changed rows among many the same."""
    rng = random.Random(11)
    customers: Customers = {}
    for n in range(8):
        rows = [row for _ in range(6) for row in customer_rows(rng, f"c{n}")]
        customers[f"c{n}"] = (b"1", rows)
    groups = regroup(None, customers, group_by, filters)
    for step in range(80):
        customers = dict(customers)
        for name in rng.sample(sorted(customers), rng.randint(1, 3)):
            customers[name] = (str(step + 2).encode(), touched(rng, customers[name][1], name))
        groups = regroup(groups, customers, group_by, filters)
        check(groups, customers, group_by, filters)


def test_a_few_changed_rows_leave_the_rest_of_a_customers_groups_as_they_were() -> None:
    rows = [("a", f"D{n}", "p1", "USD", widened([n + 1, 1, 10, 1, 2, 0, 0])) for n in range(10)]
    first = regroup(None, {"a": (b"1", rows)}, ("destination",), Filters())
    moved = [*rows[:9], ("a", "D9", "p1", "USD", widened([50, 1, 10, 1, 2, 0, 0]))]
    second = regroup(first, {"a": (b"2", moved)}, ("destination",), Filters())
    before, after = first.parts["a"].groups, second.parts["a"].groups
    assert all(after[key] is before[key] for key in before if key != ("D9", "USD"))  # not re-summed
    assert after[("D9", "USD")][0] == 50 and second.groups[("D9", "USD")][0] == 50
    assert second.totals["USD"][0] == sum(range(1, 10)) + 50


def test_an_older_result_is_never_changed_by_a_newer_one() -> None:
    uk = [("a", "UK", "p1", "USD", widened([3, 1, 10, 1, 2, 0, 0]))]
    first = regroup(None, {"a": (b"1", uk), "b": (b"1", list(uk))}, ("destination",), Filters())
    before = {key: list(counters) for key, counters in first.groups.items()}
    totals = {key: list(counters) for key, counters in first.totals.items()}
    more = [("a", "UK", "p1", "USD", widened([5, 1, 10, 1, 2, 0, 0]))]
    second = regroup(first, {"a": (b"2", more)}, ("destination",), Filters())
    assert first.groups == before and first.totals == totals
    assert second.groups[("UK", "USD")][0] == 5


def test_unchanged_customers_are_not_grouped_again() -> None:
    rows = [("a", "UK", "p1", "USD", widened([3, 1, 10, 1, 2, 0, 0]))]
    first = regroup(None, {"a": (b"1", rows)}, ("destination",), Filters())
    # Same @applied: the part is kept, whatever rows are passed (they are the same in Redis).
    second = regroup(first, {"a": (b"1", [])}, ("destination",), Filters())
    assert second.parts["a"] is first.parts["a"] and second.groups == first.groups
    # No @applied known: always grouped again.
    third = regroup(second, {"a": (None, [])}, ("destination",), Filters())
    assert third.groups == {}
