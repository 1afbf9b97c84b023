"""Aggregate arithmetic of one breakout row: sums in, ratios derived on read.

A row's counters are a fixed-order list of integers (the same order everywhere:
tables, changelog, Redis), so adding a CDR is a handful of integer additions and
merging rows is element-wise. Ratios (ASR, ACD, profit %, DTMF %) are never
stored: they are rebuilt from summed counts, because averaging per-row ratios
gives a wrong total.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import NamedTuple

# Positions in a row's counter list.
ATTEMPTS, CONNECTED, DURATION_MS, PROVIDER_CHARGE, CUSTOMER_CHARGE, PENDING, DTMF = range(7)
FIELDS = ("attempts", "connected", "duration_ms", "provider_charge", "customer_charge", "pending", "dtmf")
Counters = list[int]


def counters_of(
    connected: bool, duration_ms: int, provider_charge: int, customer_charge: int | None, dtmf: int
) -> Counters:
    """What one CDR adds to each of its rows (attempts is 1), computed once and added to three.

    Billed duration counts for connected calls only; a pending CDR adds no money.
    """
    if customer_charge is None:
        return [1, 1 if connected else 0, duration_ms if connected else 0, 0, 0, 1, 1 if dtmf > 0 else 0]
    return [
        1,
        1 if connected else 0,
        duration_ms if connected else 0,
        provider_charge,
        customer_charge,
        0,
        1 if dtmf > 0 else 0,
    ]


def empty() -> Counters:
    return [0] * len(FIELDS)


def add(row: Counters, other: Counters) -> None:
    """Add ``other`` to ``row`` in place (unrolled: it runs three times per CDR)."""
    row[0] += other[0]
    row[1] += other[1]
    row[2] += other[2]
    row[3] += other[3]
    row[4] += other[4]
    row[5] += other[5]
    row[6] += other[6]


def merge(rows: Iterable[Counters]) -> Counters:
    """Element-wise sum: the row of a group is the sum of its rows, ratios come after."""
    total = empty()
    for row in rows:
        for i, value in enumerate(row):
            total[i] += value
    return total


class Metrics(NamedTuple):
    """A row as people read it. Money in micro-units; ratios as Decimal, None when undefined."""

    attempts: int
    connected: int
    duration_ms: int
    provider_charge: int
    customer_charge: int
    profit: int
    pending: int
    dtmf: int
    asr: Decimal | None
    acd: Decimal | None
    profit_pct: Decimal | None
    dtmf_pct: Decimal | None


_CENT = Decimal("0.01")


def _ratio(numerator: int, denominator: int, scale: int = 1) -> Decimal | None:
    if denominator == 0:
        return None
    return (Decimal(numerator * scale) / Decimal(denominator)).quantize(_CENT, rounding=ROUND_HALF_EVEN)


def metrics(row: Counters) -> Metrics:
    """Derived figures: ASR = 100·connected/attempts, ACD = seconds/connected (ITU-style)."""
    profit = row[CUSTOMER_CHARGE] - row[PROVIDER_CHARGE]
    return Metrics(
        attempts=row[ATTEMPTS],
        connected=row[CONNECTED],
        duration_ms=row[DURATION_MS],
        provider_charge=row[PROVIDER_CHARGE],
        customer_charge=row[CUSTOMER_CHARGE],
        profit=profit,
        pending=row[PENDING],
        dtmf=row[DTMF],
        asr=_ratio(row[CONNECTED], row[ATTEMPTS], 100),
        acd=_ratio(row[DURATION_MS], row[CONNECTED] * 1000),
        profit_pct=_ratio(profit, row[CUSTOMER_CHARGE], 100),
        dtmf_pct=_ratio(row[DTMF], row[ATTEMPTS], 100),
    )
