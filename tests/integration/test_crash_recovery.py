"""SIGKILL mid-stream, restart, and the totals are still exact: nothing lost, nothing twice.

A worker killed with SIGKILL commits nothing and flushes nothing, so the restarted
worker replays from the last committed offsets of both the CDR topic (the ingest step)
and the internal topic (the agent); exact totals prove that both replays count once.
The second variant starts another worker mid-stream, so partitions move between
processes (a rebalance) around the kill.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from breakout.settings import Settings
from streams.aggregator import NUDGE
from streams.ingest import normalized_topic
from tests import dataset
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

CHUNKS = 30


@pytest.mark.parametrize("second_worker", [False, True], ids=["restart", "restart-with-rebalance"])
async def test_sigkill_mid_stream_then_restart_keeps_totals_exact(
    settings: Settings, tmp_path: Path, second_worker: bool
) -> None:
    settings, table = with_dial_codes(settings, tmp_path)
    data = dataset.generate(
        seed=11, total=30_000, end_time=time.time() - 600, customers=CUSTOMERS, table=table
    )
    expected = dataset.expected_rows(list(data.valid.values()), table)
    size = len(data.messages) // CHUNKS + 1
    chunks = [data.messages[i : i + size] for i in range(0, len(data.messages), size)]

    first = Worker(settings, tmp_path / "w1", tmp_path / "w1.log")
    workers = [first]
    try:
        for n, chunk in enumerate(chunks):
            await publish(settings, chunk)
            if n == 0:  # let the first worker start consuming before the stream goes on
                await eventually_true(lambda: read_mirror(settings), wait=60)
            await asyncio.sleep(0.2)
            if second_worker and n == CHUNKS // 4:
                workers.append(Worker(settings, tmp_path / "w2", tmp_path / "w2.log"))
            if n == CHUNKS // 2:
                mirrored = await read_mirror(settings)
                assert len(mirrored) > 0 and mirrored != expected  # truly mid-stream
                first.kill()
                workers.remove(first)
                workers.append(Worker(settings, tmp_path / "w1", tmp_path / "w1.log"))
        got = await eventually_equal(lambda: read_mirror(settings), expected, wait=180, worker=workers[-1])
        assert got == expected, diff(got, expected)
    finally:
        for worker in workers:
            worker.stop()
    log = (tmp_path / "w1.log").read_text()
    assert "restored" in log  # the restarted worker rebuilt its partitions from the tables


async def committed_to_the_end(settings: Settings) -> bool:
    """Whether the agents' committed offsets of every internal-topic partition are its end."""
    topic = normalized_topic(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka)
    await admin.start()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        ends = await consumer.end_offsets(partitions)
        committed = await admin.list_consumer_group_offsets(settings.app_id)
        return all(tp in committed and committed[tp].offset == ends[tp] for tp in partitions)
    finally:
        await consumer.stop()
        await admin.close()


