"""The commit sequence (``streams.aggregator``) with dictionaries for tables and a recording mirror."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise

import orjson
import pytest

from breakout.buckets import Granularity, Retention
from breakout.ledger import BucketKey, CustomerBucket, RowId, VersionKey
from breakout.normalize import Record
from streams import agents
from streams import aggregator as aggregator_module
from streams.aggregator import Aggregator, decode_entry
from streams.app import PRODUCER_BATCH_BYTES
from streams.idstore import Mark, MemoryIdIndex

RETENTION = Retention(minute=172_800, hour=3_024_000, day=34_560_000)
T0 = 1_795_597_200_000  # 2026-11-25T09:00:00Z
DAY_MS = 86_400_000
PARTITION = 2
FLUSH_SECONDS = 30.0


@dataclass
class Tables:
    rows: dict[bytes, bytes] = field(default_factory=dict)
    versions: dict[bytes, bytes] = field(default_factory=dict)
    progress: dict[bytes, bytes] = field(default_factory=dict)


@dataclass
class Mirror:
    staged: dict[BucketKey, CustomerBucket | None] = field(default_factory=dict)

    def stage(self, key: BucketKey, bucket: CustomerBucket | None, rows: set[RowId] | None) -> None:
        self.staged[key] = None if bucket is None else CustomerBucket.decode(bucket.encode())

    def forget(self, partition: int) -> None:
        self.staged = {key: bucket for key, bucket in self.staged.items() if key.partition != partition}


@dataclass
class Message:
    acked: bool = False

    def ack(self) -> bool:
        self.acked = True
        return True


def record(
    cdr_id: str, start_ms: int = T0, customer: str = "A", revision: int = 0, charge: int = 15
) -> Record:
    return Record(cdr_id, customer, "p1", "UK", "EUR", start_ms, True, 60_000, 10, charge, 0, None, revision)


def encode(*records: Record) -> bytes:
    return orjson.dumps(records, default=tuple)


def aggregator(
    tables: Tables,
    mirror: Mirror | None = None,
    assigned: set[int] | None = None,
    ids: MemoryIdIndex | None = None,
) -> Aggregator:
    return Aggregator(
        tables,
        mirror or Mirror(),
        RETENTION,
        7 * DAY_MS,
        Counter(),
        assigned=lambda: assigned,
        ids=ids,
        table_flush_seconds=FLUSH_SECONDS,
    )


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
    # Nothing was delivered before this flush: a restart reads from offset 0.
    assert orjson.loads(tables.progress[b"2"]) == {"t": T0, "o": 0, "d": -1, "f": 0, "n": 1}
    entry = decode_entry(tables.versions[b"2|0"])
    assert (entry["t"], entry["o"], [v[:3] for v in entry["v"]]) == (T0, 0, [["A", "a", 0], ["A", "b", 0]])


async def test_records_written_by_earlier_versions_are_counted() -> None:
    """An internal message from before ``origin`` (11 fields), ``revision`` (12) or the NOC
    fields (13), read after an upgrade: counted, NER from ``connected`` as no status was kept."""
    tables = Tables()
    agg = aggregator(tables)
    old = [list(record(cdr_id))[:length] for cdr_id, length in (("a", 11), ("b", 12), ("c", 13))]
    assert agg.apply(PARTITION, 0, orjson.dumps(old), Message()) == []
    await agg.flush(PARTITION)
    assert attempts(tables) == {("m", "A"): 3, ("h", "A"): 3, ("d", "A"): 3}
    for raw in tables.rows.values():
        [counters] = CustomerBucket.decode(raw).rows.values()
        assert counters[:11] == [3, 3, 180_000, 30, 45, 0, 0, 3, 0, 0, 0]


def test_many_small_messages_wait_for_the_clock() -> None:
    """A live trickle's small messages must not make every bucket be written each time."""
    agg = aggregator(Tables())
    for offset in range(1_000):
        agg.apply(PARTITION, offset, encode(record(f"c{offset}")), Message())
        assert not agg.due(PARTITION)
    agg.partitions[PARTITION].flushed_at -= FLUSH_SECONDS
    assert agg.due(PARTITION)


def age(state: aggregator_module.PartitionState, flush: bool = True) -> None:
    """Make a period pass for ``state`` without a message (and its last nudge that old)."""
    if flush:
        state.flushed_at -= FLUSH_SECONDS
    state.applied_at -= aggregator_module.NUDGE_SECONDS
    state.nudged_at -= aggregator_module.NUDGE_SECONDS


