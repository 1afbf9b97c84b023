"""The commit sequence: how one internal-topic message becomes counted state, exactly once.

For each message of a partition, in order:
1. **Apply** it in memory through the partition's ledger (``breakout.ledger``): versions
   looked up in the id store (``streams.idstore``), revisions and duplicates decided,
   offset guard per bucket, stream time, too-late decision.
2. **Stage** every changed customer-bucket for Redis (``streams.mirror``): the mirror
   writes it within about a second, so Redis never waits for the tables.
3. **Hold** the message unacknowledged.
4. **Flush** the partition to its tables every ``table_flush_seconds``
   (``BREAKOUT_TABLE_FLUSH_SECONDS``), or sooner once the held messages reach
   ``TABLE_FLUSH_BYTES``: changed buckets (each carrying the offset it absorbed), the
   versions counted (appended to the ``versions`` table in entries of at most
   ``VERSIONS_ENTRY_BYTES``; the oldest entries dropped once past the dedup window) and
   progress (stream time, offset, the live entries), so a busy bucket is written once per
   flush. The cadence is by time, not by message count, because a bucket write costs the
   same for one CDR as for thousands: counting messages would make a live trickle of
   small messages write every bucket several times a second.
   Partitions take turns, so partitions filling at one pace do not all flush, deliver and
   index on the same stretch of the loop: after the last flush of any partition began, a
   flush due by bytes waits for its share of the time this partition takes to fill up to
   the bound (unless its held messages reach twice the bound), one due by age for its
   share of the period; at least ``FLUSH_SPACING_SECONDS`` either way. A flush runs in an
   event of its partition (Faust's store and changelog take the partition from it), so a
   partition no message reaches would keep its last messages unflushed and uncommitted,
   for a restart to read again: once its flush is overdue and it has been quiet
   ``NUDGE_SECONDS``, the worker sends it an empty message of its own (``to_nudge``),
   which applies nothing and brings the flush (and a period later another, whose flush
   records the first one's delivery, so a restart reads none of it again).
5. **Deliver**: wait until the broker has every changelog message of those writes, and
   of every write before them (``streams.tables.ChangelogSends``), but not of the flushes
   made since. Faust flushes its producer before it commits, but that flush gives up when
   its buffer does not move for 0.1 s, so without this an offset could be committed whose
   state was never in the changelog, and a crash would lose counted CDRs.
6. **Index** the versions of the flush in the id store, now that the table holds them
   for good: the index never knows a version a crash could take from the table. It is
   written in parts, pausing between them so that it takes at most ``INDEX_SHARE`` of
   the loop, the mark moving with the last.
7. **Acknowledge** the held messages the flush covers; Faust commits their offsets.

Where a partition is read from after a crash or a rebalance is the tables' to say, not
the committed offset's: the ``progress`` entry names the newest offset whose flush was
delivered (written with the next flush), and the worker seeks each partition it is
assigned to the message after it (``resume_offset``). Faust's committed offset cannot be
trusted for that: it acknowledges the messages it skips during a rebalance, and commits
the first run of acknowledged offsets even past held ones, and a partition with no
committed offset yet is not moved at all. Messages are applied strictly in offset order
from there: one below is skipped (its state is in the tables or applied already), one
past the next expected raises ``OutOfOrder`` rather than count later messages without the
ones between. The replay after a crash or a rebalance counts nothing twice: each bucket's
``applied`` offset and the versions (which name the offset that counted them) make sure
of it, and the ledger's offset keeps refused CDRs from being dead-lettered twice.

The tables (``streams.tables.Tables``) and the mirror are reached through small
interfaces, so this sequence is unit-tested with dictionaries and a recording mirror.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

import orjson
import zstandard

from breakout.buckets import Retention
from breakout.ledger import BucketKey, CustomerBucket, PartitionLedger, RowId, VersionKey, json_bytes
from breakout.normalize import Record
from streams.idstore import IdIndex, Mark, MemoryIdIndex

log = logging.getLogger(__name__)

# Held messages, and the versions they counted, are kept in memory until their flush: this
# bounds them (a backlog's internal messages are up to a few MB each, and each CDR's
# version costs about as much memory as its record's share of the message).
TABLE_FLUSH_BYTES = 8 << 20
# Partitions fill at the same pace, so they would all reach the bound together and flush,
# deliver and index on one stretch of the loop: a flush by bytes waits for its share of
# the time it took to fill, and at least this long, after the last one began, unless its
# messages reach twice the bound. Partitions then take turns.
FLUSH_SPACING_SECONDS = 0.5
# How long a partition whose table flush is overdue must have had no message before the
# worker sends it an empty one, and then between two such messages.
NUDGE_SECONDS = 2.0
# An internal message that carries no records: applied, it only moves the offset.
NUDGE = b"[]"
# While a planned stop finishes (``finishing``), between two nudges of a partition: its flush
# is delivered within this on a broker that is there, and a nudge sent before the delivery
# only brings one more flush.
FINISH_NUDGE_SECONDS = 0.2
# Versions written to the id store in one go (10-30 ms, holding the GIL); the loop runs
# between parts.
INDEX_PART = 5_000
# The most of the loop's time a flush's indexing takes while it runs: after each part it
# pauses for the rest. A flush under live traffic holds tens of thousands of versions, and
# written back to back (the loop running only one turn between parts) they halved the
# agent's pace for half a second or more, every few seconds: a busy worker fell behind at
# each flush and took seconds to catch up. Spread over a few seconds instead, the agent
# keeps most of its pace throughout; the versions are looked up in the ledger meanwhile.
# At 5,000 versions per part and this share, a partition indexes about 20,000 a second,
# several times what a backlog brings it.
INDEX_SHARE = 0.1
# A part that took unusually long (a write stalled on the disk) pauses at most this long.
INDEX_PAUSE_SECONDS = 1.0
CACHE_LIMIT = 200_000
# A ``versions`` entry holds at most this plus one version (~11 kB at worst) before it is
# compressed, and zstd makes nothing more than 1/256 and a few bytes larger: at least two
# fit in one of the producer's batches (``streams.app.PRODUCER_BATCH_BYTES``) whatever the
# CDRs hold, and the producer sends one batch per partition in each round trip to the broker.
VERSIONS_ENTRY_BYTES = 448 << 10
# ``versions`` entries are stored zstd-compressed, a sixth to a seventh of their JSON: they
# were three quarters of a flush's changelog bytes, so this is most of what the broker
# stores and a recovery reads (docs/benchmarks.md, "The versions compressed"). Level 1 compresses some
# 600 MB/s, a few ms of loop per flush.
_COMPRESSOR = zstandard.ZstdCompressor(level=1)
_DECOMPRESSOR = zstandard.ZstdDecompressor()

Table = MutableMapping[bytes, bytes]


class StateTables(Protocol):
    """The three tables of ``streams.tables``: bucket rows, versions counted, progress."""

    @property
    def rows(self) -> Table: ...
    @property
    def versions(self) -> Table: ...
    @property
    def progress(self) -> Table: ...


class Stager(Protocol):
    """The mirror's staging side."""

    def stage(self, key: BucketKey, bucket: CustomerBucket | None, rows: set[RowId] | None) -> None: ...

    def forget(self, partition: int) -> None: ...


