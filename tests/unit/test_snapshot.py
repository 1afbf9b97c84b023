"""Snapshot arithmetic: grouping, exact ratios, ordering, totals per currency, CSV."""

from __future__ import annotations

import csv
import io
import random

import pytest

from breakout.aggregate import widened
from breakout.snapshot import (
    Filters,
    Settled,
    Summary,
    currency_totals,
    figures,
    group_rows,
    hms,
    merge_groups,
    order,
    present,
    to_csv,
    totals_row,
)

#          attempts connected duration_ms provider customer pending dtmf
ROWS = [
    ("acme", "UK - Mobile", "p1", "USD", widened([10, 5, 300_500, 1_000_000, 1_500_000, 1, 2])),
    ("acme", "UK - Mobile", "p2", "USD", widened([5, 0, 0, 0, 0, 0, 0])),
    ("acme", "France", "p1", "EUR", widened([4, 4, 240_000, 2_000_000, 1_000_000, 0, 0])),
    ("beta", "UK - Mobile", "p1", "USD", widened([1, 1, 61_000, 10, 20, 0, 1])),
]


def test_group_rows_sums_per_group_and_currency_without_touching_the_input() -> None:
    before = [list(row[4]) for row in ROWS]
    groups = group_rows(ROWS, ("destination",), Filters())
    assert groups == {
        ("UK - Mobile", "USD"): widened([16, 6, 361_500, 1_000_010, 1_500_020, 1, 3]),
        ("France", "EUR"): widened([4, 4, 240_000, 2_000_000, 1_000_000, 0, 0]),
    }
    assert [row[4] for row in ROWS] == before


@pytest.mark.parametrize("filters", [Filters(), Filters(customers=frozenset({"acme", "gone"}))])
def test_rows_that_revisions_emptied_are_left_out(filters: Filters) -> None:
    emptied = [("gone", "Spain", "p1", "EUR", [0] * 7), ("acme", "Spain", "p3", "EUR", [0] * 7)]
    groups = group_rows([*ROWS, *emptied], ("customer", "destination"), filters)
    assert groups == group_rows(ROWS, ("customer", "destination"), filters)
    assert not any(key[0] == "gone" or key[1] == "Spain" for key in groups)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (Filters(customers=frozenset({"beta"})), {("beta", "USD"): 1}),
        (Filters(providers=frozenset({"p2"})), {("acme", "USD"): 5}),
        (Filters(destinations=frozenset({"France"}), customers=frozenset({"acme"})), {("acme", "EUR"): 4}),
        (Filters(destinations=frozenset({"Nowhere"})), {}),
    ],
)
def test_filters(filters: Filters, expected: dict[tuple[str, ...], int]) -> None:
    groups = group_rows(ROWS, ("customer",), filters)
    assert {key: counters[0] for key, counters in groups.items()} == expected


def test_merge_groups_copies() -> None:
    part = {("a", "USD"): widened([1, 1, 1, 1, 1, 1, 1])}
    merged = merge_groups([part, part])
    assert merged == {("a", "USD"): widened([2, 2, 2, 2, 2, 2, 2])} and part[("a", "USD")] == widened([1] * 7)


@pytest.mark.parametrize(
    ("counters", "column", "expected"),
    [
        (widened([3, 1, 0, 0, 0, 0, 0]), "asr", "33.33"),
        (widened([3, 2, 0, 0, 0, 0, 0]), "asr", "66.67"),
        (widened([8, 1, 0, 0, 0, 0, 0]), "asr", "12.50"),  # exact half stays
        (widened([0, 0, 0, 0, 0, 0, 0]), "asr", None),
        (widened([1, 0, 0, 0, 0, 0, 0]), "acd", None),
        (widened([2, 2, 1_005, 0, 0, 0, 0]), "acd", "0.50"),  # 0.5025 s
        (widened([2, 2, 1_010, 0, 0, 0, 0]), "acd", "0.50"),  # 0.505 → half-even → 0.50
        (widened([2, 2, 1_030, 0, 0, 0, 0]), "acd", "0.52"),  # 0.515 → 0.52
        (widened([1, 1, 90_500, 0, 0, 0, 0]), "duration", "90.500"),
        (widened([1, 1, 90_500, 0, 0, 0, 0]), "duration_hms", "0:01:30"),  # 90.5 → 90 (half-even)
        (widened([1, 1, 91_500, 0, 0, 0, 0]), "duration_hms", "0:01:32"),
        (widened([1, 1, 0, 3_000_000, 2_000_000, 0, 0]), "profit", "-1.000000"),
        (widened([1, 1, 0, 3_000_000, 2_000_000, 0, 0]), "profit_pct", "-50.00"),
        (widened([1, 1, 0, 2_000_001, 2_000_000, 0, 0]), "profit_pct", "0.00"),  # -0.00005 % is shown as 0.00
        (widened([1, 1, 0, 5, 0, 0, 0]), "profit_pct", None),
        (widened([3, 0, 0, 0, 0, 0, 1]), "dtmf_pct", "33.33"),
        (widened([1, 0, 0, 1, 0, 0, 0]), "provider_charge", "0.000001"),
    ],
)
def test_figures(counters: list[int], column: str, expected: str | None) -> None:
    assert figures(counters)[column] == expected


def test_hms_does_not_wrap_days() -> None:
    assert hms(100 * 3600 * 1000 + 61_000) == "100:01:01"


def test_customer_rows_hide_costs() -> None:
    row = present(("customer",), (("acme", "USD"), widened([1, 1, 1000, 5, 9, 0, 0])), with_costs=False)
    assert row["customer_charge"] == "0.000009"
    assert row["provider_charge"] is row["profit"] is row["profit_pct"] is None