async def test_a_quiet_partition_is_nudged_until_its_tables_name_its_cdrs_delivered() -> None:
    """A flush runs on a message of its partition: one that goes quiet gets an empty message
    of the worker's own once its flush is overdue, which applies nothing and brings the
    flush, and a period later another, whose flush names the first one delivered: only
    then would a restart read none of its CDRs again. Then it is left alone."""
    agg = aggregator(Tables())
    counted = Message()
    agg.apply(PARTITION, 0, encode(record("a")), counted)
    agg.apply(0, 0, encode(record("b")), Message())
    state = agg.partitions[PARTITION]
    assert agg.to_nudge() == []  # flush not due yet
    state.flushed_at -= FLUSH_SECONDS
    assert agg.to_nudge() == []  # due, but a message came a moment ago: it may flush on the next
    age(state, flush=False)
    assert agg.to_nudge() == [PARTITION]  # partition 0 is not overdue
    assert agg.to_nudge() == []  # not again before NUDGE_SECONDS
    first = Message()
    assert agg.apply(PARTITION, 1, aggregator_module.NUDGE, first) == []
    assert agg.due(PARTITION)
    await agg.flush(PARTITION)
    assert counted.acked and first.acked
    assert attempts(agg.tables) == {("m", "A"): 1, ("h", "A"): 1, ("d", "A"): 1}
    assert agg.resume_offset(PARTITION) == 0  # that flush's delivery is not in the tables yet
    age(state, flush=False)
    assert agg.to_nudge() == []  # its next flush is not due for a period
    age(state)
    assert agg.to_nudge() == [PARTITION]
    agg.apply(PARTITION, 2, aggregator_module.NUDGE, Message())
    agg.flush_began -= FLUSH_SECONDS
    assert agg.due(PARTITION)
    await agg.flush(PARTITION)
    assert agg.resume_offset(PARTITION) == 2  # a restart reads only the second nudge again
    age(state)
    assert agg.to_nudge() == []


async def test_a_planned_stop_flushes_at_once_until_the_tables_name_every_cdr_delivered() -> None:
    """Once a stop is under way (``finishing``), a partition is nudged without waiting to be
    quiet or overdue, every message brings a flush, and nudges go on until a flush names
    the one that wrote its CDRs delivered (``finished``); a partition that never counted a
    CDR is not nudged at all."""
    agg = aggregator(Tables())
    agg.apply(PARTITION, 0, encode(record("a")), Message())
    agg.apply(0, 0, aggregator_module.NUDGE, Message())  # partition 0: nothing counted
    assert not agg.due(PARTITION) and agg.to_nudge() == []  # a message a moment ago, none due
    assert not agg.finished
    agg.finishing = True
    assert agg.to_nudge() == [PARTITION]
    assert agg.to_nudge() == []  # not again before FINISH_NUDGE_SECONDS
    agg.apply(PARTITION, 1, aggregator_module.NUDGE, Message())
    assert agg.due(PARTITION)
    await agg.flush(PARTITION)
    assert not agg.finished  # that flush's delivery is not in the tables yet
    agg.partitions[PARTITION].nudged_at -= aggregator_module.FINISH_NUDGE_SECONDS
    assert agg.to_nudge() == [PARTITION]
    agg.apply(PARTITION, 2, aggregator_module.NUDGE, Message())
    assert agg.due(PARTITION)
    await agg.flush(PARTITION)
    assert agg.finished
    assert agg.resume_offset(PARTITION) == 2  # a restart reads only the last nudge again
    agg.partitions[PARTITION].nudged_at -= aggregator_module.FINISH_NUDGE_SECONDS
    assert agg.to_nudge() == []


def test_an_overdue_flush_that_lost_its_turn_is_nudged_again() -> None:
    agg = aggregator(Tables())
    agg.apply(PARTITION, 0, encode(record("a")), Message())
    state = agg.partitions[PARTITION]
    age(state)
    assert agg.to_nudge() == [PARTITION]
    agg.flush_began = time.monotonic()  # another partition's flush just began: this one waits
    agg.apply(PARTITION, 1, aggregator_module.NUDGE, Message())
    assert not agg.due(PARTITION)
    age(state, flush=False)
    assert agg.to_nudge() == [PARTITION]


