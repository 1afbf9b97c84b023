"""Row arithmetic: contributions, sums, and ratios rebuilt from sums."""

from __future__ import annotations

from decimal import Decimal

import pytest

from breakout.aggregate import FIELDS, Counters, Metrics, add, counters_of, empty, merge, metrics


def row(
    attempts: int = 0,
    connected: int = 0,
    duration_ms: int = 0,
    provider_charge: int = 0,
    customer_charge: int = 0,
    pending: int = 0,
    dtmf: int = 0,
) -> Counters:
    return [attempts, connected, duration_ms, provider_charge, customer_charge, pending, dtmf]


def test_field_order_and_empty_row() -> None:
    assert FIELDS == (
        "attempts",
        "connected",
        "duration_ms",
        "provider_charge",
        "customer_charge",
        "pending",
        "dtmf",
    )
    assert empty() == [0, 0, 0, 0, 0, 0, 0]
    assert empty() is not empty()


@pytest.mark.parametrize(
    "connected, duration_ms, provider_charge, customer_charge, dtmf, expected",
    [
        # connected, rated call
        (True, 60_000, 12_000, 20_000, 0, row(1, 1, 60_000, 12_000, 20_000, 0, 0)),
        # unconnected: no billed duration, charges still count
        (False, 60_000, 500, 700, 0, row(1, 0, 0, 500, 700, 0, 0)),
        (False, 0, 0, 0, 0, row(1, 0, 0, 0, 0, 0, 0)),
        # pending rating: no money at all, counted as pending
        (True, 60_000, 12_000, None, 0, row(1, 1, 60_000, 0, 0, 1, 0)),
        (False, 0, 12_000, None, 0, row(1, 0, 0, 0, 0, 1, 0)),
        # free call: customer_charge 0 is rated, not pending
        (True, 1_000, 12_000, 0, 0, row(1, 1, 1_000, 12_000, 0, 0, 0)),
        # dtmf is a flag: any number of digits counts once
        (True, 1_000, 1, 2, 1, row(1, 1, 1_000, 1, 2, 0, 1)),
        (True, 1_000, 1, 2, 7, row(1, 1, 1_000, 1, 2, 0, 1)),
    ],
)
def test_counters_of(
    connected: bool,
    duration_ms: int,
    provider_charge: int,
    customer_charge: int | None,
    dtmf: int,
    expected: Counters,
) -> None:
    assert counters_of(connected, duration_ms, provider_charge, customer_charge, dtmf) == expected


@pytest.mark.parametrize(
    "contributions, expected",
    [
        ([], row()),
        ([row(1, 1, 60_000, 12_000, 20_000, 0, 0)], row(1, 1, 60_000, 12_000, 20_000, 0, 0)),
        (
            [
                row(1, 1, 60_000, 12_000, 20_000, 0, 1),
                row(1, 0, 0, 500, 700, 0, 0),
                row(1, 1, 30_000, 0, 0, 1, 0),
            ],
            row(3, 2, 90_000, 12_500, 20_700, 1, 1),
        ),
    ],
)
def test_add(contributions: list[Counters], expected: Counters) -> None:
    target = empty()
    for contribution in contributions:
        add(target, contribution)
    assert target == expected


def test_add_is_in_place() -> None:
    target = row(5, 4, 100, 10, 20, 0, 1)
    add(target, row(1, 1, 1, 1, 1, 1, 1))
    assert target == row(6, 5, 101, 11, 21, 1, 2)


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([], row()),
        ([row(1, 1, 2, 3, 4, 0, 1)], row(1, 1, 2, 3, 4, 0, 1)),
        (
            [row(1, 1, 60_000, 10, 20, 0, 0), row(9, 0, 0, 5, 5, 2, 3), row(2, 2, 30_000, 1, 1, 0, 1)],
            row(12, 3, 90_000, 16, 26, 2, 4),
        ),
    ],
)
def test_merge(rows: list[Counters], expected: Counters) -> None:
    before = [list(r) for r in rows]
    assert merge(rows) == expected
    assert rows == before  # inputs untouched