async def topic_messages(settings: Settings, topic: str) -> dict[int, list[ConsumerRecord[bytes, bytes]]]:
    """Every message of ``topic`` up to its end now, per partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        ends = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: dict[int, list[ConsumerRecord[bytes, bytes]]] = {p: [] for p in range(settings.partitions)}
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                found[tp.partition] += [m for m in messages if m.offset < ends[tp]]
        return found
    finally:
        await consumer.stop()


async def tables_name_every_cdr_delivered(settings: Settings) -> bool:
    """Whether each partition's newest ``progress`` names as delivered every internal-topic
    message that carried CDRs (a restart reads on from there: only nudges are after it)."""
    internal = await topic_messages(settings, normalized_topic(settings))
    progress = await topic_messages(settings, f"{settings.app_id}-progress-changelog")
    delivered = {int(m.key): orjson.loads(m.value)["d"] for ms in progress.values() for m in ms if m.value}
    newest = {p: max((m.offset for m in ms if m.value != NUDGE), default=-1) for p, ms in internal.items()}
    return all(delivered.get(p, -1) >= offset for p, offset in newest.items() if offset >= 0)


def first_and_later(
    settings: Settings, tmp_path: Path, seed: int, table_flush_seconds: int
) -> tuple[Settings, dict[str, str], dataset.Dataset, dataset.Dataset]:
    """Settings with that table flush period, their dial codes, and two datasets without an
    id in common: 3,000 CDRs to count before a restart and 500 after it."""
    settings, table = with_dial_codes(settings, tmp_path)
    settings = settings.model_copy(update={"table_flush_seconds": table_flush_seconds})
    now = time.time()
    first = dataset.generate(seed=seed, total=3_000, end_time=now - 600, customers=CUSTOMERS, table=table)
    later = dataset.generate(
        seed=seed + 1, total=500, end_time=now - 300, customers=CUSTOMERS, table=table, first_id=3_000
    )
    return settings, table, first, later


async def mirrored_exactly(
    settings: Settings, worker: Worker, table: dict[str, str], *counted: dataset.Dataset
) -> None:
    expected = dataset.expected_rows([cdr for data in counted for cdr in data.valid.values()], table)
    got = await eventually_equal(lambda: read_mirror(settings), expected, wait=120, worker=worker)
    assert got == expected, diff(got, expected)


async def counts_later_and_replays_nothing(
    settings: Settings, worker: Worker, table: dict[str, str], first: dataset.Dataset, later: dataset.Dataset
) -> None:
    """A worker restarted on the data directory that counted ``first``: it counts ``later``
    exactly and reads none of ``first`` again."""
    await publish(settings, later.messages)
    await mirrored_exactly(settings, worker, table, first, later)
    counters = await eventually_true(lambda: read_counters(settings, worker.process.pid), wait=30)
    assert counters["replayed"] == 0, counters


async def test_a_quiet_worker_commits_what_it_counted_and_a_killed_one_reads_none_of_it_again(
    settings: Settings, tmp_path: Path
) -> None:
    """A table flush runs on a message of its partition, so without traffic the last CDRs
    counted would stay unflushed and uncommitted, for every restart to read again. The
    worker nudges such a partition with an empty message once its flush is overdue: with no
    new CDR, the tables come to name every message with CDRs delivered and every
    internal-topic partition is committed to its end, and a worker killed then reads none
    of them again (it replays no CDR) while counting the next ones exactly."""
    settings, table, first, later = first_and_later(settings, tmp_path, seed=5, table_flush_seconds=3)
    worker = Worker(settings, tmp_path / "w", tmp_path / "w1.log")
    try:
        await publish(settings, first.messages)
        await mirrored_exactly(settings, worker, table, first)
        # Two flushes a period apart, the second naming the first delivered (``to_nudge``).
        await eventually_true(lambda: tables_name_every_cdr_delivered(settings), wait=60)
        await eventually_true(lambda: committed_to_the_end(settings), wait=30)
        worker.kill()
        worker = Worker(settings, tmp_path / "w", tmp_path / "w2.log")
        await counts_later_and_replays_nothing(settings, worker, table, first, later)
    finally:
        worker.stop()


async def test_a_worker_stopped_by_sigterm_finishes_first_and_the_next_reads_none_of_it_again(
    settings: Settings, tmp_path: Path
) -> None:
    """A planned stop (SIGTERM, as a supervisor or a deploy sends) finishes first: the
    ingest stops, and each partition is nudged into flushes until its tables name every
    message with CDRs delivered (``streams.agents`` ``finish``). Here no table flush is due
    before the stop (the period is an hour), so without it the next worker would read all
    3,000 CDRs again; with it, it reads none again and counts the next ones exactly."""
    settings, table, first, later = first_and_later(settings, tmp_path, seed=7, table_flush_seconds=3_600)
    worker = Worker(settings, tmp_path / "w", tmp_path / "w1.log")
    try:
        await publish(settings, first.messages)
        await mirrored_exactly(settings, worker, table, first)
        assert not await tables_name_every_cdr_delivered(settings)  # no flush was due yet
        began = time.monotonic()
        worker.stop()
        stopped_in = time.monotonic() - began
        assert "the tables name every CDR counted" in worker.log.read_text(errors="replace"), worker.tail()
        assert stopped_in < 20, stopped_in
        assert await tables_name_every_cdr_delivered(settings)
        worker = Worker(settings, tmp_path / "w", tmp_path / "w2.log")
        await counts_later_and_replays_nothing(settings, worker, table, first, later)
    finally:
        worker.stop()