def test_due_once_the_held_messages_reach_the_byte_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    agg = aggregator(Tables())
    first, second = encode(record("a")), encode(record("b"))
    monkeypatch.setattr(aggregator_module, "TABLE_FLUSH_BYTES", len(first) + len(second))
    agg.apply(PARTITION, 0, first, Message())
    assert not agg.due(PARTITION)
    agg.apply(PARTITION, 1, second, Message())
    assert agg.due(PARTITION)


async def test_partitions_due_by_age_together_flush_spread_over_the_period() -> None:
    """Four partitions assigned together come of age together; their flushes, changelog
    deliveries and indexing would share one stretch of the loop, so each waits a quarter
    of the period after the last, and a period after its own flush it is due again."""
    agg = aggregator(Tables())
    partitions = (0, 1, 2, 3)
    for partition in partitions:
        agg.apply(partition, 0, encode(record(f"c{partition}")), Message())
        agg.partitions[partition].flushed_at -= FLUSH_SECONDS
    assert all(agg.due(partition) for partition in partitions)
    share = FLUSH_SECONDS / len(partitions)
    for partition in partitions:
        assert agg.due(partition)
        await agg.flush(partition)
        assert not any(agg.due(other) for other in partitions)
        agg.flush_began -= share - 0.01
        assert not any(agg.due(other) for other in partitions[partition + 1 :])
        agg.flush_began -= 0.01
    # Every partition flushed a share apart; each is due again a period after its own flush.
    for partition in partitions:
        agg.apply(partition, 1, encode(record(f"d{partition}")), Message())
    assert not any(agg.due(partition) for partition in partitions)
    agg.partitions[0].flushed_at -= FLUSH_SECONDS
    assert agg.due(0) and not agg.due(1)


async def test_partitions_due_by_bytes_take_turns_unless_their_messages_pile_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flush due by bytes waits only ``FLUSH_SPACING_SECONDS`` for its turn, never past
    twice the byte bound."""
    agg = aggregator(Tables())
    message = encode(record("c0", customer="B"))
    monkeypatch.setattr(aggregator_module, "TABLE_FLUSH_BYTES", len(message))
    for partition in (0, 1):
        agg.apply(partition, 0, encode(record(f"c{partition}", customer="B")), Message())
    assert agg.due(0) and agg.due(1)
    await agg.flush(0)
    assert not agg.due(1)
    agg.flush_began -= aggregator_module.FLUSH_SPACING_SECONDS
    assert agg.due(1)
    await agg.flush(1)
    agg.apply(0, 1, message, Message())
    assert not agg.due(0)  # at the bound: waits for its turn
    agg.apply(0, 2, encode(record("c3", customer="B")), Message())
    assert agg.due(0)  # twice the bound: flushes now


async def test_partitions_filling_together_flush_spread_over_their_filling_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under a steady stream every partition reaches the byte bound at once; each waits
    for its share of the time it took to fill after the last flush began, so the flushes
    spread over the filling time instead of holding the loop back to back."""
    agg = aggregator(Tables())
    partitions = (0, 1, 2, 3)
    filling = 8.0
    message = encode(record("c0", customer="B"))
    monkeypatch.setattr(aggregator_module, "TABLE_FLUSH_BYTES", len(message))
    for partition in partitions:
        agg.apply(partition, 0, encode(record(f"c{partition}", customer="B")), Message())
        agg.partitions[partition].flushed_at -= filling
    share = filling / (len(partitions) + 1)  # a turn's slack
    assert share > aggregator_module.FLUSH_SPACING_SECONDS
    for partition in partitions:
        assert agg.due(partition)
        await agg.flush(partition)
        agg.flush_began -= share - 0.05
        assert not any(agg.due(other) for other in partitions[partition + 1 :])
        agg.flush_began -= 0.1


@dataclass
class RecordingIndex(MemoryIdIndex):
    """An id store that records each write: how many versions, and the mark it moved to."""

    writes: list[tuple[int, Mark | None]] = field(default_factory=list)
    on_write: Callable[[], None] = lambda: None

    def __post_init__(self) -> None:
        super().__init__()

    def write(
        self,
        partition: int,
        versions: Mapping[VersionKey, bytes],
        expired: Mapping[VersionKey, bytes],
        mark: Mark | None,
    ) -> None:
        super().write(partition, versions, expired, mark)
        self.writes.append((len(versions), mark))
        self.on_write()