@pytest.mark.parametrize(
    "counters, expected",
    [
        (
            row(),
            Metrics(0, 0, 0, 0, 0, 0, 0, 0, asr=None, acd=None, profit_pct=None, dtmf_pct=None),
        ),
        (
            row(3, 1, 45_000, 100, 150, 0, 0),
            Metrics(
                3,
                1,
                45_000,
                100,
                150,
                profit=50,
                pending=0,
                dtmf=0,
                asr=Decimal("33.33"),
                acd=Decimal("45.00"),
                profit_pct=Decimal("33.33"),
                dtmf_pct=Decimal("0.00"),
            ),
        ),
        (
            row(4, 2, 90_000, 1_000_000, 1_500_000, 1, 1),
            Metrics(
                4,
                2,
                90_000,
                1_000_000,
                1_500_000,
                profit=500_000,
                pending=1,
                dtmf=1,
                asr=Decimal("50.00"),
                acd=Decimal("45.00"),
                profit_pct=Decimal("33.33"),
                dtmf_pct=Decimal("25.00"),
            ),
        ),
        (
            # attempts but nothing connected: ACD undefined; no customer money: profit % undefined
            row(5, 0, 0, 2_000, 0, 0, 0),
            Metrics(
                5,
                0,
                0,
                2_000,
                0,
                profit=-2_000,
                pending=0,
                dtmf=0,
                asr=Decimal("0.00"),
                acd=None,
                profit_pct=None,
                dtmf_pct=Decimal("0.00"),
            ),
        ),
        (
            # selling below cost: negative profit and profit %
            row(1, 1, 1_234, 300, 200, 0, 0),
            Metrics(
                1,
                1,
                1_234,
                300,
                200,
                profit=-100,
                pending=0,
                dtmf=0,
                asr=Decimal("100.00"),
                acd=Decimal("1.23"),
                profit_pct=Decimal("-50.00"),
                dtmf_pct=Decimal("0.00"),
            ),
        ),
    ],
)
def test_metrics(counters: Counters, expected: Metrics) -> None:
    assert metrics(counters) == expected


@pytest.mark.parametrize(
    "counters, asr",
    [
        (row(3, 1), Decimal("33.33")),
        (row(3, 2), Decimal("66.67")),
        (row(8, 1), Decimal("12.50")),  # exact: no rounding needed
        (row(1, 1), Decimal("100.00")),
        (row(800, 1), Decimal("0.12")),  # exactly 0.125: half-even rounds down to the even 2
        (row(800, 3), Decimal("0.38")),  # exactly 0.375: half-even rounds up to the even 8
        (row(200_000, 1), Decimal("0.00")),
    ],
)
def test_asr_quantized_to_hundredths(counters: Counters, asr: Decimal) -> None:
    result = metrics(counters).asr
    assert result == asr
    assert result is not None and result.as_tuple().exponent == -2


@pytest.mark.parametrize(
    "duration_ms, connected, acd",
    [
        (90_000, 2, Decimal("45.00")),
        (100_000, 3, Decimal("33.33")),
        (1, 1, Decimal("0.00")),
        (5, 1, Decimal("0.00")),  # 0.005 s -> half-even -> 0.00
        (15, 1, Decimal("0.02")),  # 0.015 s -> half-even -> 0.02
        (0, 4, Decimal("0.00")),
    ],
)
def test_acd_seconds_per_connected_call(duration_ms: int, connected: int, acd: Decimal) -> None:
    assert metrics(row(attempts=connected, connected=connected, duration_ms=duration_ms)).acd == acd


def test_totals_rebuilt_from_sums_not_averaged() -> None:
    all_connected = row(attempts=1, connected=1, duration_ms=60_000)
    none_connected = row(attempts=9, connected=0)
    assert metrics(all_connected).asr == Decimal("100.00")
    assert metrics(none_connected).asr == Decimal("0.00")
    total = metrics(merge([all_connected, none_connected]))
    assert total.asr == Decimal("10.00")  # 1 of 10, not the mean of 100 and 0
    assert total.acd == Decimal("60.00")


def test_profit_pct_rebuilt_from_sums() -> None:
    a = row(1, 1, 0, 90, 100)  # 10 %
    b = row(1, 1, 0, 0, 900)  # 100 %
    assert metrics(merge([a, b])).profit_pct == Decimal("91.00")  # 910 / 1000, not 55
