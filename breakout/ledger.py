"""Applying normalized CDRs of one partition to its bucket rows, exactly once.

Two mechanisms make at-least-once delivery count each CDR once:

* **Offsets.** Every stored bucket value carries the highest offset of its
  partition it has absorbed (``applied``). A message replayed after a crash or a
  rebalance has an offset at or below that, so it is skipped for that bucket; as
  each bucket value is written whole, a crash between two writes of one message
  leaves each bucket either fully with it or fully without it.
* **CDR ids.** An id counted at one offset and seen again at another (the
  platform re-published it, or the ingest step re-sent it) is a duplicate for
  ``dedup_window`` of stream time.

Everything here is plain data and arithmetic; the Faust agent feeds it messages
and stores what it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from breakout.aggregate import Counters, add, counters_of
from breakout.buckets import GRANULARITIES, Granularity, Retention
from breakout.normalize import Record

# A row's id is the JSON text of ``[destination, provider, currency]``: a string key keeps a
# bucket's rows a plain ``dict[str, list[int]]``, which orjson encodes and decodes whole in C
# (a bucket holds hundreds of rows and is written once a second), and JSON text can hold
# any destination or provider name without an escaping scheme of its own.
RowId = str


def row_id(destination: str, provider: str, currency: str) -> RowId:
    return orjson.dumps((destination, provider, currency)).decode()


def row_parts(row: RowId) -> tuple[str, str, str]:
    """``(destination, provider, currency)`` of a row id."""
    destination, provider, currency = orjson.loads(row)
    return destination, provider, currency


class BucketKey(NamedTuple):
    """One customer's rows in one bucket of one partition: the unit of state and of writes.

    A named tuple, not a dataclass: three are built and hashed per CDR.
    """

    partition: int
    granularity: Granularity
    start: int
    customer: str

    def encode(self) -> bytes:
        return f"{self.partition}|{self.granularity.value}|{self.start}|{self.customer}".encode()

    @classmethod
    def decode(cls, raw: bytes) -> BucketKey:
        partition, granularity, start, customer = raw.decode().split("|", 3)
        return cls(int(partition), Granularity(granularity), int(start), customer)


@dataclass(slots=True)
class CustomerBucket:
    """Counters per (destination, provider, currency), and the last offset absorbed."""

    applied: int = -1
    rows: dict[RowId, Counters] = field(default_factory=dict)

    def encode(self) -> bytes:
        return orjson.dumps({"o": self.applied, "r": self.rows})

    @classmethod
    def decode(cls, raw: bytes) -> CustomerBucket:
        document = orjson.loads(raw)
        rows = document["r"]
        if isinstance(rows, list):  # written before rows were keyed by id: [[d, p, c, *counters]]
            rows = {row_id(*row[:3]): row[3:] for row in rows}
        return cls(document["o"], rows)


@dataclass(slots=True)
class Outcome:
    """What applying one message changed, for the edge to store, mirror and report."""

    updates: dict[BucketKey, CustomerBucket] = field(default_factory=dict)
    changed_rows: dict[BucketKey, set[RowId]] = field(default_factory=dict)
    deletions: list[BucketKey] = field(default_factory=list)
    counted_ids: list[str] = field(default_factory=list)
    forgotten_offsets: list[int] = field(default_factory=list)
    too_late: list[Record] = field(default_factory=list)
    duplicates: int = 0
    replayed: int = 0


class _Targets(NamedTuple):
    """Where the CDRs of one customer and minute go, and what they changed there."""

    keys: list[BucketKey]  # the kept buckets that have not absorbed this message yet
    rows: list[dict[RowId, Counters]]  # their rows
    changed: set[RowId]  # the rows these CDRs added to, in each of those buckets
    replayed: bool  # a kept bucket had absorbed this message already


_UNSET: Any = object()
ROW_ID_CACHE = 100_000  # (destination, provider, currency) → row id, cleared when it grows past this


class PartitionLedger:
    """The in-memory side of one partition's state: stream time, id index, live buckets.

    Rebuilt from the tables when the partition is assigned (``restore``), so it holds
    nothing the tables do not.
    """

    def __init__(self, partition: int, retention: Retention, dedup_window_ms: int) -> None:
        self.partition = partition
        self.retention = retention
        self.dedup_window_ms = dedup_window_ms
        self.stream_ms = 0
        self.offset = -1  # the last message applied: one at or below it is a replay
        self._seen: dict[str, int] = {}
        self._seen_batches: dict[int, tuple[int, list[str]]] = {}
        self._live: dict[tuple[Granularity, int], set[str]] = {}
        self._row_ids: dict[tuple[str, str, str], RowId] = {}

    def restore(
        self,
        stream_ms: int,
        offset: int,
        bucket_keys: Iterable[BucketKey],
        seen_batches: Iterable[tuple[int, int, list[str]]],
    ) -> None:
        """Load what the tables hold for this partition after recovery."""
        self.stream_ms = stream_ms
        self.offset = offset
        for key in bucket_keys:
            self._live.setdefault((key.granularity, key.start), set()).add(key.customer)
        for offset, newest_ms, ids in sorted(seen_batches):
            self._remember(offset, newest_ms, ids)

    def _remember(self, offset: int, newest_ms: int, ids: list[str]) -> None:
        self._seen_batches[offset] = (newest_ms, ids)
        for cdr_id in ids:
            self._seen.setdefault(cdr_id, offset)

    def apply(
        self, offset: int, records: Sequence[Record], read: Callable[[BucketKey], CustomerBucket | None]
    ) -> Outcome:
        """Add one message's records to their buckets; ``read`` fetches stored bucket values.

        Stream time moves to the message's newest start time *before* any record is
        applied, so whether a CDR is too late never depends on its place in the message:
        an old CDR in the first message of a new deployment is refused like one in the
        thousandth, instead of filling a bucket that the same message then expires.

        This is the worker's per-CDR loop, so it only unpacks each record (a plain sequence
        in ``Record`` field order will do, as decoded from the internal topic) and adds to
        rows; every bucket decision is made once per customer and minute, not per CDR.
        """
        outcome = Outcome()
        newest_ms = max([record[5] for record in records], default=0)
        if newest_ms > self.stream_ms:
            previous_s = self.stream_ms // 1000
            self.stream_ms = newest_ms
            if newest_ms // 1000 > previous_s:
                self._expire(outcome)
        stream_s = self.stream_ms // 1000
        seen = self._seen
        in_message: set[str] = set()
        counted = outcome.counted_ids
        kept = [(g, g.seconds, stream_s - self.retention.expires_at(g, 0) + 1) for g in GRANULARITIES]
        skipped: set[BucketKey] = set()
        # Per (customer, minute): where its CDRs go. A minute lies in one hour and one day, so
        # the three buckets of every CDR of that customer and minute are the same.
        targets: dict[tuple[str, int], _Targets | None] = {}
        row_ids = self._row_ids
        for record in records:
            (cdr_id, customer, provider, destination, currency, start_ms, connected, duration_ms, charge,
             charged, dtmf, _) = record  # fmt: skip
            if cdr_id in in_message or seen.get(cdr_id, offset) != offset:
                outcome.duplicates += 1
                continue
            in_message.add(cdr_id)
            minute = start_ms // 60_000
            target = targets.get((customer, minute), _UNSET)
            if target is _UNSET:
                target = targets[(customer, minute)] = self._targets(
                    offset, customer, minute * 60, kept, skipped, outcome, read
                )
            if target is None:  # older than every kept bucket
                outcome.too_late.append(Record._make(record))
                continue
            row = row_ids.get((destination, provider, currency))
            if row is None:
                if len(row_ids) >= ROW_ID_CACHE:
                    row_ids.clear()
                row = row_ids[(destination, provider, currency)] = row_id(destination, provider, currency)
            contribution = counters_of(connected, duration_ms, charge, charged, dtmf)
            for rows in target.rows:
                counters = rows.get(row)
                if counters is None:
                    rows[row] = contribution.copy()
                else:
                    add(counters, contribution)
            target.changed.add(row)
            outcome.replayed += target.replayed
            counted.append(cdr_id)
        for target in targets.values():
            if target is not None:
                for key in target.keys:
                    outcome.changed_rows[key] |= target.changed
        for key in outcome.updates:
            key_bucket = (key.granularity, key.start)
            live = self._live.get(key_bucket)
            if live is None:
                live = self._live[key_bucket] = set()
            live.add(key.customer)
            outcome.updates[key].applied = offset
        if counted:
            self._remember(offset, self.stream_ms, counted)
        if offset <= self.offset:
            outcome.too_late.clear()  # reported when the message was first applied
        self.offset = max(self.offset, offset)
        return outcome

    def _targets(
        self,
        offset: int,
        customer: str,
        minute_s: int,
        kept: list[tuple[Granularity, int, int]],
        skipped: set[BucketKey],
        outcome: Outcome,
        read: Callable[[BucketKey], CustomerBucket | None],
    ) -> _Targets | None:
        """The rows to add to for one customer and minute (None: no bucket of it is kept).

        A bucket that has already absorbed ``offset`` (a replay) is left out and noted.
        """
        keys: list[BucketKey] = []
        rows: list[dict[RowId, Counters]] = []
        replayed = any_kept = False
        for granularity, size, first in kept:
            start = minute_s // size * size
            if start < first:
                continue  # a late CDR still lands in the buckets that are kept
            any_kept = True
            key = BucketKey(self.partition, granularity, start, customer)
            bucket = outcome.updates.get(key)
            if bucket is None:
                if key in skipped:
                    replayed = True
                    continue
                bucket = read(key) or CustomerBucket()
                if bucket.applied >= offset:
                    skipped.add(key)
                    replayed = True
                    continue
                outcome.updates[key] = bucket
                outcome.changed_rows[key] = set()
            keys.append(key)
            rows.append(bucket.rows)
        return _Targets(keys, rows, set(), replayed) if any_kept else None

    def _expire(self, outcome: Outcome) -> None:
        """Drop buckets past retention and ids past the dedup window, at the new stream time."""
        stream_s = self.stream_ms // 1000
        for granularity, start in [k for k in self._live if self.retention.is_expired(*k, stream_s)]:
            for customer in self._live.pop((granularity, start)):
                outcome.deletions.append(BucketKey(self.partition, granularity, start, customer))
        horizon = self.stream_ms - self.dedup_window_ms
        for offset, (newest_ms, ids) in list(self._seen_batches.items()):
            if newest_ms >= horizon:
                break  # batches are kept in offset order; stop at the first one still needed
            del self._seen_batches[offset]
            outcome.forgotten_offsets.append(offset)
            for cdr_id in ids:
                if self._seen.get(cdr_id) == offset:
                    del self._seen[cdr_id]