async def test_a_large_flush_is_indexed_in_parts_and_moves_the_mark_with_the_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aggregator_module, "INDEX_PART", 2)
    ids = RecordingIndex()
    agg = aggregator(Tables(), ids=ids)
    agg.apply(PARTITION, 0, encode(*(record(f"c{n}") for n in range(5))), Message())
    await agg.flush(PARTITION)
    assert ids.writes == [(2, None), (2, None), (1, Mark(1, 0, T0))]
    keys = [("A", f"c{n}") for n in range(5)]
    assert None not in ids.get_many(PARTITION, keys)
    assert agg.partitions[PARTITION].ledger.unstored == {}


async def test_indexing_takes_its_share_of_the_loop_and_the_agent_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between two parts the loop is the agent's for ``1 / INDEX_SHARE - 1`` times what the
    part took; while a planned stop finishes, the parts follow each other at once."""
    monkeypatch.setattr(aggregator_module, "INDEX_PART", 2)
    part_seconds = 0.02
    written: list[float] = []

    def slow_write() -> None:
        time.sleep(part_seconds)  # a part's write holds the loop, as RocksDB's holds the GIL
        written.append(time.monotonic())

    for finishing in (False, True):
        written.clear()
        agg = aggregator(Tables(), ids=RecordingIndex(on_write=slow_write))
        agg.finishing = finishing
        agg.apply(PARTITION, 0, encode(*(record(f"c{n}") for n in range(5))), Message())
        turns = 0

        async def agent() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0.001)

        running = asyncio.ensure_future(agent())
        await agg.flush(PARTITION)
        running.cancel()
        gaps = [later - earlier for earlier, later in pairwise(written)]
        assert len(gaps) == 2
        pause = part_seconds * (1 / aggregator_module.INDEX_SHARE - 1)
        if finishing:
            assert max(gaps) < part_seconds + pause / 2
        else:
            assert min(gaps) >= part_seconds + pause * 0.9
            assert turns >= 10  # the agent ran meanwhile


async def test_indexing_stops_when_the_partition_is_revoked_part_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next owner indexes from the table: the old one must not write after it."""
    monkeypatch.setattr(aggregator_module, "INDEX_PART", 2)
    ids = RecordingIndex()
    agg = aggregator(Tables(), ids=ids)
    ids.on_write = lambda: agg.forget(PARTITION)
    agg.apply(PARTITION, 0, encode(*(record(f"c{n}") for n in range(5))), Message())
    await agg.flush(PARTITION)
    assert ids.writes == [(2, None)] and ids.mark(PARTITION) is None


async def test_a_crash_before_the_flush_replays_and_counts_once() -> None:
    tables = Tables()
    first = aggregator(tables)
    first.apply(PARTITION, 0, encode(record("a")), Message())
    await first.flush(PARTITION)
    first.apply(PARTITION, 1, encode(record("b")), Message())  # applied, never flushed: the crash
    second = aggregator(tables)  # the restarted worker replays from 0, then a duplicate of "a"
    assert second.resume_offset(PARTITION) == 0
    second.apply(PARTITION, 0, encode(record("a")), Message())
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
    assert [(why, r.id) for why, r in first.apply(PARTITION, 0, message, Message())] == [("too_late", "old")]
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


async def test_a_revoked_partition_s_staged_changes_leave_the_mirror_with_it() -> None:
    """Should it come back, it is replayed: the mirror must not merge the replay's changes
    with those of the run before (``streams.mirror.RedisMirror.forget``)."""
    mirror = Mirror()
    agg = aggregator(Tables(), mirror)
    agg.apply(PARTITION, 0, encode(record("a")), Message())
    agg.apply(PARTITION + 1, 0, encode(record("b", customer="B")), Message())
    agg.forget(PARTITION)
    assert {key.partition for key in mirror.staged} == {PARTITION + 1}


async def test_messages_are_acknowledged_only_after_the_changelog_is_delivered() -> None:
    tables, message = Tables(), Message()
    seen: list[tuple[int, bool]] = []

    async def deliver() -> None:
        seen.append((len(tables.rows), message.acked))  # tables written, nothing acked yet

    agg = Aggregator(
        tables, Mirror(), RETENTION, 7 * DAY_MS, Counter(), deliver=deliver, table_flush_seconds=FLUSH_SECONDS
    )
    agg.apply(PARTITION, 0, encode(record("a")), message)
    await agg.flush(PARTITION)
    assert seen == [(3, False)] and message.acked


