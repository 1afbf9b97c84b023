"""Internal-topic messages deleted by the broker before the agent applied them.

The internal topic keeps the broker's retention; a worker down for longer than that finds
the messages it had not applied gone. It must neither stop on the gap for ever nor count
later messages as if nothing were missing without saying so: it logs the messages lost,
counts them, and goes on with every message that is still there, exactly.

The worker is killed after applying everything but before its first table flush, so its
tables record nothing and the restarted worker must read every partition from offset 0;
the test then deletes the first half of each internal partition (``DeleteRecords``, as
retention would) and empties Redis, so what the mirror holds afterwards is exactly what the
remaining messages count.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from breakout.redis_client import Client
from breakout.redis_layout import Layout
from breakout.settings import Settings
from streams.ingest import normalized_topic
from tests import dataset
from tests.integration.handmade import empty
from tests.integration.pipeline import (
    CUSTOMERS,
    Worker,
    diff,
    eventually_equal,
    eventually_true,
    publish,
    read_counters,
    read_mirror,
    with_dial_codes,
)

CHUNKS = 8


async def internal_ids(settings: Settings) -> dict[int, list[list[str]]]:
    """Per internal partition, the CDR ids of each message, in offset order from 0."""
    topic = normalized_topic(settings)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        messages: dict[int, list[list[str]]] = defaultdict(list)
        while any(len(messages[tp.partition]) < ends[tp] for tp in tps):
            for tp, batch in (await consumer.getmany(timeout_ms=1000)).items():
                for message in batch:
                    assert message.offset == len(messages[tp.partition])
                    messages[tp.partition].append([record[0] for record in orjson.loads(message.value)])
        return messages
    finally:
        await consumer.stop()


async def delete_before(settings: Settings, offsets: dict[int, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka)
    await admin.start()
    try:
        topic = normalized_topic(settings)
        await admin.delete_records(
            {TopicPartition(topic, p): RecordsToDelete(before_offset=o) for p, o in offsets.items()}
        )
    finally:
        await admin.close()


async def test_internal_messages_deleted_before_they_were_applied_are_counted_and_reading_goes_on(
    settings: Settings, redis: Client, tmp_path: Path
) -> None:
    settings, table = with_dial_codes(settings, tmp_path)
    end = time.time() - 600
    data = dataset.generate(seed=29, total=3_000, end_time=end, customers=CUSTOMERS, table=table)
    everything = dataset.expected_rows(list(data.valid.values()), table)
    worker = Worker(settings, tmp_path / "w", tmp_path / "w1.log")
    try:
        size = len(data.messages) // CHUNKS + 1
        for start in range(0, len(data.messages), size):  # a few internal messages per partition
            await publish(settings, data.messages[start : start + size])
            await asyncio.sleep(1.5)
        # Nothing arrives after this, so no partition is flushed: the tables stay empty.
        got = await eventually_equal(lambda: read_mirror(settings), everything, wait=120, worker=worker)
        assert got == everything, diff(got, everything)
    finally:
        worker.kill()
    assert "reading from offset 0" in worker.log.read_text()

    messages = await internal_ids(settings)
    deleted = {p: len(ids) // 2 for p, ids in messages.items() if len(ids) >= 2}
    assert sum(deleted.values()) >= settings.partitions  # every partition loses some
    await delete_before(settings, deleted)
    await empty(redis, Layout(settings.app_id))  # a new epoch: the worker writes what its tables count
    kept = {i for p, ids in messages.items() for message in ids[deleted.get(p, 0) :] for i in message}
    expected = dataset.expected_rows([cdr for cdr_id, cdr in data.valid.items() if cdr_id in kept], table)
    assert expected != everything

    restarted = Worker(settings, tmp_path / "w", tmp_path / "w2.log")
    try:
        got = await eventually_equal(lambda: read_mirror(settings), expected, wait=120, worker=restarted)
        assert got == expected, diff(got, expected)

        async def counted() -> bool:
            return (await read_counters(settings))["internal_messages_deleted"] == sum(deleted.values())

        await eventually_true(counted, wait=30)
    finally:
        restarted.stop()
    log = restarted.log.read_text()
    for partition, before in deleted.items():
        assert f"partition {partition}: messages 0 to {before - 1} of the internal topic were deleted" in log
