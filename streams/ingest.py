"""The ingest step: CDR topic → validated, destination-resolved records on the internal topic.

Faust's per-message path costs tens of microseconds before any work is done (see
``docs/operations.md``), so the public CDR topic is read here in large batches with
aiokafka directly and validated with plain functions; what comes out is a few large
messages per poll, one per partition of the internal topic, which the Faust agent
then consumes cheaply. Re-keying by customer on the way puts every CDR of a customer,
and so every re-delivery of one, on the same partition, whatever key the producer used.

The loop, in order, per poll:
1. fetch up to ``MAX_RECORDS`` messages;
2. normalize each (``breakout.normalize``), refusing what breaks the contract;
3. send the records, grouped by target partition, and the dead letters;
4. wait until the broker has acknowledged every send;
5. commit the consumed offsets.
A crash anywhere before step 5 replays the poll; the agent's id index makes the
re-sent records count once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import Counter, defaultdict
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from breakout.buckets import Retention
from breakout.destinations import DialCodes
from breakout.normalize import Record, normalize_message
from breakout.settings import Settings
from streams.deadletter import dead_letter

log = logging.getLogger(__name__)

MAX_RECORDS = 20_000
RECORDS_PER_MESSAGE = 5_000


def normalized_topic(settings: Settings) -> str:
    """The internal topic between the ingest step and the aggregating agent."""
    return f"{settings.app_id}-normalized"


def target_partition(customer_id: str, partitions: int, cache: dict[str, int]) -> int:
    """A stable partition per customer (CRC-32, cached: a worker sees few customers)."""
    partition = cache.get(customer_id)
    if partition is None:
        partition = cache[customer_id] = zlib.crc32(customer_id.encode()) % partitions
    return partition


class Ingest:
    """Runs the loop above until cancelled; counts what it accepted and refused, by reason."""

    def __init__(
        self, settings: Settings, dial_codes: DialCodes, retention: Retention, counters: Counter[str]
    ) -> None:
        self.settings = settings
        self.dial_codes = dial_codes
        self.retention = retention
        self.counters = counters
        self._stream_ms = 0
        self._partition_of: dict[str, int] = {}

    async def run(self) -> None:
        settings = self.settings
        consumer = AIOKafkaConsumer(
            settings.topic,
            bootstrap_servers=settings.kafka,
            group_id=f"{settings.app_id}-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 << 20,
            fetch_max_bytes=64 << 20,
            rebalance_timeout_ms=settings.rebalance_timeout * 1000,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka,
            acks="all",
            linger_ms=5,
            max_batch_size=1 << 20,
            max_request_size=16 << 20,
        )
        await producer.start()
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=MAX_RECORDS)
                if batches:
                    await self._process(batches, producer)
                    await consumer.commit()
        finally:
            await consumer.stop()
            await producer.stop()

    async def _process(self, batches: dict[Any, list[Any]], producer: AIOKafkaProducer) -> None:
        settings = self.settings
        partitions = settings.partitions
        now_ms = int(time.time() * 1000)
        too_late_before_ms = self._stream_ms - self.retention.longest * 1000
        by_partition: defaultdict[int, list[Record]] = defaultdict(list)
        sends = []
        newest_ms = self._stream_ms
        for tp, messages in batches.items():
            for message in messages:
                records, rejects = normalize_message(
                    message.value,
                    dial_codes=self.dial_codes,
                    default_currency=settings.currency,
                    now_ms=now_ms,
                    too_late_before_ms=too_late_before_ms,
                )
                for record in records:
                    by_partition[target_partition(record.customer_id, partitions, self._partition_of)].append(
                        record
                    )
                    newest_ms = max(newest_ms, record.start_ms)
                for reject in rejects:
                    self.counters[f"rejected:{reject.reason}"] += 1
                    value = dead_letter(reject, tp.topic, tp.partition, message.offset, now_ms)
                    sends.append(await producer.send(settings.dlq_topic, value, key=reject.reason.encode()))
                self.counters["accepted"] += len(records)
        topic = normalized_topic(settings)
        for partition, records in by_partition.items():
            for start in range(0, len(records), RECORDS_PER_MESSAGE):
                chunk = orjson.dumps(records[start : start + RECORDS_PER_MESSAGE], default=tuple)
                sends.append(await producer.send(topic, chunk, partition=partition))
        await asyncio.gather(*sends)
        self._stream_ms = newest_ms
