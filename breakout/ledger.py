"""Applying normalized CDRs of one partition to its bucket rows, exactly once.

Two mechanisms make at-least-once delivery count each CDR once:

* **Offsets.** Every stored bucket value carries the highest offset of its
  partition it has absorbed (``applied``). A message replayed after a crash or a
  rebalance has an offset at or below that, so it is skipped for that bucket; as
  each bucket value is written whole, a crash between two writes of one message
  leaves each bucket either fully with it or fully without it.
* **Versions.** Each CDR counted is remembered, per customer and id, as the version it
  counted (``Counted``) for ``dedup_window`` of stream time. The same id seen again at
  another offset is either a *revision* (a higher ``revision``, or the rated version of a
  pending CDR): the counted version is retracted from its buckets and the new one added;
  or a duplicate. A version remembers the offset that counted it and the version it
  superseded there, so a replayed message retracts and adds exactly what it did the
  first time. The versions live on disk (``streams.idstore``); the ledger holds only those
  not yet written there, and asks ``lookup`` for the rest, once per message.

Everything here is plain data and arithmetic; the Faust agent feeds it messages
and stores what it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from breakout.aggregate import (
    Counters,
    add_one,
    counters_of,
    is_short,
    row_of,
    sip_slot,
    subtract_one,
    widened,
)
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
        return json_bytes({"o": self.applied, "r": self.rows})

    @classmethod
    def decode(cls, raw: bytes) -> CustomerBucket:
        document = orjson.loads(raw)
        rows = document["r"]
        if isinstance(rows, list):  # written before rows were keyed by id: [[d, p, c, *counters]]
            rows = {row_id(*row[:3]): row[3:] for row in rows}
        return cls(document["o"], {row: widened(counters) for row, counters in rows.items()})


# One CDR's identity: ids are unique per customer (a revision keeps its customer).
VersionKey = tuple[str, str]  # (customer, id)
# What a lookup returns: ``encode_counted`` bytes, None for an id never counted (or forgotten).
Lookup = Callable[[list[VersionKey]], list[bytes | None]]

REVISION_UNKNOWN = "revision_unknown"
TOO_LATE = "too_late"


def version_of(record: Sequence[Any], short: bool) -> list[Any]:
    """The part of a record a later revision needs to retract it, as stored:
    ``[revision, provider, destination, currency, start_ms, connected, duration_ms,
    provider_charge, customer_charge, dtmf, effective, pdd_ms, sip_code, short]``.

    ``short`` is stored as decided when counted, so a changed threshold never retracts a
    short call that was not counted as one. A version stored before the last four existed
    (ten items) retracts nothing from their counters: it added nothing to them.
    """
    return [record[12], *record[2:5], *record[5:11], *record[13:16], short]


def _legacy(record: Sequence[Any]) -> Sequence[Any]:
    """A record from an internal message written by an older version (fewer fields, read
    positionally): effective is then what ``connected`` says, as no status was kept."""
    old = Record(*record)
    return (*old[:13], old.connected, None, None)


def json_bytes(value: Any) -> bytes:
    """``orjson.dumps(value)`` in a bytes object of its own size.

    orjson's result keeps the buffer of at least 4 KB it was written in: for what is held
    until a table flush or its changelog's delivery (versions, customer-buckets of a few
    hundred bytes), that was 4 KB each. A value used at once (a lookup's key) is cheaper
    without the copy.
    """
    return memoryview(orjson.dumps(value)).tobytes()


def encode_counted(
    key: VersionKey, offset: int, stream_ms: int, version: list[Any], previous: list[Any] | None
) -> bytes:
    """``[customer, id, offset, stream_ms, version, previous]``: the version counted for ``key``
    at ``offset`` (stream time then: it is forgotten ``dedup_window`` later) and the one it
    superseded in that message (None: the id was new there). Hundreds of thousands of these
    are held until a table flush (``json_bytes``).
    """
    return json_bytes([key[0], key[1], offset, stream_ms, version, previous])


def supersedes(revision: int, rated: bool, counted: list[Any]) -> bool:
    """A higher revision supersedes; at equal revision, a rated CDR completes a pending one."""
    return revision > counted[0] or (revision == counted[0] and rated and counted[8] is None)


@dataclass(slots=True)
class Outcome:
    """What applying one message changed, for the edge to store, mirror and report."""

    updates: dict[BucketKey, CustomerBucket] = field(default_factory=dict)
    changed_rows: dict[BucketKey, set[RowId]] = field(default_factory=dict)
    deletions: list[BucketKey] = field(default_factory=list)
    versions: dict[VersionKey, bytes] = field(default_factory=dict)
    refused: list[tuple[str, Record]] = field(default_factory=list)  # (reason, record)
    duplicates: int = 0
    replayed: int = 0
    revised: int = 0


class _Targets(NamedTuple):
    """Where the CDRs of one customer and minute go, and what they changed there."""

    keys: list[BucketKey]  # the kept buckets that have not absorbed this message yet
    rows: list[dict[RowId, Counters]]  # their rows
    changed: set[RowId]  # the rows these CDRs changed, in each of those buckets
    replayed: bool  # a kept bucket had absorbed this message already


_UNSET: Any = object()
ROW_ID_CACHE = 100_000  # (destination, provider, currency) → row id, cleared when it grows past this


class PartitionLedger:
    """The in-memory side of one partition's state: stream time, live buckets, and the
    versions counted but not yet in the id store.

    Rebuilt from the tables when the partition is assigned (``restore``), so it holds
    nothing the tables do not.
    """

    def __init__(
        self, partition: int, retention: Retention, dedup_window_ms: int, short_call_ms: int = 6_000
    ) -> None:
        self.partition = partition
        self.retention = retention
        self.dedup_window_ms = dedup_window_ms
        self.short_call_ms = short_call_ms
        self.stream_ms = 0
        self.offset = -1  # the last message applied: one at or below it is a replay
        # Versions counted since the id store was last written: lookups see them first.
        self.unstored: dict[VersionKey, bytes] = {}
        self._live: dict[tuple[Granularity, int], set[str]] = {}
        self._row_ids: dict[tuple[str, str, str], RowId] = {}

    @property
    def horizon_ms(self) -> int:
        """Versions counted at a stream time before this are forgotten."""
        return self.stream_ms - self.dedup_window_ms

    def restore(self, stream_ms: int, offset: int, bucket_keys: Iterable[BucketKey]) -> None:
        """Load what the tables hold for this partition after recovery."""
        self.stream_ms = stream_ms
        self.offset = offset
        for key in bucket_keys:
            self._live.setdefault((key.granularity, key.start), set()).add(key.customer)

    def stored(self, versions: dict[VersionKey, bytes]) -> None:
        """``versions`` are in the id store now: lookups find them there."""
        unstored = self.unstored
        for key, value in versions.items():
            if unstored.get(key) is value:
                del unstored[key]

    def apply(
        self,
        offset: int,
        records: Sequence[Sequence[Any]],
        read: Callable[[BucketKey], CustomerBucket | None],
        lookup: Lookup,
    ) -> Outcome:
        """Add one message's records to their buckets; ``read`` fetches stored bucket values
        and ``lookup`` the versions counted before.

        Stream time moves to the message's newest start time *before* any record is
        applied, so whether a CDR is too late never depends on its place in the message:
        an old CDR in the first message of a new deployment is refused like one in the
        thousandth, instead of filling a bucket that the same message then expires.

        This is the worker's per-CDR loop, so it only unpacks each record (a plain sequence
        in ``Record`` field order will do, as decoded from the internal topic) and adds to
        rows; every bucket decision is made once per customer and minute, not per CDR, and
        the versions counted before are looked up once per message. A known id (rare: a
        revision or a duplicate) is the only case that decodes anything.
        """
        outcome = Outcome()
        newest_ms = max([record[5] for record in records], default=0)
        if newest_ms > self.stream_ms:
            previous_s = self.stream_ms // 1000
            self.stream_ms = newest_ms
            if newest_ms // 1000 > previous_s:
                self._expire(outcome)
        stream_s = self.stream_ms // 1000
        stream_ms, horizon_ms = self.stream_ms, self.horizon_ms
        kept = [(g, g.seconds, stream_s - self.retention.expires_at(g, 0) + 1) for g in GRANULARITIES]
        skipped: set[BucketKey] = set()
        # Per (customer, minute): where its CDRs go. A minute lies in one hour and one day, so
        # the three buckets of every CDR of that customer and minute are the same.
        targets: dict[tuple[str, int], _Targets | None] = {}
        row_ids = self._row_ids
        known = self._known(records, lookup)
        here = outcome.versions  # counted by this message so far
        short_call_ms = self.short_call_ms

        def target_of(customer: str, minute: int) -> _Targets | None:
            target: _Targets | None = targets.get((customer, minute), _UNSET)
            if target is _UNSET:
                target = targets[(customer, minute)] = self._targets(
                    offset, customer, minute * 60, kept, skipped, outcome, read
                )
            return target

        for record in records:
            if len(record) != 16:
                record = _legacy(record)
            (cdr_id, customer, provider, destination, currency, start_ms, connected, duration_ms, charge,
             charged, dtmf, _, revision, effective, pdd_ms, sip_code) = record  # fmt: skip
            version_key = (customer, cdr_id)
            previous: list[Any] | None = None  # the version this record supersedes
            before: list[Any] | None = None  # the version counted before this message
            raw = here.get(version_key)
            again = raw is not None  # counted earlier in this message
            if raw is None:
                raw = known.get(version_key)
            if raw is not None:
                _, _, counted_at, counted_ms, counted, counted_before = orjson.loads(raw)
                if again or counted_at < offset:
                    if counted_ms < horizon_ms and not again:
                        raw = None  # counted longer ago than the window: forgotten
                    elif supersedes(revision, charged is not None, counted):
                        previous = counted
                        before = counted_before if again else counted
                    else:
                        outcome.duplicates += 1
                        continue
                elif counted_at > offset:  # counted by a later message: this one is an old replay
                    outcome.replayed += 1
                    continue
                else:  # this very message, replayed: retract what it retracted the first time
                    previous = before = counted_before
            if raw is None and revision > 0:
                outcome.refused.append((REVISION_UNKNOWN, Record._make(record)))
                continue
            minute = start_ms // 60_000
            target = target_of(customer, minute)
            if target is None:  # older than every kept bucket
                outcome.refused.append((TOO_LATE, Record._make(record)))
                continue
            if previous is not None:
                self._retract(customer, previous, target_of(customer, previous[4] // 60_000))
                outcome.revised += 1
            row = row_ids.get((destination, provider, currency))
            if row is None:
                if len(row_ids) >= ROW_ID_CACHE:
                    row_ids.clear()
                row = row_ids[(destination, provider, currency)] = row_id(destination, provider, currency)
            short = is_short(connected, duration_ms, short_call_ms)
            contribution = counters_of(
                connected, duration_ms, charge, charged, dtmf, effective, pdd_ms, short
            )
            slot = sip_slot(sip_code)
            for rows in target.rows:
                counters = rows.get(row)
                if counters is None:
                    rows[row] = row_of(contribution, slot)
                else:
                    add_one(counters, contribution, slot)
            target.changed.add(row)
            outcome.replayed += target.replayed
            here[version_key] = encode_counted(
                version_key, offset, stream_ms, version_of(record, short), before
            )
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
        self.unstored.update(here)
        if offset <= self.offset:
            outcome.refused.clear()  # reported when the message was first applied
        self.offset = max(self.offset, offset)
        return outcome

    def _known(self, records: Sequence[Sequence[Any]], lookup: Lookup) -> dict[VersionKey, bytes]:
        """The versions counted before for the ids of ``records``: one lookup for those not here."""
        unstored = self.unstored
        known: dict[VersionKey, bytes] = {}
        missing: list[VersionKey] = []
        for record in records:
            key = (record[1], record[0])
            value = unstored.get(key)
            if value is None:
                missing.append(key)
            else:
                known[key] = value
        if missing:
            for key, value in zip(missing, lookup(missing), strict=True):
                if value is not None:
                    known[key] = value
        return known

    def _retract(self, customer: str, version: list[Any], target: _Targets | None) -> None:
        """Remove an earlier version's contribution from the buckets of it that are kept.

        Every bucket kept now was kept when that version was counted (retention only ever
        drops buckets), so its row holds the contribution; a row left at zero stays a row
        of zeros, which reports leave out.
        """
        if target is None:
            return  # every bucket of the earlier version has expired
        _, provider, destination, currency, _, connected, duration_ms, charge, charged, dtmf = version[:10]
        row = row_id(destination, provider, currency)
        if len(version) > 10:
            effective, pdd_ms, sip_code, short = version[10:]
            contribution = counters_of(
                connected, duration_ms, charge, charged, dtmf, effective, pdd_ms, short
            )
        else:  # counted before NER, PDD, short calls and SIP codes were: it added none of them
            contribution = counters_of(connected, duration_ms, charge, charged, dtmf)
            sip_code = None
        slot = sip_slot(sip_code)
        for rows in target.rows:
            counters = rows.get(row)
            if counters is not None:
                subtract_one(counters, contribution, slot)
        target.changed.add(row)

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
        """Drop buckets past retention at the new stream time."""
        stream_s = self.stream_ms // 1000
        for granularity, start in [k for k in self._live if self.retention.is_expired(*k, stream_s)]:
            for customer in self._live.pop((granularity, start)):
                outcome.deletions.append(BucketKey(self.partition, granularity, start, customer))
