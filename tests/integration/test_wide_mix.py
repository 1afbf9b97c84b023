"""A wholesale carrier's mix, 1,000 customers by 300 destinations: the mirror keeps up with
default settings, and after Redis loses this app's keys it writes them all again.

Reproduces the stall where one flush of thousands of wide customer-buckets went to Redis
as one pipeline, timed out against the socket timeout and was retried whole, forever,
while nothing reached Redis. Every write is now a chunk that finishes well inside the
timeout; the test checks every row of every bucket, and that the mirror never had to
retry (a timed-out chunk would log a warning).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from breakout.redis_layout import Layout, completeness, decode_watermarks
from breakout.settings import Settings
from tests import dataset
from tests.integration.pipeline import Worker, diff, eventually_true, publish, read_mirror

CUSTOMERS = 1_000
DESTINATIONS = 300
CDRS = 100_000
PER_MESSAGE = 500


def wide_cdrs(table: dict[str, str]) -> list[dict[str, Any]]:
    """``CDRS`` CDRs over the last ten minutes, every customer calling every destination."""
    rng = random.Random(300)
    prefixes = sorted(table)
    start = time.time() - 600
    cdrs = []
    for n in range(CDRS):
        duration = rng.choice([0, rng.randint(1, 900)])
        cdrs.append(
            {
                "id": f"wide-{n}",
                "customer_id": f"cust-{rng.randrange(CUSTOMERS):04d}",
                "provider_id": f"prov-{rng.randrange(2)}",
                "dst": "+" + rng.choice(prefixes) + "".join(rng.choices("0123456789", k=7)),
                "start_time": round(start + n * 600 / CDRS, 3),
                "duration": duration,
                "status": "answered" if duration else "no_answer",
                "provider_charge": f"{rng.randint(0, 999_999) / 1e6:.6f}",
                "customer_charge": f"{rng.randint(0, 2_000_000) / 1e6:.6f}",
                "currency": "USD",
                "dtmf": 0,
            }
        )
    return cdrs


async def whole(settings: Settings, redis: aioredis.Redis) -> bool:
    layout = Layout(settings.app_id)
    marks = decode_watermarks(await redis.hgetall(layout.watermarks))
    return completeness(await redis.get(layout.marker), marks, settings.partitions).complete


async def test_a_wide_mix_is_mirrored_exactly_with_default_settings(
    settings: Settings, tmp_path: Path
) -> None:
    table = dataset.dial_code_table(DESTINATIONS)
    path = tmp_path / "dial_codes.csv"
    path.write_text("prefix,destination\n" + "".join(f"{p},{n}\n" for p, n in table.items()))
    settings = settings.model_copy(update={"dial_codes": path})
    cdrs = wide_cdrs(table)
    expected = dataset.expected_rows(cdrs, table)
    messages = [
        (None, orjson.dumps(cdrs[start : start + PER_MESSAGE])) for start in range(0, len(cdrs), PER_MESSAGE)
    ]
    worker = Worker(settings, tmp_path / "w", tmp_path / "worker.log")
    redis = aioredis.from_url(settings.redis)
    try:
        await publish(settings, messages)

        async def exact() -> bool:
            assert worker.process.poll() is None, worker.tail()
            return await whole(settings, redis) and await read_mirror(settings) == expected

        await eventually_true(exact, wait=240)

        # Redis loses every key of this app at once: the worker writes them all again, in chunks.
        keys = [
            key async for key in redis.scan_iter(match=Layout(settings.app_id).keys_pattern, count=10_000)
        ]
        lose = redis.pipeline(transaction=True)
        lose.delete(*keys)
        await lose.execute()
        await eventually_true(lambda: whole(settings, redis), wait=120)
        rows = await read_mirror(settings)
        assert rows == expected, diff(rows, expected)
    finally:
        worker.stop()
        await redis.aclose()
    log = worker.log.read_text(errors="replace")
    assert "Redis mirror: Redis lost the mirror" in log
    assert "retrying" not in log, worker.tail()
