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

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson

from breakout.aggregate import Contribution, Counters, add, empty
from breakout.buckets import GRANULARITIES, Granularity, Retention, bucket_start
from breakout.normalize import Record

RowId = tuple[str, str, str]  # destination, provider, currency


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
        return orjson.dumps({"o": self.applied, "r": [[*row_id, *c] for row_id, c in self.rows.items()]})

    @classmethod
    def decode(cls, raw: bytes) -> CustomerBucket:
        document = orjson.loads(raw)
        return cls(document["o"], {(r[0], r[1], r[2]): r[3:] for r in document["r"]})


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
        self._seen: dict[str, int] = {}
        self._seen_batches: dict[int, tuple[int, list[str]]] = {}
        self._live: dict[tuple[Granularity, int], set[str]] = {}

    def restore(
        self,
        stream_ms: int,
        bucket_keys: Iterable[BucketKey],
        seen_batches: Iterable[tuple[int, int, list[str]]],
    ) -> None:
        """Load what the tables hold for this partition after recovery."""
        self.stream_ms = stream_ms
        for key in bucket_keys:
            self._live.setdefault((key.granularity, key.start), set()).add(key.customer)
        for offset, newest_ms, ids in sorted(seen_batches):
            self._remember(offset, newest_ms, ids)

    def _remember(self, offset: int, newest_ms: int, ids: list[str]) -> None:
        self._seen_batches[offset] = (newest_ms, ids)
        for cdr_id in ids:
            self._seen.setdefault(cdr_id, offset)

    def apply(
        self, offset: int, records: Iterable[Record], read: Callable[[BucketKey], CustomerBucket | None]
    ) -> Outcome:
        """Add one message's records to their buckets; ``read`` fetches stored bucket values."""
        outcome = Outcome()
        stream_s = self.stream_ms // 1000
        touched = outcome.updates
        changed = outcome.changed_rows
        skipped: set[BucketKey] = set()
        in_message: set[str] = set()
        newest_ms = self.stream_ms
        partition = self.partition
        # Per bucket size, the earliest bucket start still kept at this stream time.
        kept = [(g, stream_s - self.retention.expires_at(g, 0) + 1) for g in GRANULARITIES]
        for record in records:
            cdr_id = record.id
            if cdr_id in in_message or self._seen.get(cdr_id, offset) != offset:
                outcome.duplicates += 1
                continue
            in_message.add(cdr_id)
            # A late CDR still lands in the buckets that are kept; in none, it is too late.
            starts = [(g, start) for g, first in kept if (start := bucket_start(record.start_ms, g)) >= first]
            if not starts:
                outcome.too_late.append(record)
                continue
            contribution = Contribution.of(
                record.connected,
                record.duration_ms,
                record.provider_charge,
                record.customer_charge,
                record.dtmf,
            )
            row_id = (record.destination, record.provider_id, record.currency)
            replayed = False
            for granularity, start in starts:
                key = BucketKey(partition, granularity, start, record.customer_id)
                bucket = touched.get(key)
                if bucket is None:
                    if key in skipped:
                        replayed = True
                        continue
                    bucket = read(key) or CustomerBucket()
                    if bucket.applied >= offset:
                        skipped.add(key)
                        replayed = True
                        continue
                    touched[key] = bucket
                    changed[key] = set()
                changed[key].add(row_id)
                row = bucket.rows.get(row_id)
                if row is None:
                    row = bucket.rows[row_id] = empty()
                add(row, contribution)
            outcome.replayed += replayed
            outcome.counted_ids.append(cdr_id)
            newest_ms = max(newest_ms, record.start_ms)
        for key, bucket in touched.items():
            bucket.applied = offset
            self._live.setdefault((key.granularity, key.start), set()).add(key.customer)
        if outcome.counted_ids:
            self._remember(offset, newest_ms, outcome.counted_ids)
        if newest_ms > self.stream_ms:
            self.stream_ms = newest_ms
            if newest_ms // 1000 > stream_s:
                self._expire(outcome)
        return outcome

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
