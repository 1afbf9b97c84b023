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
from collections.abc import AsyncIterator
from typing import Any

import faust
import orjson

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


def now_ms() -> int:
    return int(time.time() * 1000)


def retention_of(settings: Settings) -> Retention:
    return Retention(settings.minute_retention, settings.hour_retention, settings.day_retention)


class Aggregator:
    """Keeps one ``PartitionLedger`` per assigned partition and stores what it decides."""

    def __init__(self, settings: Settings, tables: Tables, mirror: RedisMirror) -> None:
        self.settings = settings
        self.tables = tables
        self.mirror = mirror
        self.retention = retention_of(settings)
        self.ledgers: dict[int, PartitionLedger] = {}
        self.duplicates = 0
        self.too_late = 0

    def ledger(self, partition: int) -> PartitionLedger:
        """The partition's ledger, restored from the tables on first use after assignment."""
        ledger = self.ledgers.get(partition)
        if ledger is None:
            ledger = self.ledgers[partition] = self._restore(partition)
        return ledger

    def forget(self, partition: int) -> None:
        """Called on revocation: another worker may change the partition before we see it again."""
        self.ledgers.pop(partition, None)

    def _restore(self, partition: int) -> PartitionLedger:
        prefix = f"{partition}|".encode()
        ledger = PartitionLedger(partition, self.retention, self.settings.dedup_window * 1000)
        progress = self.tables.progress.get(str(partition).encode())
        keys = []
        for raw_key, raw_value in self.tables.rows.items():
            if raw_key.startswith(prefix):
                key = BucketKey.decode(raw_key)
                keys.append(key)
                self.mirror.stage(key, CustomerBucket.decode(raw_value))  # resync Redis
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

    def read(self, key: BucketKey) -> CustomerBucket | None:
        raw = self.tables.rows.get(key.encode())
        return CustomerBucket.decode(raw) if raw is not None else None

    def apply(self, partition: int, offset: int, value: bytes) -> list[Record]:
        """Apply one message; store and stage its changes; return the records that came too late."""
        ledger = self.ledger(partition)
        records = [Record(*fields) for fields in orjson.loads(value)]
        outcome = ledger.apply(offset, records, self.read)
        rows, seen = self.tables.rows, self.tables.seen
        for key, bucket in outcome.updates.items():
            rows[key.encode()] = bucket.encode()
            self.mirror.stage(key, bucket)
        for key in outcome.deletions:
            rows.pop(key.encode(), None)
            self.mirror.stage(key, None)
        if outcome.counted_ids:
            seen[f"{partition}|{offset}".encode()] = orjson.dumps(
                {"t": ledger.stream_ms, "ids": outcome.counted_ids}
            )
        for forgotten in outcome.forgotten_offsets:
            seen.pop(f"{partition}|{forgotten}".encode(), None)
        self.tables.progress[str(partition).encode()] = orjson.dumps({"t": ledger.stream_ms, "o": offset})
        self.mirror.stage_watermark(partition, ledger.stream_ms, offset)
        self.duplicates += outcome.duplicates
        self.too_late += len(outcome.too_late)
        return outcome.too_late


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
    mirror = RedisMirror(settings.redis, settings.app_id, retention_of(settings))
    aggregator = Aggregator(settings, tables, mirror)
    ingest = Ingest(settings, dial_codes, retention_of(settings))
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
            async for event in stream.events():
                message = event.message
                too_late = aggregator.apply(message.partition, message.offset, event.value)
                for record in too_late:
                    payload = orjson.dumps(record, default=tuple)
                    reject = Reject("too_late", "older than every kept bucket", payload)
                    value = dead_letter(reject, message.topic, message.partition, message.offset, now_ms())
                    await dlq.send(key=b"too_late", value=value)
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
