"""The commit sequence (``streams.aggregator``) with dictionaries for tables and a recording mirror."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import orjson
import pytest

from breakout.buckets import Granularity, Retention
from breakout.ledger import BucketKey, CustomerBucket, RowId
from breakout.normalize import Record
from streams import aggregator as aggregator_module
from streams.aggregator import TABLE_FLUSH_SECONDS, Aggregator

RETENTION = Retention(minute=172_800, hour=3_024_000, day=34_560_000)
T0 = 1_795_597_200_000  # 2026-11-25T09:00:00Z
DAY_MS = 86_400_000
PARTITION = 2


@dataclass
class Tables:
    rows: dict[bytes, bytes] = field(default_factory=dict)
    seen: dict[bytes, bytes] = field(default_factory=dict)
    progress: dict[bytes, bytes] = field(default_factory=dict)


@dataclass
class Mirror:
    staged: dict[BucketKey, CustomerBucket | None] = field(default_factory=dict)

    def stage(self, key: BucketKey, bucket: CustomerBucket | None, rows: set[RowId] | None) -> None:
        self.staged[key] = None if bucket is None else CustomerBucket.decode(bucket.encode())


@dataclass
class Message:
    acked: bool = False

    def ack(self) -> bool:
        self.acked = True
        return True


def record(cdr_id: str, start_ms: int = T0, customer: str = "A") -> Record:
    return Record(cdr_id, customer, "p1", "UK", "EUR", start_ms, True, 60_000, 10, 15, 0)


def encode(*records: Record) -> bytes:
    return orjson.dumps(records, default=tuple)


def aggregator(tables: Tables, mirror: Mirror | None = None, assigned: set[int] | None = None) -> Aggregator:
    return Aggregator(tables, mirror or Mirror(), RETENTION, 7 * DAY_MS, Counter(), assigned=lambda: assigned)


def attempts(tables: Tables) -> dict[tuple[str, str], int]:
    """Attempts per (bucket size, customer) in the tables."""
    found = {}
    for raw_key, raw in tables.rows.items():
        key = BucketKey.decode(raw_key)
        found[(key.granularity.value, key.customer)] = sum(
            c[0] for c in CustomerBucket.decode(raw).rows.values()
        )
    return found


async def test_apply_stages_for_redis_at_once_and_holds_the_message_until_the_tables_are_written() -> None:
    tables, mirror, message = Tables(), Mirror(), Message()
    agg = aggregator(tables, mirror)
    assert agg.apply(PARTITION, 0, encode(record("a"), record("b")), message) == []
    assert {k.granularity for k in mirror.staged} == set(Granularity)  # step 2: staged at once
    assert tables.rows == {} and not message.acked  # steps 3-4: held, tables untouched
    await agg.flush(PARTITION)
    assert message.acked
    assert attempts(tables) == {("m", "A"): 2, ("h", "A"): 2, ("d", "A"): 2}
    assert orjson.loads(tables.progress[b"2"]) == {"t": T0, "o": 0}


def test_many_small_messages_wait_for_the_clock() -> None:
    """A live trickle's small messages must not make every bucket be written each time."""
    agg = aggregator(Tables())
    for offset in range(1_000):
        agg.apply(PARTITION, offset, encode(record(f"c{offset}")), Message())
        assert not agg.due(PARTITION)
    agg.partitions[PARTITION].flushed_at -= TABLE_FLUSH_SECONDS
    assert agg.due(PARTITION)


def test_due_once_the_held_messages_reach_the_byte_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    agg = aggregator(Tables())
    first, second = encode(record("a")), encode(record("b"))
    monkeypatch.setattr(aggregator_module, "TABLE_FLUSH_BYTES", len(first) + len(second))
    agg.apply(PARTITION, 0, first, Message())
    assert not agg.due(PARTITION)
    agg.apply(PARTITION, 1, second, Message())
    assert agg.due(PARTITION)


async def test_a_crash_before_the_flush_replays_and_counts_once() -> None:
    tables = Tables()
    first = aggregator(tables)
    first.apply(PARTITION, 0, encode(record("a")), Message())
    await first.flush(PARTITION)
    first.apply(PARTITION, 1, encode(record("b")), Message())  # applied, never flushed: the crash
    second = aggregator(tables)  # the restarted worker replays offset 1, and a duplicate of "a"
    second.apply(PARTITION, 1, encode(record("b")), Message())
    second.apply(PARTITION, 2, encode(record("a")), Message())
    await second.flush(PARTITION)
    assert attempts(tables) == {("m", "A"): 2, ("h", "A"): 2, ("d", "A"): 2}
    assert second.counters["duplicates"] == 1


async def test_too_late_in_the_first_message_is_refused_and_reported_once_across_a_replay() -> None:
    tables = Tables()
    now_ms = T0 + 500 * DAY_MS
    message = encode(record("old"), record("new", start_ms=now_ms, customer="B"))
    first = aggregator(tables)
    assert [r.id for r in first.apply(PARTITION, 0, message, Message())] == ["old"]
    await first.flush(PARTITION)
    assert {customer for _, customer in attempts(tables)} == {"B"}
    replayed = aggregator(tables)
    assert replayed.apply(PARTITION, 0, message, Message()) == []  # committed already: a replay
    assert replayed.counters["rejected:too_late"] == 0


async def test_the_mirror_reads_every_bucket_with_unflushed_values_first() -> None:
    tables = Tables()
    agg = aggregator(tables, assigned={PARTITION})
    agg.apply(PARTITION, 0, encode(record("a")), Message())
    await agg.flush(PARTITION)
    agg.apply(PARTITION, 1, encode(record("b"), record("c", customer="C")), Message())
    keys = agg.bucket_keys({PARTITION})
    assert {k.customer for k in keys} == {"A", "C"} and len(keys) == 6  # C is not in the tables yet
    values = {k: agg.value(k) for k in keys}
    assert all(v is not None and v.applied == 1 for v in values.values())
    assert agg.watermark(PARTITION) == (T0, 1)
    assert agg.owned() == {PARTITION}


def test_nothing_is_owned_while_a_rebalance_is_under_way() -> None:
    assert aggregator(Tables(), assigned=None).owned() == set()


async def test_reading_a_revoked_partition_creates_no_state() -> None:
    tables = Tables()
    agg = aggregator(tables)
    agg.apply(PARTITION, 0, encode(record("a")), Message())
    await agg.flush(PARTITION)
    agg.forget(PARTITION)
    keys = agg.bucket_keys({PARTITION})
    assert all(agg.value(k) is not None for k in keys)
    assert agg.partitions == {}


async def test_messages_are_acknowledged_only_after_the_changelog_is_delivered() -> None:
    tables, message = Tables(), Message()
    seen: list[tuple[int, bool]] = []

    async def deliver() -> None:
        seen.append((len(tables.rows), message.acked))  # tables written, nothing acked yet

    agg = Aggregator(tables, Mirror(), RETENTION, 7 * DAY_MS, Counter(), deliver=deliver)
    agg.apply(PARTITION, 0, encode(record("a")), message)
    await agg.flush(PARTITION)
    assert seen == [(3, False)] and message.acked
