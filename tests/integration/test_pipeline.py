"""The pipeline end to end on the real broker and Redis: exact totals, duplicates once,
invalid and too-late CDRs in the dead-letter topic with their reasons."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from breakout.settings import Settings
from tests import dataset
from tests.integration.pipeline import (
    CUSTOMERS,
    Worker,
    diff,
    eventually_equal,
    publish,
    read_counters,
    read_mirror,
    read_topic,
    with_dial_codes,
)


@pytest.mark.parametrize("ingest_process", ["true", "false"], ids=["ingest-process", "ingest-task"])
async def test_dataset_totals_are_exact_and_rejects_are_dead_lettered(
    settings: Settings, tmp_path: Path, ingest_process: str
) -> None:
    settings, table = with_dial_codes(settings, tmp_path)
    end_time = time.time() - 3600
    data = dataset.generate(seed=7, total=6000, end_time=end_time, customers=CUSTOMERS, table=table)
    valid = list(data.valid.values())
    assert len({c["customer_id"] for c in valid}) >= 20
    assert len({dataset.expected_destination(c["dst"], table) for c in valid}) >= 50
    assert data.duplicates >= 0.04 * len(valid) and len(data.invalid) >= 0.015 * len(valid)

    worker = Worker(
        settings, tmp_path / "w1", tmp_path / "worker.log", BREAKOUT_INGEST_PROCESS=ingest_process
    )
    try:
        await publish(settings, data.messages)
        expected = dataset.expected_rows(valid, table)
        got = await eventually_equal(lambda: read_mirror(settings), expected, wait=120, worker=worker)
        assert got == expected, diff(got, expected)

        # Late CDRs: an hour late lands everywhere; three days late misses only the minute
        # buckets (48 h retention); 500 days late is older than every bucket: dead-lettered.
        hour_late = dataset.late(valid[:50], 3600)
        days_late = dataset.late(valid[50:80], 3 * 86400)
        too_late = dataset.late(valid[80:85], 500 * 86400)
        late_messages = [
            (c["customer_id"].encode(), orjson.dumps(c)) for c in hour_late + days_late + too_late
        ]
        await publish(settings, late_messages)
        expected_late = dataset.expected_rows(
            valid + hour_late + days_late, table, minute_cutoff=end_time - 2 * 86400
        )
        got = await eventually_equal(lambda: read_mirror(settings), expected_late, wait=60, worker=worker)
        assert got == expected_late, diff(got, expected_late)
    finally:
        worker.stop()

    counters = await read_counters(settings)
    # "accepted" passed validation; the aggregator then refuses what is too late.
    accepted = len(data.valid) + data.duplicates + len(hour_late) + len(days_late) + len(too_late)
    assert counters["accepted"] == accepted
    rejected = {k.removeprefix("rejected:"): v for k, v in counters.items() if k.startswith("rejected:")}
    assert rejected == dict(Counter(r for r, _ in data.invalid) + Counter({"too_late": len(too_late)}))
    dead = await read_topic(settings, settings.dlq_topic, len(data.invalid) + len(too_late))
    got_dead = Counter((d["error"], d["payload"].encode()) for d in dead)
    expected_dead = Counter(data.invalid) + Counter(("too_late", orjson.dumps(c)) for c in too_late)
    assert got_dead == expected_dead
    assert all(d["topic"] == settings.topic and d["offset"] >= 0 and d["received_at"] for d in dead)


async def test_unexpected_error_stops_the_worker_instead_of_skipping_the_message(
    settings: Settings, tmp_path: Path
) -> None:
    """Only the ingest step writes the internal topic; junk there is a bug, and the worker
    must stop (leaving the message uncommitted) rather than let Faust restart the agent past it."""
    worker = Worker(settings, tmp_path / "w", tmp_path / "worker.log")
    try:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka)
        await producer.start()
        try:
            await producer.send_and_wait(f"{settings.app_id}-normalized", b"not records", partition=0)
        finally:
            await producer.stop()
        returncode = await asyncio.to_thread(worker.process.wait, 90)
        assert returncode != 0, worker.tail()
        assert "stopping the worker" in worker.log.read_text()
    finally:
        worker.stop()
