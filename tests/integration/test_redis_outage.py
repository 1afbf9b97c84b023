"""A Redis outage does not stop aggregation; the mirror catches up when Redis returns."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from breakout.settings import Settings
from tests import dataset
from tests.conftest import ROOT, free_port
from tests.integration.pipeline import (
    CUSTOMERS,
    Worker,
    diff,
    eventually_equal,
    publish,
    read_mirror,
    with_dial_codes,
)


def _redis(*args: str) -> None:
    subprocess.run([str(ROOT / "scripts" / "redis.sh"), *args], check=True)


async def test_aggregation_goes_on_while_redis_is_down_and_the_mirror_catches_up(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    own_redis = tmp_path / "redis"
    _redis("start", str(port), str(own_redis))
    settings, table = with_dial_codes(settings, tmp_path)
    settings = settings.model_copy(update={"redis": f"redis://127.0.0.1:{port}/0"})
    data = dataset.generate(seed=5, total=4000, end_time=time.time() - 600, customers=CUSTOMERS, table=table)
    half = len(data.messages) // 2
    expected = dataset.expected_rows(list(data.valid.values()), table)
    worker = Worker(settings, tmp_path / "w", tmp_path / "worker.log")
    try:
        await publish(settings, data.messages[:half])
        await eventually_equal(lambda: _nonempty(settings), True, wait=60, worker=worker)
        _redis("stop", str(own_redis))
        await publish(settings, data.messages[half:])
        await asyncio.sleep(5)  # the worker aggregates the second half with Redis gone
        assert worker.process.poll() is None, worker.tail()
        _redis("start", str(port), str(own_redis))  # an empty Redis: nothing was persisted
        got = await eventually_equal(lambda: read_mirror(settings), expected, wait=90, worker=worker)
        assert got == expected, diff(got, expected)
    finally:
        worker.stop()
        _redis("stop", str(own_redis))


async def _nonempty(settings: Settings) -> bool:
    return bool(await read_mirror(settings))
