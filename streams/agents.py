"""The worker's pipeline: the ingest task, the aggregating agent and the Redis mirror task.

The agent consumes the internal topic one message at a time; each message carries
thousands of validated CDRs of one partition, so Faust's per-event cost is paid per
batch, and each touched customer-bucket is written to its table once per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from faust.types import EventT

from breakout.buckets import Retention
from breakout.destinations import load_dial_codes
from breakout.ledger import BucketKey, CustomerBucket, PartitionLedger
from breakout.normalize import Record, Reject
from breakout.settings import Settings
from streams.deadletter import dead_letter
from streams.ingest import Ingest, normalized_topic
from streams.mirror import RedisMirror
from streams.tables import Tables, create_tables

log = logging.getLogger(__name__)

TABLE_FLUSH_SECONDS = 5.0
TABLE_FLUSH_MESSAGES = 200
CACHE_LIMIT = 200_000


def now_ms() -> int:
    return int(time.time() * 1000)


def retention_of(settings: Settings) -> Retention:
    return Retention(settings.minute_retention, settings.hour_retention, settings.day_retention)


@dataclass
class PartitionState:
    """One assigned partition's working set: what is applied but not yet in the tables.

    The agent acknowledges a message only after the table writes that include it, so a
    crash before ``Aggregator.flush`` replays it, and the ledger's offsets count it once.
    """

    ledger: PartitionLedger
    cache: dict[BucketKey, CustomerBucket] = field(default_factory=dict)
    dirty: set[BucketKey] = field(default_factory=set)
    deleted: set[BucketKey] = field(default_factory=set)
    seen: dict[int, bytes] = field(default_factory=dict)
    forgotten: list[int] = field(default_factory=list)
    held: list[EventT[Any]] = field(default_factory=list)
    offset: int = -1
    flushed_at: float = field(default_factory=time.monotonic)


class Aggregator:
    """Applies internal-topic messages through each partition's ledger and stores the result.

    Table writes are gathered per partition and done every ``TABLE_FLUSH_SECONDS`` (or
    ``TABLE_FLUSH_MESSAGES``): a busy customer-bucket is then written once per flush, not
    once per message, which keeps the changelog small when the same rows change all the time.
    Redis does not wait for this: ``apply`` stages every change for the mirror at once.
    """

    def __init__(
        self, settings: Settings, tables: Tables, mirror: RedisMirror, counters: Counter[str]
    ) -> None:
        self.settings = settings
        self.tables = tables
        self.mirror = mirror
        self.counters = counters
        self.retention = retention_of(settings)
        self.partitions: dict[int, PartitionState] = {}

    def state(self, partition: int) -> PartitionState:
        """The partition's state, restored from the tables on first use after assignment."""
        state = self.partitions.get(partition)
        if state is None:
            state = self.partitions[partition] = PartitionState(self._restore(partition))
        return state

    def forget(self, partition: int) -> None:
        """On revocation: drop unflushed work (it was not acknowledged, the next owner replays it)."""
        self.partitions.pop(partition, None)

    def restage_all(self) -> None:
        """Stage every row of every partition held here for Redis (which lost its data)."""
        for partition, state in self.partitions.items():
            prefix = f"{partition}|".encode()
            for raw_key, raw_value in self.tables.rows.items():
                if raw_key.startswith(prefix):
                    key = BucketKey.decode(raw_key)
                    bucket = state.cache.get(key) or CustomerBucket.decode(raw_value)
                    self.mirror.stage(key, bucket, None)
            for key in state.dirty:  # applied but not in the table yet
                self.mirror.stage(key, state.cache[key], None)

    def _restore(self, partition: int) -> PartitionLedger:
        prefix = f"{partition}|".encode()
        ledger = PartitionLedger(partition, self.retention, self.settings.dedup_window * 1000)
        progress = self.tables.progress.get(str(partition).encode())
        keys = []
        for raw_key, raw_value in self.tables.rows.items():
            if raw_key.startswith(prefix):
                key = BucketKey.decode(raw_key)
                keys.append(key)
                self.mirror.stage(key, CustomerBucket.decode(raw_value), None)  # resync Redis
        seen = []
        for raw_key, raw_value in self.tables.seen.items():
            if raw_key.startswith(prefix):
                document = orjson.loads(raw_value)
                seen.append((int(raw_key[len(prefix) :]), document["t"], document["ids"]))
        ledger.restore(orjson.loads(progress)["t"] if progress else 0, keys, seen)
        log.info(
            "partition %d restored: %d customer-buckets, %d dedup batches", partition, len(keys), len(seen)
        )
        return ledger

    def apply(self, partition: int, offset: int, value: bytes) -> list[Record]:
        """Apply one message in memory and stage it for Redis; return the records too late to count."""
        state = self.state(partition)
        ledger = state.ledger
        cache = state.cache

        def read(key: BucketKey) -> CustomerBucket | None:
            bucket = cache.get(key)
            if bucket is None:
                raw = self.tables.rows.get(key.encode())
                bucket = CustomerBucket.decode(raw) if raw is not None else None
            return bucket

        outcome = ledger.apply(offset, orjson.loads(value), read)  # records as positional arrays
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
            state.seen[offset] = orjson.dumps({"t": ledger.stream_ms, "ids": outcome.counted_ids})
        state.forgotten.extend(outcome.forgotten_offsets)
        state.offset = offset
        self.mirror.stage_watermark(partition, ledger.stream_ms, offset)
        self.counters["duplicates"] += outcome.duplicates
        self.counters["replayed"] += outcome.replayed
        self.counters["rejected:too_late"] += len(outcome.too_late)
        return outcome.too_late

    def due(self, partition: int) -> bool:
        state = self.partitions[partition]
        return (
            len(state.held) >= TABLE_FLUSH_MESSAGES
            or time.monotonic() - state.flushed_at >= TABLE_FLUSH_SECONDS
        )

    def flush(self, partition: int) -> list[EventT[Any]]:
        """Write the partition's pending state to its tables; return the events it covers.

        Must run while the current Faust event is one of this partition: the RocksDB store
        and the changelog take the partition from it.
        """
        state = self.partitions[partition]
        rows, seen = self.tables.rows, self.tables.seen
        for key in state.dirty:
            rows[key.encode()] = state.cache[key].encode()
        for key in state.deleted:
            rows.pop(key.encode(), None)
        for offset, ids in state.seen.items():
            seen[f"{partition}|{offset}".encode()] = ids
        for offset in state.forgotten:
            seen.pop(f"{partition}|{offset}".encode(), None)
        self.tables.progress[str(partition).encode()] = orjson.dumps(
            {"t": state.ledger.stream_ms, "o": state.offset}
        )
        if len(state.cache) > CACHE_LIMIT:
            state.cache.clear()  # everything in it is in the table now; hot buckets come back
        state.dirty.clear()
        state.deleted.clear()
        state.seen.clear()
        state.forgotten.clear()
        state.flushed_at = time.monotonic()
        held, state.held = state.held, []
        return held