# --- versions and the id store ------------------------------------------------------------


async def test_the_id_store_is_written_only_after_delivery_and_in_flush_order() -> None:
    tables, ids = Tables(), MemoryIdIndex()
    marks: list[Mark | None] = []
    releases: list[asyncio.Event] = []

    async def deliver() -> None:
        marks.append(ids.mark(PARTITION))
        release = asyncio.Event()
        releases.append(release)
        await release.wait()

    agg = Aggregator(
        tables,
        Mirror(),
        RETENTION,
        7 * DAY_MS,
        Counter(),
        deliver=deliver,
        ids=ids,
        table_flush_seconds=FLUSH_SECONDS,
    )
    agg.apply(PARTITION, 0, encode(record("a")), Message())
    first = asyncio.ensure_future(agg.flush(PARTITION))
    agg.apply(PARTITION, 1, encode(record("a", charge=20, revision=1)), Message())
    second = asyncio.ensure_future(agg.flush(PARTITION))
    await asyncio.sleep(0)
    assert marks == [None, None] and ids.get_many(PARTITION, [("A", "a")]) == [None]
    releases[1].set()  # the later delivery covers both flushes: both are indexed, in order
    await second
    assert ids.mark(PARTITION) == Mark(2, 1, T0)
    assert orjson.loads(ids.get_many(PARTITION, [("A", "a")])[0] or b"")[4][0] == 1  # revision 1
    releases[0].set()
    await first
    assert orjson.loads(ids.get_many(PARTITION, [("A", "a")])[0] or b"")[4][0] == 1


async def test_a_lost_id_store_is_rebuilt_from_the_versions_table() -> None:
    tables = Tables()
    first = aggregator(tables)
    first.apply(PARTITION, 0, encode(record("a", charge=15)), Message())
    first.apply(PARTITION, 1, encode(record("a", charge=20, revision=1)), Message())
    await first.flush(PARTITION)
    restarted = aggregator(tables, ids=MemoryIdIndex())  # the local store is gone
    # The replay from the tables' offset: nothing was recorded as delivered yet.
    restarted.apply(PARTITION, 0, encode(record("a", charge=15)), Message())
    restarted.apply(PARTITION, 1, encode(record("a", charge=20, revision=1)), Message())
    assert restarted.apply(PARTITION, 2, encode(record("a", charge=99, revision=1)), Message()) == []
    assert restarted.counters["duplicates"] == 1
    restarted.apply(PARTITION, 3, encode(record("a", charge=30, revision=2)), Message())
    await restarted.flush(PARTITION)
    rows = [CustomerBucket.decode(raw).rows for raw in tables.rows.values()]
    assert [next(iter(r.values()))[:5] for r in rows] == [[1, 1, 60_000, 10, 30]] * 3


async def test_an_id_store_ahead_of_its_table_is_rebuilt() -> None:
    """The table was recovered from an emptied broker: the store must not keep what it lost."""
    tables, ids = Tables(), MemoryIdIndex()
    first = aggregator(tables, ids=ids)
    first.apply(PARTITION, 0, encode(record("a")), Message())
    await first.flush(PARTITION)
    assert ids.mark(PARTITION) == Mark(1, 0, T0)
    emptied = aggregator(Tables(), ids=ids)
    assert emptied.apply(PARTITION, 0, encode(record("a")), Message()) == []
    assert emptied.counters["duplicates"] == 0  # counted anew, as the emptied tables are


async def test_two_versions_entries_fit_one_of_the_producers_batches_whatever_the_cdrs_hold() -> None:
    """The producer sends one batch per partition per round trip: entries of at most half a
    batch go out two at a time. The bound is on the JSON before compression, so it holds
    however poorly the CDRs compress (here, random ids)."""
    tables = Tables()
    agg = aggregator(tables)
    ids = [os.urandom(32).hex() + str(i) for i in range(12_000)]
    agg.apply(PARTITION, 0, encode(*(record(cdr_id) for cdr_id in ids)), Message())
    await agg.flush(PARTITION)
    sizes = [len(entry) for entry in tables.versions.values()]
    assert len(sizes) >= 3
    assert max(sizes) <= PRODUCER_BATCH_BYTES // 2
    assert [v[1] for key in sorted(tables.versions) for v in decode_entry(tables.versions[key])["v"]] == ids


