"""Aggregate arithmetic of one breakout row: sums in, ratios derived on read.

A row's counters are a fixed-order list of integers (the same order everywhere:
tables, changelog, Redis), so adding a CDR is a handful of integer additions and
merging rows is element-wise. Ratios (ASR, NER, ACD, PDD, profit %, DTMF %, short %)
are never stored: ``breakout.snapshot`` rebuilds them from summed counts when a report
is read, because averaging per-row ratios gives a wrong total.

The distribution of final SIP codes is counters too: one per code of a fixed catalogue
(``SIP_CODES``, the codes that make up nearly all of real traffic) and one per class for
every other code (``other 5xx``). A fixed catalogue keeps a row a flat, bounded list that
sums exactly across rows, buckets and workers; a per-row "top N" would not (two rows
with different top codes cannot be added). Attempts that carried no ``sip_code`` are the
attempts minus the catalogue's sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import add as _plus

# Positions in a row's counter list.
(
    ATTEMPTS,
    CONNECTED,
    DURATION_MS,
    PROVIDER_CHARGE,
    CUSTOMER_CHARGE,
    PENDING,
    DTMF,
    EFFECTIVE,
    PDD_MS,
    PDD_CALLS,
    SHORT_CALLS,
) = range(11)
# Final SIP codes counted one by one; every other code counts in its class's ``other``.
SIP_CODES = (200, 403, 404, 408, 480, 484, 486, 487, 488, 500, 502, 503, 504, 603)
SIP_CLASSES = (1, 2, 3, 4, 5, 6)
FIRST_SIP = SHORT_CALLS + 1
SIP_LABELS = (*(str(code) for code in SIP_CODES), *(f"{c}xx" for c in SIP_CLASSES))
FIELDS = (
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
)
WIDTH = len(FIELDS)
LEGACY_WIDTH = 7  # rows written before NER, PDD, short calls and SIP codes were counted
Counters = list[int]

_SIP_ZEROS = [0] * (WIDTH - FIRST_SIP)
_SLOT = {code: FIRST_SIP + index for index, code in enumerate(SIP_CODES)}
_CLASS_SLOT = {c: FIRST_SIP + len(SIP_CODES) + index for index, c in enumerate(SIP_CLASSES)}


def sip_slot(sip_code: int | None) -> int:
    """The counter position of a final SIP code; 0 (no slot) for an attempt without one."""
    if sip_code is None:
        return 0
    slot = _SLOT.get(sip_code)
    return slot if slot is not None else _CLASS_SLOT[sip_code // 100]


def counters_of(
    connected: bool,
    duration_ms: int,
    provider_charge: int,
    customer_charge: int | None,
    dtmf: int,
    effective: bool = False,
    pdd_ms: int | None = None,
    short: bool = False,
) -> Counters:
    """What one CDR adds to the leading counters of each of its rows (attempts is 1), computed
    once and added to three; its SIP code adds 1 at ``sip_slot`` (see ``add_one``, ``row_of``).

    Only the leading counters: a CDR touches one SIP counter of twenty, and building the other
    nineteen zeros for every CDR would cost more than the additions. Billed duration counts
    for connected calls only; a pending CDR adds no money. ``short`` is whether it is a
    connected call under the short-call threshold, decided by the caller (``is_short``).
    """
    if customer_charge is None:
        provider_charge = customer_charge = 0
        pending = 1
    else:
        pending = 0
    return [
        1,
        1 if connected else 0,
        duration_ms if connected else 0,
        provider_charge,
        customer_charge,
        pending,
        1 if dtmf > 0 else 0,
        1 if effective else 0,
        pdd_ms or 0,
        0 if pdd_ms is None else 1,
        1 if short else 0,
    ]


def row_of(contribution: Counters, slot: int) -> Counters:
    """A new row holding one CDR: its leading counters (``counters_of``) and its SIP counter."""
    row = contribution + _SIP_ZEROS
    if slot:
        row[slot] = 1
    return row


def is_short(connected: bool, duration_ms: int, short_call_ms: int) -> bool:
    """A connected call shorter than the threshold: the false-answer and fraud signal."""
    return connected and duration_ms < short_call_ms


def empty() -> Counters:
    return [0] * WIDTH


def widened(counters: Counters) -> Counters:
    """A stored row at today's width: one written before the newer counters gets zeros for them.

    Those CDRs were counted before NER, PDD, short calls and SIP codes were, so zero is
    what they contributed to each; every reader widens, so rows of both ages sum exactly.
    """
    if len(counters) < WIDTH:
        return [*counters, *([0] * (WIDTH - len(counters)))]
    return counters


def add(row: Counters, other: Sequence[int]) -> None:
    """Add ``other`` to ``row`` in place (element-wise, in C)."""
    row[:] = map(_plus, row, other)


def add_one(row: Counters, other: Counters, slot: int) -> None:
    """Add one CDR's contribution (``counters_of``) to ``row`` in place: the per-CDR hot path.

    Unrolled over the leading counters, and the one SIP counter the CDR has (``slot``, 0
    for none) instead of all of them: it runs three times per CDR.
    """
    row[0] += other[0]
    row[1] += other[1]
    row[2] += other[2]
    row[3] += other[3]
    row[4] += other[4]
    row[5] += other[5]
    row[6] += other[6]
    row[7] += other[7]
    row[8] += other[8]
    row[9] += other[9]
    row[10] += other[10]
    if slot:
        row[slot] += 1


def subtract_one(row: Counters, other: Counters, slot: int) -> None:
    """Take one CDR's contribution out of ``row`` in place: a revision retracting the version
    it supersedes."""
    row[0] -= other[0]
    row[1] -= other[1]
    row[2] -= other[2]
    row[3] -= other[3]
    row[4] -= other[4]
    row[5] -= other[5]
    row[6] -= other[6]
    row[7] -= other[7]
    row[8] -= other[8]
    row[9] -= other[9]
    row[10] -= other[10]
    if slot:
        row[slot] -= 1