@contextlib.asynccontextmanager
async def fail_stop(app: faust.App) -> AsyncIterator[None]:
    """Crash the whole worker on an unexpected error instead of limping on without a part.

    Faust would restart a crashed agent at the next event, acknowledging the one that
    failed; stopping the process leaves that offset uncommitted, so the restarted
    worker replays it and the ledger's offsets keep the count exact.
    """
    try:
        yield
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.critical("stopping the worker: %r", exc, exc_info=True)
        await app.crash(exc)
        raise


def register_pipeline(app: faust.App, settings: Settings) -> Aggregator:
    """Attach the tables, the agent and the background tasks to ``app``."""
    dial_codes = load_dial_codes(settings.dial_codes)
    tables = create_tables(app, settings.partitions)
    counters: Counter[str] = Counter()
    mirror = RedisMirror(settings.redis, settings.app_id, retention_of(settings), counters)
    aggregator = Aggregator(settings, tables, mirror, counters)
    mirror.on_reset = aggregator.restage_all
    ingest = Ingest(settings, dial_codes, retention_of(settings), counters)
    source = app.topic(
        normalized_topic(settings),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    dlq = app.topic(settings.dlq_topic, key_serializer="raw", value_serializer="raw")

    @app.agent(source, name="aggregate")
    async def aggregate(stream: faust.StreamT[bytes]) -> AsyncIterator[Any]:
        async with fail_stop(app):
            async for event in stream.noack().events():  # type: ignore[attr-defined]
                message = event.message
                partition = message.partition
                too_late = aggregator.apply(partition, message.offset, event.value)
                for record in too_late:
                    payload = orjson.dumps(record, default=tuple)
                    reject = Reject("too_late", "older than every kept bucket", payload)
                    value = dead_letter(reject, message.topic, partition, message.offset, now_ms())
                    await dlq.send(key=b"too_late", value=value)
                aggregator.partitions[partition].held.append(event)
                if aggregator.due(partition):
                    for done in aggregator.flush(partition):
                        done.ack()
                yield None

    @app.task  # type: ignore[untyped-decorator]
    async def run_ingest() -> None:
        async with fail_stop(app):
            await ingest.run()

    @app.task  # type: ignore[untyped-decorator]
    async def run_mirror() -> None:
        async with fail_stop(app):
            await mirror.run()

    async def forget_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        for tp in revoked:
            if tp.topic == source.get_topic_name():
                aggregator.forget(tp.partition)

    app.on_partitions_revoked.connect(forget_revoked)  # type: ignore[arg-type]

    return aggregator