async def test_versions_entries_are_stored_compressed() -> None:
    """Most of a flush's changelog bytes: stored at a fraction of their JSON."""
    tables = Tables()
    agg = aggregator(tables)
    agg.apply(PARTITION, 0, encode(*(record(f"{i:08d}", charge=i % 997) for i in range(3_000))), Message())
    await agg.flush(PARTITION)
    [entry] = tables.versions.values()
    assert len(entry) * 4 < len(orjson.dumps(decode_entry(entry)))


async def test_versions_entries_written_before_the_compression_are_read() -> None:
    """An upgraded worker restores its predecessor's plain-JSON entries: their CDRs re-sent
    are duplicates, and they expire after the dedup window like any other."""
    tables, ids = Tables(), MemoryIdIndex()
    first = aggregator(tables, ids=ids)
    first.apply(PARTITION, 0, encode(record("a")), Message())
    await first.flush(PARTITION)
    tables.versions[b"2|0"] = orjson.dumps(decode_entry(tables.versions[b"2|0"]))  # as once written
    restarted = aggregator(tables, ids=MemoryIdIndex())  # the index rebuilt from the table
    restarted.apply(PARTITION, 0, encode(record("a")), Message())  # the replay of what the tables hold
    restarted.apply(PARTITION, 1, encode(record("a")), Message())  # re-sent
    assert restarted.counters["duplicates"] == 1
    restarted.apply(PARTITION, 2, encode(record("b", start_ms=T0 + 7 * DAY_MS + 1)), Message())
    await restarted.flush(PARTITION)
    assert b"2|0" not in tables.versions  # expired


async def test_versions_are_written_in_bounded_entries_and_dropped_after_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aggregator_module, "VERSIONS_ENTRY_BYTES", 250)
    tables, ids = Tables(), MemoryIdIndex()
    agg = aggregator(tables, ids=ids)
    agg.apply(PARTITION, 0, encode(*(record(f"c{i}") for i in range(5))), Message())
    await agg.flush(PARTITION)
    # Versions of ~106 bytes: an entry closes once it reaches 250 bytes, so at most one over.
    assert [len(decode_entry(tables.versions[k])["v"]) for k in (b"2|0", b"2|1")] == [3, 2]
    later = T0 + 7 * DAY_MS + 1
    agg.apply(PARTITION, 1, encode(record("c0", start_ms=later, customer="B")), Message())
    await agg.flush(PARTITION)
    assert sorted(tables.versions) == [b"2|2"]
    assert orjson.loads(tables.progress[b"2"])["f"] == 2
    assert ids.get_many(PARTITION, [("A", "c0"), ("B", "c0")])[0] is None
    assert ids.get_many(PARTITION, [("A", "c0"), ("B", "c0")])[1] is not None


async def test_a_restart_reads_from_the_newest_delivered_flush_and_skips_what_the_tables_hold() -> None:
    tables = Tables()
    first = aggregator(tables)
    first.apply(PARTITION, 0, encode(record("a")), Message())
    await first.flush(PARTITION)
    first.apply(PARTITION, 1, encode(record("b")), Message())
    await first.flush(PARTITION)  # records that offset 0 is delivered
    first.apply(PARTITION, 2, encode(record("c")), Message())  # never flushed: the crash
    second = aggregator(tables)
    assert second.resume_offset(PARTITION) == 1
    old = Message()
    assert second.apply(PARTITION, 0, encode(record("z")), old) == [] and old.acked  # in the tables
    for offset, cdr_id in enumerate("bc", 1):
        second.apply(PARTITION, offset, encode(record(cdr_id)), Message())
    await second.flush(PARTITION)
    assert attempts(tables) == {("m", "A"): 3, ("h", "A"): 3, ("d", "A"): 3}


