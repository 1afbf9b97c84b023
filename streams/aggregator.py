"""The commit sequence: how one internal-topic message becomes counted state, exactly once.

For each message of a partition, in order:
1. **Apply** it in memory through the partition's ledger (``breakout.ledger``): dedup by
   id, offset guard per bucket, stream time, too-late decision.
2. **Stage** every changed customer-bucket for Redis (``streams.mirror``): the mirror
   writes it within about a second, so Redis never waits for the tables.
3. **Hold** the message unacknowledged.
4. **Flush** the partition to its tables every ``TABLE_FLUSH_SECONDS``, or sooner once
   the held messages reach ``TABLE_FLUSH_BYTES``: changed buckets (each carrying the offset
   it absorbed), dedup batches and progress (stream time, offset), so a busy bucket is
   written once per flush. The cadence is by time, not by message count, because a
   bucket write costs the same for one CDR as for thousands: counting messages would make
   a live trickle of small messages write every bucket several times a second.
5. **Deliver**: wait until the broker has every changelog message of those writes. Faust
   flushes its producer before it commits, but that flush gives up when its buffer does
   not move for 0.1 s, so without this an offset could be committed whose state was never
   in the changelog, and a crash would lose counted CDRs.
6. **Acknowledge** the held messages the flush covers; Faust commits their offsets.
A crash anywhere before step 6 replays the messages since the last commit; each bucket's
``applied`` offset and the ids make the replay count nothing twice, and the ledger's
offset keeps too-late CDRs from being dead-lettered twice.

The tables (``streams.tables.Tables``) and the mirror are reached through small
interfaces, so this sequence is unit-tested with dictionaries and a recording mirror.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from breakout.buckets import Retention
from breakout.ledger import BucketKey, CustomerBucket, PartitionLedger, RowId
from breakout.normalize import Record

log = logging.getLogger(__name__)

TABLE_FLUSH_SECONDS = 30.0
# Held messages are kept in memory until their flush: this bounds them (a backlog's
# internal messages are up to a few MB each).
TABLE_FLUSH_BYTES = 64 << 20
CACHE_LIMIT = 200_000
LEGACY_RECORD_FIELDS = 11  # records written by versions before ``Record.origin``

Table = MutableMapping[bytes, bytes]


class StateTables(Protocol):
    """The three tables of ``streams.tables``: bucket rows, dedup batches, progress."""

    @property
    def rows(self) -> Table: ...
    @property
    def seen(self) -> Table: ...
    @property
    def progress(self) -> Table: ...


class Stager(Protocol):
    """The mirror's staging side."""

    def stage(self, key: BucketKey, bucket: CustomerBucket | None, rows: set[RowId] | None) -> None: ...


Deliver = Callable[[], Awaitable[None]]


async def _nothing_to_deliver() -> None:
    """For tables that write synchronously (tests): nothing is ever in flight."""


class Acknowledgeable(Protocol):
    def ack(self) -> bool: ...


