"""Too late is decided once, from the first message on, and stream time survives a restart.

A new deployment's first message may hold a CDR older than every bucket next to a current
one; the old one must reach the dead-letter topic as ``too_late`` (as published, with where
it was published), never be counted into a bucket that the same message then expires.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from breakout.settings import Settings
from tests import dataset
from tests.integration.pipeline import (
    CUSTOMERS,
    Worker,
    eventually_equal,
    publish,
    read_counters,
    read_topic,
    read_whole_mirror,
    with_dial_codes,
)

OLD = 500 * 86400  # older than the 400-day retention of day buckets


async def test_too_late_in_a_new_deployments_first_batch_and_after_a_restart(
    settings: Settings, tmp_path: Path
) -> None:
    settings, table = with_dial_codes(settings, tmp_path)
    data = dataset.generate(seed=41, total=40, end_time=time.time() - 60, customers=CUSTOMERS, table=table)
    current = list(data.valid.values())[:20]
    first_old, second_old = dataset.late(current[:2], OLD)
    first_old["id"], second_old["id"] = "old-1", "old-2"
    expected = dataset.expected_rows(current, table)
    # Published before the worker starts: the very first message is [old, current...].
    await publish(settings, [(b"k", orjson.dumps([first_old, *current]))])
    worker = Worker(settings, tmp_path / "w", tmp_path / "worker.log")
    try:
        got = await eventually_equal(lambda: _whole_rows(settings), expected, wait=90, worker=worker)
        assert got == expected
    finally:
        worker.stop()
    # A restarted worker knows the stream time already: an old CDR alone is too late too.
    worker = Worker(settings, tmp_path / "w", tmp_path / "worker.log")
    try:
        await publish(settings, [(b"k", orjson.dumps(second_old))])
        dead = await read_topic(settings, settings.dlq_topic, 2, wait=90)
        assert await _whole_rows(settings) == expected
    finally:
        worker.stop()
    assert [(d["error"], d["topic"], d["offset"], d["batch_index"]) for d in dead] == [
        ("too_late", settings.topic, 0, 0),
        ("too_late", settings.topic, 1, None),
    ]
    assert [orjson.loads(d["payload"]) for d in dead] == [first_old, second_old]
    counters = await read_counters(settings)
    assert counters["rejected:too_late"] == 2


async def _whole_rows(settings: Settings) -> object:
    whole, rows = await read_whole_mirror(settings)
    return rows if whole.complete else None
