"""Row arithmetic: contributions, sums, and ratios rebuilt from sums."""

from __future__ import annotations

import pytest

from breakout.aggregate import (
    FIELDS,
    FIRST_SIP,
    SIP_LABELS,
    WIDTH,
    Counters,
    add,
    add_one,
    counters_of,
    empty,
    row_of,
    sip_slot,
    subtract_one,
    widened,
)
from breakout.snapshot import figures


def row(
    attempts: int = 0,
    connected: int = 0,
    duration_ms: int = 0,
    provider_charge: int = 0,
    customer_charge: int = 0,
    pending: int = 0,
    dtmf: int = 0,
) -> Counters:
    return widened([attempts, connected, duration_ms, provider_charge, customer_charge, pending, dtmf])


def test_field_order_and_empty_row() -> None:
    assert (
        "attempts",
        "connected",
        "duration_ms",
        "provider_charge",
        "customer_charge",
        "pending",
        "dtmf",
        "effective",
        "pdd_ms",
        "pdd_calls",
        "short_calls",
        *(f"sip_{label}" for label in SIP_LABELS),
    ) == FIELDS
    assert empty() == [0] * WIDTH == [0] * 31
    assert empty() is not empty()


def test_old_rows_widen_with_zeros() -> None:
    assert widened([1, 1, 60_000, 1, 2, 0, 0]) == [1, 1, 60_000, 1, 2, 0, 0] + [0] * 24
    full = empty()
    assert widened(full) is full


@pytest.mark.parametrize(
    "code, label",
    [(200, "200"), (503, "503"), (486, "486"), (603, "603"), (180, "1xx"), (202, "2xx"), (302, "3xx"),
     (405, "4xx"), (599, "5xx"), (600, "6xx")],
)  # fmt: skip
def test_each_sip_code_has_one_counter(code: int, label: str) -> None:
    assert SIP_LABELS[sip_slot(code) - FIRST_SIP] == label
    assert sip_slot(None) == 0


def test_the_newer_counters_of_one_cdr() -> None:
    one = row_of(counters_of(True, 4_000, 1, 2, 0, effective=True, pdd_ms=2_500, short=True), sip_slot(200))
    assert one[7:11] == [1, 2_500, 1, 1]
    assert one[FIRST_SIP:] == [1] + [0] * 19
    failed = row_of(counters_of(False, 0, 0, 0, 0, effective=False, pdd_ms=None), sip_slot(503))
    assert failed[7:11] == [0, 0, 0, 0] and failed[sip_slot(503)] == 1 and sum(failed[FIRST_SIP:]) == 1
    assert len(row_of(counters_of(True, 1, 0, 0, 0), sip_slot(None))) == WIDTH


def test_add_one_and_subtract_one_are_inverse() -> None:
    total = row(5, 4, 100, 10, 20, 0, 1)
    before = list(total)
    one = counters_of(True, 4_000, 1, 2, 3, effective=True, pdd_ms=2_500, short=True)
    add_one(total, one, sip_slot(487))
    expected = list(before)
    add(expected, row_of(one, sip_slot(487)))
    assert total == expected
    subtract_one(total, one, sip_slot(487))
    assert total == before


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
    assert row_of(counters_of(connected, duration_ms, provider_charge, customer_charge, dtmf), 0) == expected


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


def summed(*rows: Counters) -> Counters:
    total = empty()
    for one in rows:
        add(total, one)
    return total


@pytest.mark.parametrize(
    ("counters", "expected"),
    [
        (row(), {"asr": None, "acd": None, "profit": "0.000000", "profit_pct": None, "dtmf_pct": None}),
        (
            row(3, 1, 45_000, 100, 150, 0, 0),
            {"asr": "33.33", "acd": "45.00", "profit": "0.000050", "profit_pct": "33.33", "dtmf_pct": "0.00"},
        ),
        (
            row(4, 2, 90_000, 1_000_000, 1_500_000, 1, 1),
            {
                "asr": "50.00",
                "acd": "45.00",
                "profit": "0.500000",
                "profit_pct": "33.33",
                "dtmf_pct": "25.00",
            },
        ),
        # attempts but nothing connected: ACD undefined; no customer money: profit % undefined
        (
            row(5, 0, 0, 2_000, 0, 0, 0),
            {"asr": "0.00", "acd": None, "profit": "-0.002000", "profit_pct": None, "dtmf_pct": "0.00"},
        ),
        # selling below cost: negative profit and profit %
        (
            row(1, 1, 1_234, 300, 200, 0, 0),
            {
                "asr": "100.00",
                "acd": "1.23",
                "profit": "-0.000100",
                "profit_pct": "-50.00",
                "dtmf_pct": "0.00",
            },
        ),
    ],
)
def test_ratios(counters: Counters, expected: dict[str, str | None]) -> None:
    shown = figures(counters)
    assert {name: shown[name] for name in expected} == expected


@pytest.mark.parametrize(
    ("counters", "asr"),
    [
        (row(3, 1), "33.33"),
        (row(3, 2), "66.67"),
        (row(8, 1), "12.50"),  # exact: no rounding needed
        (row(1, 1), "100.00"),
        (row(800, 1), "0.12"),  # exactly 0.125: half-even rounds down to the even 2
        (row(800, 3), "0.38"),  # exactly 0.375: half-even rounds up to the even 8
        (row(200_000, 1), "0.00"),
    ],
)
def test_asr_rounded_half_even_to_hundredths(counters: Counters, asr: str) -> None:
    assert figures(counters)["asr"] == asr


@pytest.mark.parametrize(
    ("duration_ms", "connected", "acd"),
    [
        (90_000, 2, "45.00"),
        (100_000, 3, "33.33"),
        (1, 1, "0.00"),
        (5, 1, "0.00"),  # 0.005 s -> half-even -> 0.00
        (15, 1, "0.02"),  # 0.015 s -> half-even -> 0.02
        (0, 4, "0.00"),
    ],
)
def test_acd_seconds_per_connected_call(duration_ms: int, connected: int, acd: str) -> None:
    assert figures(row(attempts=connected, connected=connected, duration_ms=duration_ms))["acd"] == acd


def test_totals_rebuilt_from_sums_not_averaged() -> None:
    all_connected = row(attempts=1, connected=1, duration_ms=60_000)
    none_connected = row(attempts=9, connected=0)
    assert figures(all_connected)["asr"] == "100.00" and figures(none_connected)["asr"] == "0.00"
    total = figures(summed(all_connected, none_connected))
    assert total["asr"] == "10.00"  # 1 of 10, not the mean of 100 and 0
    assert total["acd"] == "60.00"


def test_profit_pct_rebuilt_from_sums() -> None:
    a = row(1, 1, 0, 90, 100)  # 10 %
    b = row(1, 1, 0, 0, 900)  # 100 %
    assert figures(summed(a, b))["profit_pct"] == "91.00"  # 910 / 1000, not 55
