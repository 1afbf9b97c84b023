"""Aggregate arithmetic of one breakout row: sums in, ratios derived on read.

A row's counters are a fixed-order list of integers (the same order everywhere:
tables, changelog, Redis), so adding a CDR is a handful of integer additions and
merging rows is element-wise. Ratios (ASR, ACD, profit %, DTMF %) are never
stored: ``breakout.snapshot`` rebuilds them from summed counts when a report is
read, because averaging per-row ratios gives a wrong total.
"""

from __future__ import annotations

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


def subtract(row: Counters, other: Counters) -> None:
    """Take ``other`` out of ``row`` in place: a revision retracting the version it supersedes."""
    row[0] -= other[0]
    row[1] -= other[1]
    row[2] -= other[2]
    row[3] -= other[3]
    row[4] -= other[4]
    row[5] -= other[5]
    row[6] -= other[6]