@dataclass
class PartitionState:
    """One assigned partition's working set: what is applied but not yet in the tables."""

    ledger: PartitionLedger
    cache: dict[BucketKey, CustomerBucket] = field(default_factory=dict)
    dirty: set[BucketKey] = field(default_factory=set)
    deleted: set[BucketKey] = field(default_factory=set)
    seen: dict[int, bytes] = field(default_factory=dict)
    forgotten: list[int] = field(default_factory=list)
    held: list[Acknowledgeable] = field(default_factory=list)
    held_bytes: int = 0
    flushed_at: float = field(default_factory=time.monotonic)


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
    ) -> None:
        self.tables = tables
        self.mirror = mirror
        self.retention = retention
        self.dedup_window_ms = dedup_window_ms
        self.counters = counters
        # The partitions assigned here and recovered, or None while a rebalance is under way.
        self.assigned = assigned
        self.deliver = deliver
        self.partitions: dict[int, PartitionState] = {}

    # Steps 1-3 -----------------------------------------------------------------------------

    def apply(self, partition: int, offset: int, value: bytes, message: Acknowledgeable) -> list[Record]:
        """Apply, stage and hold one message; return the records too late to count."""
        state = self.state(partition)
        cache = state.cache

        def read(key: BucketKey) -> CustomerBucket | None:
            bucket = cache.get(key)
            if bucket is None:
                raw = self.tables.rows.get(key.encode())
                bucket = CustomerBucket.decode(raw) if raw is not None else None
            return bucket

        # Step 1.
        records = orjson.loads(value)  # records as positional arrays
        if records and len(records[0]) == LEGACY_RECORD_FIELDS:
            records = [[*record, None] for record in records]
        outcome = state.ledger.apply(offset, records, read)
        # Step 2.
        for key, bucket in outcome.updates.items():
            cache[key] = bucket
            state.dirty.add(key)
            state.deleted.discard(key)
            self.mirror.stage(key, bucket, outcome.changed_rows[key])
        for key in outcome.deletions:
            cache.pop(key, None)
            state.dirty.discard(key)
            state.deleted.add(key)
            self.mirror.stage(key, None, None)
        if outcome.counted_ids:
            state.seen[offset] = orjson.dumps({"t": state.ledger.stream_ms, "ids": outcome.counted_ids})
        state.forgotten.extend(outcome.forgotten_offsets)
        self.counters["duplicates"] += outcome.duplicates
        self.counters["replayed"] += outcome.replayed
        self.counters["rejected:too_late"] += len(outcome.too_late)
        # Step 3.
        state.held.append(message)
        state.held_bytes += len(value)
        return outcome.too_late

    # Steps 4-6 -----------------------------------------------------------------------------

    def due(self, partition: int) -> bool:
        state = self.partitions[partition]
        return (
            state.held_bytes >= TABLE_FLUSH_BYTES
            or time.monotonic() - state.flushed_at >= TABLE_FLUSH_SECONDS
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
        rows, seen = self.tables.rows, self.tables.seen
        # Step 4.
        for key in state.dirty:
            rows[key.encode()] = state.cache[key].encode()
        for key in state.deleted:
            rows.pop(key.encode(), None)
        for offset, ids in state.seen.items():
            seen[f"{partition}|{offset}".encode()] = ids
        for offset in state.forgotten:
            seen.pop(f"{partition}|{offset}".encode(), None)
        ledger = state.ledger
        self.tables.progress[str(partition).encode()] = orjson.dumps(
            {"t": ledger.stream_ms, "o": ledger.offset}
        )
        if len(state.cache) > CACHE_LIMIT:
            state.cache.clear()  # everything in it is in the table now; hot buckets come back
        state.dirty.clear()
        state.deleted.clear()
        state.seen.clear()
        state.forgotten.clear()
        state.flushed_at = time.monotonic()
        held, state.held, state.held_bytes = state.held, [], 0
        return self._acknowledge(held)

    async def _acknowledge(self, held: list[Acknowledgeable]) -> None:
        # Step 5.
        await self.deliver()
        # Step 6.
        for message in held:
            message.ack()

    # Assignment and the mirror's reads -------------------------------------------------------

    def state(self, partition: int) -> PartitionState:
        """The partition's state, restored from the tables on first use after assignment."""
        state = self.partitions.get(partition)
        if state is None:
            state = self.partitions[partition] = PartitionState(self._restore(partition))
        return state

    def forget(self, partition: int) -> None:
        """On revocation: drop unflushed work (it was not acknowledged, the next owner replays it)."""
        self.partitions.pop(partition, None)

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
        """Per owned partition, the next offset to apply: how far the agent has got."""
        return {partition: self.state(partition).ledger.offset + 1 for partition in self.owned()}

    def watermark(self, partition: int) -> tuple[int, int]:
        ledger = self.state(partition).ledger
        return ledger.stream_ms, ledger.offset

    def _restore(self, partition: int) -> PartitionLedger:
        prefix = f"{partition}|".encode()
        ledger = PartitionLedger(partition, self.retention, self.dedup_window_ms)
        raw_progress = self.tables.progress.get(str(partition).encode())
        progress = orjson.loads(raw_progress) if raw_progress else {}
        keys = [BucketKey.decode(raw) for raw in self.tables.rows if raw.startswith(prefix)]
        seen = []
        for raw_key, raw_value in self.tables.seen.items():
            if raw_key.startswith(prefix):
                document = orjson.loads(raw_value)
                seen.append((int(raw_key[len(prefix) :]), document["t"], document["ids"]))
        ledger.restore(progress.get("t", 0), progress.get("o", -1), keys, seen)
        log.info(
            "partition %d restored: %d customer-buckets, %d dedup batches", partition, len(keys), len(seen)
        )
        return ledger
