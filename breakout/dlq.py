"""Reading dead letters back: what ``breakout dlq`` shows and what ``breakout dlq replay`` sends.

A dead letter is the JSON entry ``streams.deadletter`` wrote (reason, detail, the payload
as published, where it came from) plus where it sits in the dead-letter topic and when it
got there. Replaying one sends its payload, byte for byte, back to the CDR topic: the
worker then treats it like any CDR, so a CDR replayed twice, or replayed after it was
counted, is a duplicate and counts once.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from breakout.cdr import decode_message, validate_cdr
from breakout.errors import InvalidCDR

UNREADABLE = "unreadable_entry"  # a message in the dead-letter topic that is no entry of ours
PAYLOAD_SHOWN = 200  # characters of a payload in the human listing


@dataclass(frozen=True)
class DeadLetter:
    """One dead-letter message: ``partition`` and ``offset`` are in the dead-letter topic."""

    partition: int
    offset: int
    timestamp_ms: int
    entry: dict[str, Any]

    @property
    def reason(self) -> str:
        return str(self.entry.get("error", UNREADABLE))

    def document(self) -> dict[str, Any]:
        """The entry with its place in the dead-letter topic: one line of ``--json`` output."""
        return {
            "dlq_partition": self.partition,
            "dlq_offset": self.offset,
            "dlq_timestamp": _iso(self.timestamp_ms),
            **self.entry,
        }

    def line(self) -> str:
        """Two lines for a person: when, why, where from; then the payload's start."""
        entry = self.entry
        source = f"{entry.get('topic')}/{entry.get('partition')}@{entry.get('offset')}"
        if entry.get("batch_index") is not None:
            source += f"[{entry['batch_index']}]"
        payload = str(entry.get("payload", ""))
        if len(payload) > PAYLOAD_SHOWN:
            payload = payload[: PAYLOAD_SHOWN - 1] + "…"
        return (
            f"{_iso(self.timestamp_ms)}  {self.reason}  {source}  (dlq {self.partition}@{self.offset})\n"
            f"    {entry.get('detail', '')}\n    {payload}"
        )


def parse_dead_letter(partition: int, offset: int, timestamp_ms: int, value: bytes | None) -> DeadLetter:
    """The dead letter in one message; a value that is not an entry is kept as ``unreadable_entry``."""
    try:
        entry = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        entry = None
    if not isinstance(entry, dict) or not isinstance(entry.get("error"), str):
        shown = (value or b"")[:PAYLOAD_SHOWN].decode("utf-8", "replace")
        entry = {"error": UNREADABLE, "detail": "not a dead-letter entry", "payload": shown}
    return DeadLetter(partition, offset, timestamp_ms, entry)


class NotReplayable(Exception):
    """Why a dead letter's payload cannot be sent back as it was published."""


def replay_value(letter: DeadLetter) -> bytes:
    """The bytes the CDR was published with, checked against the entry's digest."""
    entry = letter.entry
    if letter.reason == UNREADABLE:
        raise NotReplayable("not a dead-letter entry")
    if entry.get("payload_truncated"):
        raise NotReplayable(
            f"the payload was cut to fit the dead-letter topic: read the whole one in "
            f"{entry.get('topic')} partition {entry.get('partition')} at offset {entry.get('offset')}"
        )
    payload = str(entry.get("payload", ""))
    value = base64.b64decode(payload) if entry.get("payload_encoding") == "base64" else payload.encode()
    if not value:
        raise NotReplayable(
            f"no payload carried: read it in {entry.get('topic')} partition {entry.get('partition')} "
            f"at offset {entry.get('offset')}"
        )
    digest = entry.get("payload_sha256")
    if digest is not None and hashlib.sha256(value).hexdigest() != digest:
        raise NotReplayable("the payload does not match its sha256")
    return value


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command applies to; every bound given must hold."""

    reasons: frozenset[str] = frozenset()
    since_ms: int | None = None  # dead-lettered at or after
    until_ms: int | None = None  # dead-lettered before
    partition: int | None = None  # of the dead-letter topic, for the offsets
    from_offset: int | None = None
    to_offset: int | None = None  # inclusive

    def matches(self, letter: DeadLetter) -> bool:
        return (
            (not self.reasons or letter.reason in self.reasons)
            and (self.since_ms is None or letter.timestamp_ms >= self.since_ms)
            and (self.until_ms is None or letter.timestamp_ms < self.until_ms)
            and (self.partition is None or letter.partition == self.partition)
            and (self.from_offset is None or letter.offset >= self.from_offset)
            and (self.to_offset is None or letter.offset <= self.to_offset)
        )


def parse_instant(text: str) -> int:
    """Epoch milliseconds of an ISO-8601 date or date-time (UTC unless it says otherwise)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected an ISO-8601 date or date-time, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def check_line(value: bytes, *, limit: int, default_currency: str, now_ms: int) -> list[str]:
    """Why one JSON line would be refused by the worker's contract check (empty: it would not).

    The same checks the worker's first step makes, so a file is fixed before it is sent;
    what only the worker knows (dial codes, its stream time, the CDRs it has counted) is
    still decided there, and what it refuses still goes to the dead-letter topic.
    """
    if len(value) > limit:
        return [f"too_large: {len(value):,} bytes, the topic takes at most {limit:,}"]
    try:
        documents = decode_message(value)
    except InvalidCDR as exc:
        return [f"{exc.reason}: {exc.detail}"]
    problems = []
    batch = value.lstrip().startswith(b"[")
    for index, document in enumerate(documents):
        try:
            validate_cdr(document, default_currency=default_currency, now_ms=now_ms)
        except InvalidCDR as exc:
            problems.append(f"{f'[{index}] ' if batch else ''}{exc.reason}: {exc.detail}")
    return problems


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")
