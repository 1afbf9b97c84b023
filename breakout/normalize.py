"""The ingest step: one raw Kafka message in, normalized records and rejects out.

A record is the compact, already-validated form of a CDR that the aggregating
agent consumes: a tuple, so it crosses the internal topic as a short JSON array,
packed into messages the topic's size limit admits (``internal_messages``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from breakout.cdr import CDR, MAX_TEXT, decode_message, validate_cdr
from breakout.destinations import DialCodes, resolve
from breakout.errors import InvalidCDR
from breakout.fastpath import CDRFields, common_cdr

UNPROCESSABLE = "unprocessable"
# Where a CDR was published and its text: topic, partition, offset, index in its batch
# (None: the message was the CDR), and the CDR as JSON (None: longer than ORIGIN_TEXT_BYTES).
Origin = tuple[str, int, int, int | None, str | None]
ORIGIN_TEXT_BYTES = 16_384
# The longest a record can be on the internal topic: four text fields of MAX_TEXT characters
# (a dial-code table's destination names are assumed no longer), each character at worst
# 6 bytes once JSON-escaped (\u0001), with their quotes; 256 bytes for the currency, the
# numbers (the revision's 10 digits included), a boolean, brackets and commas: under 100
# at their contract maximums; and an origin: a topic name (249 characters at most), JSON
# text that escaping at most doubles (quotes and backslashes; control characters are
# escaped in it already), and 128 bytes for its quotes, numbers and separators, under 50.
# (The numbers include the effective flag, the PDD and the SIP code: under 130 in all.)
MAX_RECORD_BYTES = 4 * (6 * MAX_TEXT + 2) + 256 + 6 * 249 + 2 * ORIGIN_TEXT_BYTES + 128


class Record(NamedTuple):
    """A valid CDR as the aggregator needs it. Money in micro-units, times in milliseconds.

    ``origin`` is set only for a CDR the aggregator may refuse: one old enough to be too
    late (``normalize_message``'s ``late_before_ms``), or a revision (which it refuses when
    no earlier version is counted): its dead letter then carries the CDR as published and
    where, like every other dead letter, at no cost to the common case.

    ``revision`` orders versions of one CDR id (see docs/cdr-contract.md). ``effective``
    is whether the attempt counts towards NER; ``pdd_ms`` and ``sip_code`` are None where
    the CDR did not say.
    """

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
    origin: Origin | None = None
    revision: int = 0
    effective: bool = False
    pdd_ms: int | None = None
    sip_code: int | None = None


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
    source: tuple[str, int, int] = ("", -1, -1),
    late_before_ms: int = -(2**63),
) -> tuple[list[Record], list[Reject]]:
    """Validate every CDR of one message and resolve its destination; never raises.

    A CDR the contract refuses becomes a ``Reject`` with its reason. Anything else that
    goes wrong is a bug here, not a bad CDR, but one message must never stop the ingest of
    every other: the whole message is refused as ``unprocessable``, with the error's type
    and text, and none of its CDRs is counted; the message waits whole in the dead letter.

    A CDR starting before ``late_before_ms``, or a revision (``revision >= 1``), carries its
    ``origin`` (``source`` is the message's topic, partition and offset).
    """
    try:
        return _normalize(value, dial_codes, default_currency, now_ms, source, late_before_ms)
    except Exception as exc:
        return [], [Reject(UNPROCESSABLE, f"{type(exc).__name__}: {exc}", value or b"")]


def _normalize(
    value: bytes | None,
    dial_codes: DialCodes,
    default_currency: str,
    now_ms: int,
    source: tuple[str, int, int],
    late_before_ms: int,
) -> tuple[list[Record], list[Reject]]:
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
        except InvalidCDR as exc:
            payload = (value or b"") if single else reencode(document)
            rejects.append(Reject(exc.reason, exc.detail, payload, None if single else index))
            continue
        (cdr_id, customer, provider, dst, destination, start_ms, duration_ms, connected) = fields[:8]
        provider_charge, customer_charge, currency, dtmf, revision, effective, pdd_ms, sip_code = fields[8:]
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
                # Kept for the CDRs the aggregator may refuse (too late, a revision it cannot
                # match), so their dead letters carry the CDR as published.
                None
                if start_ms >= late_before_ms and not revision
                else _origin(source, value, document, single, index),
                revision,
                effective,
                pdd_ms,
                sip_code,
            )
        )
    return records, rejects


def _origin(
    source: tuple[str, int, int], value: bytes | None, document: Any, single: bool, index: int
) -> Origin:
    text = (value or b"") if single else reencode(document)
    kept = text.decode() if len(text) <= ORIGIN_TEXT_BYTES else None
    return (*source, None if single else index, kept)


def reencode(document: Any) -> bytes:
    """A refused batch element as compact JSON, exactly as ``orjson.dumps`` writes it, at any depth.

    orjson reads 1,024 levels of nesting but writes only 254, so an element nested deeper
    (a 300-deep extra field) cannot be re-encoded by it. Those few are written here, by a
    loop rather than recursion (Python's own limit is 1,000 frames), with every key and
    scalar still written by orjson: the text is the one orjson would write without its
    limit, and a refused element is never lost to how deep it is.
    """
    try:
        return orjson.dumps(document)
    except TypeError:  # "Recursion limit reached"
        pass
    text = bytearray()
    todo: list[Any] = [document]  # what is left to write, the next item last; bytes are finished text
    while todo:
        item = todo.pop()
        if type(item) is bytes:  # never a JSON value: orjson.loads makes str, not bytes
            text += item
        elif type(item) is list:
            todo.append(b"]")
            for index in reversed(range(len(item))):
                todo += (item[index], b"," if index else b"")
            todo.append(b"[")
        elif type(item) is dict:
            todo.append(b"}")
            for index, (key, member) in reversed(list(enumerate(item.items()))):
                todo += (member, (b"," if index else b"") + orjson.dumps(key) + b":")
            todo.append(b"{")
        else:
            text += orjson.dumps(item)
    return bytes(text)


def internal_messages(records: list[Record], *, max_records: int, max_bytes: int) -> list[bytes]:
    """``records`` as internal-topic message values of at most ``max_records`` records and
    ``max_bytes`` bytes each, in order.

    A message over the topic's size limit would be refused by the broker and stop the
    ingest, and how many records fit depends on their text (a 256-character id of
    characters JSON escapes takes 1,538 bytes). In the common case each chunk is encoded
    once; only one that comes out too large is split in halves until each half fits. One
    record always fits: a record is at most ``MAX_RECORD_BYTES`` and the ingest checks at
    start that ``max_bytes`` is not smaller.
    """
    messages: list[bytes] = []
    for start in range(0, len(records), max_records):
        _append_fitting(records[start : start + max_records], max_bytes, messages)
    return messages


def _append_fitting(records: list[Record], max_bytes: int, messages: list[bytes]) -> None:
    value = orjson.dumps(records, default=tuple)
    if len(value) <= max_bytes or len(records) == 1:
        messages.append(value)
        return
    half = len(records) // 2
    _append_fitting(records[:half], max_bytes, messages)
    _append_fitting(records[half:], max_bytes, messages)


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
        cdr.revision,
        cdr.effective,
        cdr.pdd_ms,
        cdr.sip_code,
    )