# Called as a flush's table writes end: what it returns is done once the broker has every
# changelog message sent until then (``streams.tables.ChangelogSends.delivered``).
Deliver = Callable[[], Awaitable[None]]


async def _nothing_to_deliver() -> None:
    """For tables that write synchronously (tests): nothing is ever in flight."""


class Acknowledgeable(Protocol):
    def ack(self) -> bool: ...


class OutOfOrder(Exception):
    """A message past the next one expected: applying it would lose the ones between."""

    def __init__(self, partition: int, expected: int, offset: int) -> None:
        super().__init__(f"partition {partition}: message {offset} arrived, {expected} expected next")
        self.partition = partition
        self.expected = expected
        self.offset = offset


@dataclass(frozen=True)
class IndexWork:
    """What one flush gives the id store once it is delivered (step 6)."""

    flush: int
    versions: dict[VersionKey, bytes]
    expired: dict[VersionKey, bytes]
    mark: Mark


@dataclass
class PartitionState:
    """One assigned partition's working set: what is applied but not yet in the tables."""

    ledger: PartitionLedger
    resumed_at: int = 0  # the first offset read after the restore: those below are in the tables
    next_offset: int = 0  # the next message to apply
    delivered: int = -1  # the newest offset whose flush the broker has
    first_entry: int = 0  # the oldest ``versions`` entry kept
    next_entry: int = 0
    last_entry: tuple[int, int] = (-1, 0)  # (offset, stream time) the newest entry covers
    first_entry_ms: int | None = None  # stream time of the oldest entry, once read
    cache: dict[BucketKey, CustomerBucket] = field(default_factory=dict)
    dirty: set[BucketKey] = field(default_factory=set)
    deleted: set[BucketKey] = field(default_factory=set)
    versions: dict[VersionKey, bytes] = field(default_factory=dict)
    flushes: int = 0
    indexing: list[IndexWork] = field(default_factory=list)
    indexing_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    held: list[Acknowledgeable] = field(default_factory=list)
    held_bytes: int = 0
    flushed_at: float = field(default_factory=time.monotonic)
    applied_at: float = field(default_factory=time.monotonic)  # when the last message was applied
    nudged_at: float = float("-inf")
    counted_offset: int = -1  # the newest message applied that carried CDRs
    recorded: int = -1  # the delivered offset the tables' progress names: a restart reads on from it


