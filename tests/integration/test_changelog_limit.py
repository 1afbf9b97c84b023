"""Changelogs whose broker limit is below the producer's batch size: the worker builds its
batches under the limit, and a worker restored from those changelogs counts on exactly.

The worker's producer sends the tables' changelogs in batches of up to a megabyte (one
batch per partition per round trip, so a flush's several MB go out in a few). The broker
refuses a batch over the topic's ``max.message.bytes``, and a refused changelog write
stops the worker, so the batch size follows the limit the broker reports at start.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from breakout.settings import Settings
from streams.app import PRODUCER_BATCH_BYTES
from streams.tables import changelog_topics
from tests import dataset
from tests.integration.pipeline import Worker, diff, eventually_true, publish, read_mirror

# Above the largest single changelog message (a ``versions`` entry, ~460 kB at most), below
# the producer's batch size.
LIMIT = 600_000
CUSTOMERS = 1_000
DESTINATIONS = 300
PER_MESSAGE = 500
FLUSH_SECONDS = 5


def wide_cdrs(table: dict[str, str], count: int, first: int) -> list[dict[str, Any]]:
    """``count`` CDRs of the last ten minutes over the whole mix: customer-buckets of many
    rows, so a flush writes well over ``LIMIT`` of them to each partition's changelog."""
    rng = random.Random(first)
    prefixes = sorted(table)
    start = time.time() - 600
    return [
        {
            "id": f"limit-{n}",
            "customer_id": f"cust-{rng.randrange(CUSTOMERS):04d}",
            "provider_id": f"prov-{rng.randrange(2)}",
            "dst": "+" + rng.choice(prefixes) + "".join(rng.choices("0123456789", k=7)),
            "start_time": round(start + (n - first) * 500 / count, 3),
            "duration": (duration := rng.choice([0, rng.randint(1, 900)])),
            "status": "answered" if duration else "no_answer",
            "provider_charge": f"{rng.randint(0, 999_999) / 1e6:.6f}",
            "customer_charge": f"{rng.randint(0, 2_000_000) / 1e6:.6f}",
            "currency": "USD",
            "dtmf": 0,
        }
        for n in range(first, first + count)
    ]


async def create_changelogs(settings: Settings, limit: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka)
    await admin.start()
    try:
        config = {"cleanup.policy": "compact", "max.message.bytes": str(limit)}
        await admin.create_topics(
            [
                NewTopic(name, settings.partitions, 1, topic_configs=config)
                for name in changelog_topics(settings.app_id)
            ]
        )
    finally:
        await admin.close()


async def changelog_messages(settings: Settings, table: str) -> list[int]:
    """Messages in one table's changelog, per partition."""
    topic = f"{settings.app_id}-{table}-changelog"
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        ends = await consumer.end_offsets(tps)
        return [ends[tp] for tp in tps]
    finally:
        await consumer.stop()


async def test_changelog_batches_fit_the_brokers_limit_and_restore_exactly(
    settings: Settings, tmp_path: Path
) -> None:
    assert LIMIT < PRODUCER_BATCH_BYTES
    table = dataset.dial_code_table(DESTINATIONS)
    path = tmp_path / "dial_codes.csv"
    path.write_text("prefix,destination\n" + "".join(f"{p},{n}\n" for p, n in table.items()))
    settings = settings.model_copy(update={"dial_codes": path, "table_flush_seconds": FLUSH_SECONDS})
    await create_changelogs(settings, LIMIT)
    first, second = wide_cdrs(table, 30_000, 0), wide_cdrs(table, 2_000, 30_000)

    def messages(cdrs: list[dict[str, Any]]) -> list[tuple[bytes | None, bytes]]:
        return [(None, orjson.dumps(cdrs[at : at + PER_MESSAGE])) for at in range(0, len(cdrs), PER_MESSAGE)]

    async def exact(worker: Worker, expected: dict[Any, list[int]]) -> bool:
        assert worker.process.poll() is None, worker.tail()
        return await read_mirror(settings) == expected

    bulk, tail = first[:-1_000], first[-1_000:]
    await publish(settings, messages(bulk))
    worker = Worker(settings, tmp_path / "w1", tmp_path / "worker1.log")
    try:
        await eventually_true(lambda: exact(worker, dataset.expected_rows(bulk, table)), wait=240)
        # A partition's table flush is due by age once its last flush is FLUSH_SECONDS old,
        # checked as a message arrives, and partitions due by age take turns spread over
        # that period: the tail, that much later and four messages a second for twice the
        # period, makes every partition write its customer-buckets to the changelog, some MB
        # each, which must reach the broker in batches the broker accepts.
        await asyncio.sleep(FLUSH_SECONDS)
        for start in range(0, len(tail), 25):
            await publish(settings, [(None, orjson.dumps(tail[start : start + 25]))])
            await asyncio.sleep(0.25)
        expected = dataset.expected_rows(first, table)
        await eventually_true(lambda: exact(worker, expected), wait=120)

        async def flushed() -> bool:
            assert worker.process.poll() is None, worker.tail()
            return all(await changelog_messages(settings, "rows"))

        await eventually_true(flushed, wait=120)
    finally:
        worker.stop()
    assert "MessageSizeTooLarge" not in worker.log.read_text(errors="replace"), worker.tail()

    # A second worker with no local state restores the tables from those changelogs, then
    # counts more CDRs of the same customers on top of them: every row exact.
    await publish(settings, messages(second))
    restored = Worker(settings, tmp_path / "w2", tmp_path / "worker2.log")
    try:
        expected = dataset.expected_rows(first + second, table)
        await eventually_true(lambda: exact(restored, expected), wait=240)
        rows = await read_mirror(settings)
        assert rows == expected, diff(rows, expected)
    finally:
        restored.stop()