def test_order_by_column_then_by_group_keys_with_undefined_last() -> None:
    groups = {
        ("b", "USD"): widened([2, 1, 0, 0, 0, 0, 0]),
        ("a", "USD"): widened([2, 1, 0, 0, 0, 0, 0]),
        ("c", "USD"): widened([0, 0, 0, 0, 0, 0, 0]),
        ("d", "USD"): widened([4, 4, 0, 0, 0, 0, 0]),
    }
    names = lambda ordered: [key[0] for key, _ in ordered]  # noqa: E731
    assert names(order(groups, ("customer",), "asr", False)) == ["a", "b", "d", "c"]
    assert names(order(groups, ("customer",), "asr", True)) == ["d", "a", "b", "c"]
    assert names(order(groups, ("customer",), None, False)) == ["a", "b", "c", "d"]
    assert names(order(groups, ("customer",), "customer", True)) == ["d", "c", "b", "a"]
    assert names(order(groups, ("customer",), "attempts", True)) == ["d", "a", "b", "c"]


def test_totals_never_add_money_across_currencies() -> None:
    groups = group_rows(ROWS, ("customer", "destination"), Filters())
    per_currency = currency_totals(groups.items())
    assert list(per_currency) == ["EUR", "USD"]
    mixed = totals_row(per_currency, with_costs=True)
    assert mixed["attempts"] == 20 and mixed["connected"] == 10 and mixed["asr"] == "50.00"
    assert mixed["currency"] is None and mixed["customer_charge"] is None and mixed["profit"] is None
    usd = totals_row({"USD": per_currency["USD"]}, with_costs=True)
    assert usd["currency"] == "USD" and usd["customer_charge"] == "1.500020"


def test_ratio_of_totals_is_not_the_average_of_rows() -> None:
    rows = [
        ("a", "X", "p", "USD", widened([1, 1, 0, 0, 0, 0, 0])),
        ("b", "X", "p", "USD", widened([99, 0, 0, 0, 0, 0, 0])),
    ]
    groups = group_rows(rows, ("customer",), Filters())
    assert totals_row(currency_totals(groups.items()), with_costs=True)["asr"] == "1.00"  # not 50.00


def test_csv_has_every_column_and_blank_undefined_ratios() -> None:
    groups = group_rows(ROWS, ("customer", "destination"), Filters())
    rows = [
        present(("customer", "destination"), group, with_costs=True)
        for group in order(groups, ("customer", "destination"), None, False)
    ]
    table = list(csv.DictReader(io.StringIO(to_csv(("customer", "destination"), rows))))
    assert table[0].keys() == rows[0].keys()
    assert [r["customer"] for r in table] == [r["customer"] for r in rows]
    assert all(
        cell == ("" if value is None else shown(value))
        for r, t in zip(rows, table, strict=True)
        for cell, value in zip(t.values(), r.values(), strict=True)
    )


def shown(value: object) -> str:
    """A JSON row's value as its CSV cell: the SIP codes as ``code:count`` pairs."""
    if isinstance(value, dict):
        return " ".join(f"{code}:{count}" for code, count in value.items())
    return str(value)


def test_csv_neutralises_formulas_from_cdrs_and_keeps_losses_numbers() -> None:
    """Names come from CDRs; a loss is a negative number, not a formula (``breakout.csv_cells``)."""
    rows = [
        (
            '=HYPERLINK("https://x.example")',
            "+cmd|' /C calc'!A0",
            "p1",
            "USD",
            widened([1, 1, 1000, 900, 300, 0, 0]),
        ),
        ("@acme", "\tUK", "p1", "USD", widened([1, 0, 0, 0, 0, 0, 0])),
    ]
    groups = group_rows(rows, ("customer", "destination"), Filters())
    shown = [present(("customer", "destination"), group, with_costs=True) for group in sorted(groups.items())]
    text = to_csv(("customer", "destination"), shown)
    assert text.startswith("customer,destination,currency,attempts,")
    table = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [(r["customer"], r["destination"]) for r in table] == [
        ('\'=HYPERLINK("https://x.example")', "'+cmd|' /C calc'!A0"),
        ("'@acme", "'\tUK"),
    ]
    assert (table[0]["profit"], table[0]["profit_pct"]) == ("-0.000600", "-200.00")


@pytest.mark.parametrize("seed", range(5))
def test_summary_pages_and_totals_equal_those_of_all_groups_summed(seed: int) -> None:
    """The lazy merge of the settled buckets and the newest one answers like a full sum."""
    rng = random.Random(seed)

    def part() -> dict[tuple[str, ...], list[int]]:
        keys = {(f"c{rng.randrange(30)}", rng.choice(["USD", "EUR"])) for _ in range(rng.randrange(0, 40))}
        return {key: [rng.randrange(0, 9) for _ in range(7)] for key in keys}

    settled, newest = part(), part()
    everything = merge_groups([settled, newest])
    summary = Summary(("customer",), Settled(settled), newest)
    assert summary.total_rows == len(everything)
    assert summary.currency_totals() == currency_totals(everything.items())
    for sort in (None, "attempts", "asr", "customer"):
        for descending in (False, True):
            full = order(everything, ("customer",), sort, descending)
            for offset, limit in ((0, 1000), (0, 7), (5, 9), (len(full) - 2, 10), (len(full) + 3, 5)):
                assert summary.page(sort, descending, offset, limit) == full[offset : offset + limit]
    assert summary.groups == everything and settled == merge_groups([settled])