class Aggregator:
    """The sequence above, for every partition assigned to this worker."""

    def __init__(
        self,
        tables: StateTables,
        mirror: Stager,
        retention: Retention,
        dedup_window_ms: int,
        counters: Counter[str],
        assigned: Callable[[], set[int] | None] = lambda: None,
        deliver: Deliver = _nothing_to_deliver,
        ids: IdIndex | None = None,
        short_call_ms: int = 6_000,
        *,
        table_flush_seconds: float,
    ) -> None:
        self.tables = tables
        self.table_flush_seconds = table_flush_seconds
        self.short_call_ms = short_call_ms
        self.ids: IdIndex = MemoryIdIndex() if ids is None else ids
        self.mirror = mirror
        self.retention = retention
        self.dedup_window_ms = dedup_window_ms
        self.counters = counters
        # The partitions assigned here and recovered, or None while a rebalance is under way.
        self.assigned = assigned
        self.deliver = deliver
        self.partitions: dict[int, PartitionState] = {}
        self.flush_began = float("-inf")  # when the last flush of any partition began
        # A planned stop is under way: every message brings its partition's flush, and
        # ``to_nudge`` names every partition whose tables do not yet name its CDRs delivered,
        # so that the worker can stop once they all do (``finished``) and the next one reads
        # none of them again. Otherwise a stop leaves up to ``table_flush_seconds`` of applied
        # messages for the next worker to read again (counted once all the same).
        self.finishing = False

    # Steps 1-3 -----------------------------------------------------------------------------

    def apply(
        self, partition: int, offset: int, value: bytes, message: Acknowledgeable
    ) -> list[tuple[str, Record]]:
        """Apply, stage and hold one message; return the records refused, with the reason.

        A message below the next one expected is skipped, and acknowledged if the tables
        hold it; one past it raises ``OutOfOrder``.
        """
        state = self.state(partition)
        if offset != state.next_offset:
            if offset > state.next_offset:
                raise OutOfOrder(partition, state.next_offset, offset)
            if offset < state.resumed_at:
                message.ack()
            return []
        state.next_offset = offset + 1
        state.applied_at = time.monotonic()
        if value != NUDGE:
            state.counted_offset = offset
        cache = state.cache

        def read(key: BucketKey) -> CustomerBucket | None:
            bucket = cache.get(key)
            if bucket is None:
                raw = self.tables.rows.get(key.encode())
                bucket = CustomerBucket.decode(raw) if raw is not None else None
            return bucket

        # Step 1.
        # Records as positional arrays; one written by an earlier version lacks trailing
        # fields, which the ledger fills in (``breakout.ledger``).
        records = orjson.loads(value)
        ids = self.ids

        def lookup(keys: list[VersionKey]) -> list[bytes | None]:
            return ids.get_many(partition, keys)

        outcome = state.ledger.apply(offset, records, read, lookup)
        # Step 2. Three customer-buckets per CDR under live traffic: set operations in bulk.
        updates, changed_rows, stage = outcome.updates, outcome.changed_rows, self.mirror.stage
        cache.update(updates)
        state.dirty.update(updates)
        if state.deleted:
            state.deleted.difference_update(updates)
        for key, bucket in updates.items():
            stage(key, bucket, changed_rows[key])
        for key in outcome.deletions:
            cache.pop(key, None)
            state.dirty.discard(key)
            state.deleted.add(key)
            self.mirror.stage(key, None, None)
        state.versions.update(outcome.versions)
        self.counters["duplicates"] += outcome.duplicates
        self.counters["replayed"] += outcome.replayed
        self.counters["revised"] += outcome.revised
        for reason, _ in outcome.refused:
            self.counters[f"rejected:{reason}"] += 1
        # Step 3.
        state.held.append(message)
        state.held_bytes += len(value)
        return outcome.refused

    # Steps 4-6 -----------------------------------------------------------------------------

    def due(self, partition: int) -> bool:
        """Whether to flush the partition now: its held messages reached the byte bound, or
        its last flush is ``table_flush_seconds`` old, in turn with the other partitions.

        Partitions assigned together come of age together, and under a steady stream they
        fill together too (at 16,000 CDR/s each holds 8 MB about every 17 s): their flushes,
        changelog deliveries and indexing would all share one stretch of the loop, and every
        CDR arriving then waits behind them. Back to back, four such flushes held the loop for
        one to two seconds, and CDRs sent then showed up as much as 7 s late against about
        1 s otherwise (``bench/freshness.py`` at 16,000 CDR/s). So a flush waits for its
        share of the period after the last flush of any partition began: by age, the share
        of ``table_flush_seconds``; by bytes, a share of the time this partition takes to
        fill up to the bound. Once spread, each partition's next flush falls due a period
        (or a filling) after its own, and they stay spread. While a planned stop finishes,
        every message brings a flush.
        """
        state, now = self.partitions[partition], time.monotonic()
        if (self.finishing and state.held) or state.held_bytes >= 2 * TABLE_FLUSH_BYTES:
            return True
        since_last, since_own = now - self.flush_began, now - state.flushed_at
        period = self.table_flush_seconds
        if state.held_bytes >= TABLE_FLUSH_BYTES:
            # The time to fill up to the bound at this partition's pace, not counting the wait
            # past it; a share of one more than the partitions leaves a turn's slack, so one
            # late flush does not push the others to twice the bound and back together.
            filling = min(since_own * TABLE_FLUSH_BYTES / state.held_bytes, period)
            return since_last >= max(FLUSH_SPACING_SECONDS, filling / (len(self.partitions) + 1))
        share = max(FLUSH_SPACING_SECONDS, period / len(self.partitions))
        return since_own >= period and since_last >= share

    def to_nudge(self) -> list[int]:
        """The partitions to send an empty message (``NUDGE``): each has applied CDRs that a
        restart would read again, its flush is overdue, and it has had no message for
        ``NUDGE_SECONDS``, not even the last such one (a flush it brought may have waited
        its turn). Noted as nudged now.

        A restart reads on from the offset the tables' progress names as delivered, and a
        flush names the deliveries finished before it: the flush that writes a quiet
        partition's CDRs is named by the next one, so a quiet partition is nudged twice,
        a period apart, and then no more (a nudge read again counts nothing). While a
        planned stop finishes, no partition waits to be quiet or overdue."""
        now = time.monotonic()
        if self.finishing:
            nudge = [
                partition
                for partition, state in self.partitions.items()
                if state.counted_offset > state.recorded and state.nudged_at <= now - FINISH_NUDGE_SECONDS
            ]
        else:
            quiet = now - NUDGE_SECONDS
            nudge = [
                partition
                for partition, state in self.partitions.items()
                if state.counted_offset > state.recorded
                and now - state.flushed_at >= self.table_flush_seconds
                and state.applied_at <= quiet
                and state.nudged_at <= quiet
            ]
        for partition in nudge:
            self.partitions[partition].nudged_at = now
        return nudge

    @property
    def finished(self) -> bool:
        """Whether every partition's tables name all the CDRs it counted as delivered, and
        its id store holds them: a worker restarting now reads none of them again."""
        return all(
            state.counted_offset <= state.recorded and not state.indexing
            for state in self.partitions.values()
        )

    def flush(self, partition: int) -> Coroutine[Any, Any, None]:
        """Write the partition's pending state to its tables (step 4); return steps 5 and 6.

        Must run while the current Faust event is one of this partition: the RocksDB store
        and the changelog take the partition from it. The returned coroutine delivers and
        acknowledges; the agent runs it beside its loop, so waiting for the broker never
        holds up the next message. A later delivery covers every earlier write too, so the
        order in which such coroutines finish does not matter.
        """
        state = self.partitions[partition]
        self.flush_began = time.monotonic()
        rows = self.tables.rows
        ledger = state.ledger
        # Step 4.
        for key in state.dirty:
            rows[key.encode()] = state.cache[key].encode()
        for key in state.deleted:
            rows.pop(key.encode(), None)
        versions, state.versions = state.versions, {}
        self._append_versions(partition, state, list(versions.values()))
        expired = self._expire_versions(partition, state)
        state.recorded = state.delivered
        self.tables.progress[str(partition).encode()] = orjson.dumps(
            {
                "t": ledger.stream_ms,
                "o": ledger.offset,
                "d": state.delivered,
                "f": state.first_entry,
                "n": state.next_entry,
            }
        )
        if len(state.cache) > CACHE_LIMIT:
            state.cache.clear()  # everything in it is in the table now; hot buckets come back
        state.dirty.clear()
        state.deleted.clear()
        state.flushed_at = time.monotonic()
        state.flushes += 1
        state.indexing.append(
            IndexWork(state.flushes, versions, expired, Mark(state.next_entry, *state.last_entry))
        )
        held, state.held, state.held_bytes = state.held, [], 0
        delivered = self.deliver()  # what the changelog has been sent so far, this flush's last
        return self._acknowledge(partition, state, state.flushes, ledger.offset, held, delivered)

    def _append_versions(self, partition: int, state: PartitionState, versions: list[bytes]) -> None:
        """Write ``versions`` to the table as new entries, in order, none much over
        ``VERSIONS_ENTRY_BYTES``: each becomes one changelog message."""
        ledger = state.ledger
        header = b'{"t":%d,"o":%d,"v":[' % (ledger.stream_ms, ledger.offset)
        start = size = 0
        for end, value in enumerate(versions, 1):
            size += len(value) + 1
            if size >= VERSIONS_ENTRY_BYTES or end == len(versions):
                entry = _COMPRESSOR.compress(header + b",".join(versions[start:end]) + b"]}")
                self.tables.versions[_entry_key(partition, state.next_entry)] = entry
                state.next_entry += 1
                state.last_entry = (ledger.offset, ledger.stream_ms)
                start, size = end, 0

    def _expire_versions(self, partition: int, state: PartitionState) -> dict[VersionKey, bytes]:
        """Drop the entries counted before the dedup window; return their versions, for the
        index to forget those it still holds as they are."""
        expired: dict[VersionKey, bytes] = {}
        table, horizon_ms = self.tables.versions, state.ledger.horizon_ms
        while state.first_entry < state.next_entry:
            if state.first_entry_ms is not None and state.first_entry_ms >= horizon_ms:
                break
            key = _entry_key(partition, state.first_entry)
            raw = table.get(key)
            document: dict[str, Any] = decode_entry(raw) if raw is not None else {"t": -1, "v": []}
            state.first_entry_ms = document["t"]
            if document["t"] >= horizon_ms:
                break
            for version in document["v"]:
                expired[(version[0], version[1])] = json_bytes(version)
            table.pop(key, None)
            state.first_entry += 1
            state.first_entry_ms = None
        return expired

    async def _acknowledge(
        self,
        partition: int,
        state: PartitionState,
        flush: int,
        offset: int,
        held: list[Acknowledgeable],
        delivered: Awaitable[None],
    ) -> None:
        # Step 5.
        await delivered
        state.delivered = max(state.delivered, offset)
        # Step 6. Flushes are indexed in order: a later delivery covers the earlier flushes
        # too, so whichever delivery finishes first indexes every flush up to its own; the
        # lock keeps another delivery from indexing a later flush between the parts of one.
        async with state.indexing_lock:
            while state.indexing and state.indexing[0].flush <= flush:
                await self._index(partition, state, state.indexing[0])
                state.indexing.pop(0)
        # Step 7.
        for message in held:
            message.ack()

    async def _index(self, partition: int, state: PartitionState, work: IndexWork) -> None:
        """Write one flush's versions to the id store in parts of ``INDEX_PART`` ids, pausing
        between them so that indexing takes at most ``INDEX_SHARE`` of the loop: a busy
        partition's flush holds tens of thousands, whose writes in one go (or back to back)
        would hold every message (and the mirror) up. While a planned stop finishes, parts
        follow each other at once. The mark moves with the last part, so a crash part-way
        re-indexes the flush from the table; lookups meanwhile find the versions not yet
        written in the ledger. A partition revoked (or restored anew) part-way stops here:
        its next owner indexes from the table.
        """
        none: dict[VersionKey, bytes] = {}
        parts = [(none, part) for part in _parts(work.expired)] + [
            (part, none) for part in _parts(work.versions)
        ]
        if not parts:
            parts = [(none, none)]  # nothing to store: the mark still moves
        for number, (versions, expired) in enumerate(parts, 1):
            if self.partitions.get(partition) is not state:
                return
            last = number == len(parts)
            began = time.monotonic()
            self.ids.write(partition, versions, expired, work.mark if last else None)
            state.ledger.stored(versions)
            if not last:
                took = time.monotonic() - began
                pause = min(took * (1 / INDEX_SHARE - 1), INDEX_PAUSE_SECONDS)
                await asyncio.sleep(0 if self.finishing else pause)

    # Assignment and the mirror's reads -------------------------------------------------------

    def state(self, partition: int) -> PartitionState:
        """The partition's state, restored from the tables on first use after assignment."""
        state = self.partitions.get(partition)
        if state is None:
            state = self.partitions[partition] = self._restore(partition)
        return state

    def resume_offset(self, partition: int) -> int:
        """The offset to read ``partition`` from once assigned: the one after the newest
        offset whose state the tables hold for good (``progress`` written before that was
        recorded: its applied offset, as the committed offset was then)."""
        return _resume_of(self._progress(partition))

    def skip_to(self, partition: int, offset: int) -> None:
        """Expect ``offset`` next: the messages before it are gone from the topic."""
        self.state(partition).next_offset = offset

    def forget(self, partition: int) -> None:
        """On revocation: drop unflushed work (it was not acknowledged, the next owner replays it),
        and the mirror's changes staged from it."""
        self.partitions.pop(partition, None)
        self.mirror.forget(partition)

    def owned(self) -> set[int]:
        """Assigned partitions whose tables are recovered (none while a rebalance is under way)."""
        return self.assigned() or set()

    def bucket_keys(self, partitions: set[int]) -> list[BucketKey]:
        """Every customer-bucket of ``partitions``: in the tables, or applied and not flushed yet."""
        prefixes = tuple(f"{p}|".encode() for p in partitions)
        keys = {BucketKey.decode(raw) for raw in self.tables.rows if raw.startswith(prefixes)}
        for partition in partitions:
            state = self.partitions.get(partition)
            if state is not None:
                keys |= state.dirty
                keys -= state.deleted
        return sorted(keys)

    def value(self, key: BucketKey) -> CustomerBucket | None:
        """The bucket as applied so far. Reads only: a partition revoked meanwhile gets no state."""
        state = self.partitions.get(key.partition)
        if state is not None:
            if key in state.deleted:
                return None
            if (bucket := state.cache.get(key)) is not None:
                return bucket
        raw = self.tables.rows.get(key.encode())
        return CustomerBucket.decode(raw) if raw is not None else None

    def applied_offsets(self) -> dict[int, int]:
        """Per owned partition, the next offset to apply: how far the agent has got. Not the
        ledger's offset: restored from the tables, that is the newest one the last flush
        applied, which the replay after a crash or a rebalance has yet to reach."""
        return {partition: self.state(partition).next_offset for partition in self.owned()}

    def watermark(self, partition: int) -> tuple[int, int]:
        ledger = self.state(partition).ledger
        return ledger.stream_ms, ledger.offset

    def _restore(self, partition: int) -> PartitionState:
        prefix = f"{partition}|".encode()
        ledger = PartitionLedger(partition, self.retention, self.dedup_window_ms, self.short_call_ms)
        progress = self._progress(partition)
        keys = [BucketKey.decode(raw) for raw in self.tables.rows if raw.startswith(prefix)]
        ledger.restore(progress.get("t", 0), progress.get("o", -1), keys)
        resume = _resume_of(progress)
        state = PartitionState(
            ledger,
            resumed_at=resume,
            next_offset=resume,
            delivered=resume - 1,
            recorded=resume - 1,
            first_entry=progress.get("f", 0),
            next_entry=progress.get("n", 0),
        )
        indexed = self._catch_up_index(partition, state)
        log.info(
            "partition %d restored: %d customer-buckets, %d version entries, %d indexed now, "
            "reading from offset %d",
            partition,
            len(keys),
            state.next_entry - state.first_entry,
            indexed,
            resume,
        )
        return state

    def _progress(self, partition: int) -> dict[str, Any]:
        raw = self.tables.progress.get(str(partition).encode())
        return orjson.loads(raw) if raw else {}

    def _entry(self, partition: int, entry: int) -> dict[str, Any] | None:
        raw = self.tables.versions.get(_entry_key(partition, entry))
        return None if raw is None else decode_entry(raw)

    def _catch_up_index(self, partition: int, state: PartitionState) -> int:
        """Index the ``versions`` entries the id store lacks; return how many.

        After an ordinary restart its mark is the table's last entry: nothing to do. A mark
        past the table's end, or naming an entry the table holds otherwise, means the index
        outlived its table (state deleted, broker emptied): it is rebuilt whole.
        """
        first, end = state.first_entry, state.next_entry
        if end > first:
            newest = self._entry(partition, end - 1)
            if newest is not None:
                state.last_entry = (newest["o"], newest["t"])
        mark = self.ids.mark(partition)
        start = first
        if mark is not None and mark.next_seq <= end:
            start = max(first, mark.next_seq)
            if mark.next_seq - 1 >= first:
                entry = self._entry(partition, mark.next_seq - 1)
                if entry is None or (entry["o"], entry["t"]) != (mark.offset, mark.stream_ms):
                    start = first
        if start == first:
            self.ids.reset(partition)
        for number in range(start, end):
            entry = self._entry(partition, number)
            if entry is None:
                continue
            versions = {(v[0], v[1]): json_bytes(v) for v in entry["v"]}
            self.ids.write(partition, versions, {}, Mark(number + 1, entry["o"], entry["t"]))
        return end - start


def _resume_of(progress: dict[str, Any]) -> int:
    """The offset after the newest one ``progress`` records as delivered (``resume_offset``)."""
    return int(progress.get("d", progress.get("o", -1))) + 1


def _parts(versions: dict[VersionKey, bytes]) -> list[dict[VersionKey, bytes]]:
    """``versions`` in dictionaries of at most ``INDEX_PART``, in order.

    Taken from one iterator over the items, not from a list of them: a busy partition's
    flush holds tens of thousands, and a list would hold a tuple of each pair, for the
    collector to scan, while the parts are written. From the iterator they cost half.
    """
    items = iter(versions.items())
    return [dict(islice(items, INDEX_PART)) for _ in range(0, len(versions), INDEX_PART)]


def decode_entry(raw: bytes) -> dict[str, Any]:
    """A ``versions`` entry as written: zstd-compressed JSON, or the plain JSON of a worker
    from before the compression (an upgraded worker reads its predecessor's table)."""
    document: dict[str, Any] = orjson.loads(raw if raw[:1] == b"{" else _DECOMPRESSOR.decompress(raw))
    return document


def _entry_key(partition: int, entry: int) -> bytes:
    return f"{partition}|{entry}".encode()
