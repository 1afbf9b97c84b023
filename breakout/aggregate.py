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


class Contribution(NamedTuple):
    """What one CDR adds to its rows; computed once per CDR, added to three buckets."""

    connected: int
    duration_ms: int
    provider_charge: int
    customer_charge: int
    pending: int
    dtmf: int

    @classmethod
    def of(
        cls, connected: bool, duration_ms: int, provider_charge: int, customer_charge: int | None, dtmf: int
    ) -> Contribution:
        """Billed duration counts for connected calls only; a pending CDR adds no money."""
        pending = customer_charge is None
        return cls(
            connected=1 if connected else 0,
            duration_ms=duration_ms if connected else 0,
            provider_charge=0 if pending else provider_charge,
            customer_charge=0 if customer_charge is None else customer_charge,
            pending=1 if pending else 0,
            dtmf=1 if dtmf > 0 else 0,
        )


def empty() -> Counters:
    return [0] * len(FIELDS)


def add(row: Counters, c: Contribution) -> None:
    """Add one CDR to ``row`` in place."""
    row[ATTEMPTS] += 1
    row[CONNECTED] += c.connected
    row[DURATION_MS] += c.duration_ms
    row[PROVIDER_CHARGE] += c.provider_charge
    row[CUSTOMER_CHARGE] += c.customer_charge
    row[PENDING] += c.pending
    row[DTMF] += c.dtmf


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
