"""The ingest step: one raw Kafka message in, normalized records and rejects out.

A record is the compact, already-validated form of a CDR that the aggregating
agent consumes: a tuple, so it crosses the internal topic as a short JSON array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import orjson

from breakout.cdr import CDR, decode_message, validate_cdr
from breakout.destinations import DialCodes, resolve
from breakout.errors import InvalidCDR
from breakout.fastpath import CDRFields, common_cdr


class Record(NamedTuple):
    """A valid CDR as the aggregator needs it. Money in micro-units, times in milliseconds."""

    id: str
    customer_id: str
    provider_id: str
    destination: str
    currency: str
    start_ms: int
    connected: bool
    duration_ms: int
    provider_charge: int
    customer_charge: int | None
    dtmf: int


@dataclass(frozen=True, slots=True)
class Reject:
    """Why a message, or one CDR of a batch, was refused; ``payload`` is what was refused.

    For a whole message the payload is its exact bytes; for one CDR of a batch it is
    that CDR re-encoded as JSON (same fields and values), with its index in the batch.
    """

    reason: str
    detail: str
    payload: bytes
    batch_index: int | None = None


def normalize_message(
    value: bytes | None,
    *,
    dial_codes: DialCodes,
    default_currency: str,
    now_ms: int,
    too_late_before_ms: int,
) -> tuple[list[Record], list[Reject]]:
    """Validate every CDR of one message; resolve destinations; sort out what is too late."""
    try:
        documents = decode_message(value)
    except InvalidCDR as exc:
        return [], [Reject(exc.reason, exc.detail, value or b"")]
    records: list[Record] = []
    rejects: list[Reject] = []
    single = len(documents) == 1 and not (value or b"").lstrip().startswith(b"[")
    for index, document in enumerate(documents):
        try:
            fields = common_cdr(document, default_currency=default_currency, now_ms=now_ms)
            if fields is None:  # not the common case: the full validator accepts or says why not
                fields = _fields(validate_cdr(document, default_currency=default_currency, now_ms=now_ms))
            (cdr_id, customer, provider, dst, destination, start_ms, duration_ms, connected) = fields[:8]
            if start_ms < too_late_before_ms:
                raise InvalidCDR("too_late", "start_time is older than the longest retention")
        except InvalidCDR as exc:
            payload = (value or b"") if single else orjson.dumps(document)
            rejects.append(Reject(exc.reason, exc.detail, payload, None if single else index))
            continue
        provider_charge, customer_charge, currency, dtmf = fields[8:]
        records.append(
            Record(
                cdr_id,
                customer,
                provider,
                resolve(destination, dst, dial_codes),
                currency,
                start_ms,
                connected,
                duration_ms,
                provider_charge,
                customer_charge,
                dtmf,
            )
        )
    return records, rejects


def _fields(cdr: CDR) -> CDRFields:
    return (
        cdr.id,
        cdr.customer_id,
        cdr.provider_id,
        cdr.dst,
        cdr.destination,
        cdr.start_ms,
        cdr.duration_ms,
        cdr.connected,
        cdr.provider_charge,
        cdr.customer_charge,
        cdr.currency,
        cdr.dtmf,
    )