async def test_a_message_past_the_next_one_is_refused_and_a_repeat_is_skipped() -> None:
    """Applying a later message first would make every bucket it touches skip the ones before
    it as replays (their offsets are lower): the consumer must read them first."""
    tables = Tables()
    agg = aggregator(tables)
    agg.apply(PARTITION, 0, encode(record("a")), Message())
    with pytest.raises(aggregator_module.OutOfOrder) as gap:
        agg.apply(PARTITION, 2, encode(record("c")), Message())
    assert (gap.value.expected, gap.value.offset) == (1, 2)
    repeat = Message()
    assert agg.apply(PARTITION, 0, encode(record("a")), repeat) == [] and not repeat.acked  # held, unflushed
    agg.apply(PARTITION, 1, encode(record("b")), Message())
    agg.skip_to(PARTITION, 5)  # 2-4 deleted from the topic before they were read
    agg.apply(PARTITION, 5, encode(record("f")), Message())
    await agg.flush(PARTITION)
    assert attempts(tables) == {("m", "A"): 3, ("h", "A"): 3, ("d", "A"): 3}


class Consumer:
    """What ``streams.agents.close_gap`` asks of Faust's consumer."""

    def __init__(self, earliest: int) -> None:
        self.earliest = earliest
        self.sought: list[dict[str, int]] = []

    def assignment(self) -> set[str]:
        return {"tp"}

    async def earliest_offsets(self, *tps: str) -> dict[str, int]:
        return {tp: self.earliest for tp in tps}

    async def seek_wait(self, partitions: dict[str, int]) -> None:
        self.sought.append(dict(partitions))


@dataclass
class App:
    consumer: Consumer


async def test_a_skipped_message_makes_the_agent_read_the_partition_again_not_stop() -> None:
    """A gap the broker did not make (Faust dropped a message around a rebalance): the
    partition is sought back to the message expected, and what arrives past it meanwhile
    is dropped unacknowledged; once read again in order, every CDR counts once."""
    tables, app = Tables(), App(Consumer(earliest=0))
    agg, rewinds = aggregator(tables), {}
    agg.apply(PARTITION, 0, encode(record("a")), Message())
    for offset in (2, 3):  # 1 never handed over; 2 and 3 fetched before the seek
        early = Message()
        with pytest.raises(aggregator_module.OutOfOrder) as gap:
            agg.apply(PARTITION, offset, encode(record("bc"[offset - 2])), early)
        assert not await agents.close_gap(app, agg, agg.counters, "tp", gap.value, rewinds)  # type: ignore[arg-type]
        assert not early.acked
    assert app.consumer.sought == [{"tp": 1}, {"tp": 1}]
    for offset, cdr_id in enumerate("xbc", 1):
        agg.apply(PARTITION, offset, encode(record(cdr_id)), Message())
    await agg.flush(PARTITION)
    assert attempts(tables) == {("m", "A"): 4, ("h", "A"): 4, ("d", "A"): 4}
    assert agg.counters["internal_messages_deleted"] == 0


async def test_messages_deleted_before_they_were_applied_are_counted_and_skipped() -> None:
    tables, app = Tables(), App(Consumer(earliest=5))
    agg = aggregator(tables)
    agg.apply(PARTITION, 0, encode(record("a")), Message())
    with pytest.raises(aggregator_module.OutOfOrder) as gap:
        agg.apply(PARTITION, 5, encode(record("f")), Message())
    assert await agents.close_gap(app, agg, agg.counters, "tp", gap.value, {})  # type: ignore[arg-type]
    agg.apply(PARTITION, 5, encode(record("f")), Message())
    await agg.flush(PARTITION)
    assert app.consumer.sought == []
    assert agg.counters["internal_messages_deleted"] == 4  # offsets 1-4
    assert attempts(tables) == {("m", "A"): 2, ("h", "A"): 2, ("d", "A"): 2}


def test_a_restored_partition_reports_as_applied_only_what_its_replay_has_reached() -> None:
    """The lag report's measure: a worker replaying after a crash is not caught up yet."""
    progress = {"t": T0, "o": 7, "d": 3, "f": 0, "n": 0}  # flushed at 7, delivered up to 3
    agg = aggregator(Tables(progress={b"2": orjson.dumps(progress)}), assigned={PARTITION})
    assert agg.applied_offsets() == {PARTITION: 4}
    for offset in range(4, 9):
        agg.apply(PARTITION, offset, encode(record(f"r{offset}")), Message())
        assert agg.applied_offsets() == {PARTITION: offset + 1}


def test_progress_written_before_delivered_offsets_were_recorded_resumes_after_its_applied_offset() -> None:
    tables = Tables(progress={b"2": orjson.dumps({"t": T0, "o": 7, "f": 0, "n": 0})})
    assert aggregator(tables).resume_offset(PARTITION) == 8
    assert aggregator(Tables()).resume_offset(PARTITION) == 0
