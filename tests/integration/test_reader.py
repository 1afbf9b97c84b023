"""The read API's cache against real Redis: after any write it answers like a cold read.

The worker's writes are imitated key by key (docs/redis-layout.md), so each kind of change
— a customer's rows move, a customer appears, a customer's hash expires, Redis is emptied
and refilled — can be made on purpose between two reads.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis

from api.reader import MirrorReader
from breakout.buckets import Granularity
from breakout.snapshot import Filters, currency_totals
from breakout.timerange import Bucket

pytestmark = pytest.mark.integration

DAY = 86400
BUCKETS: list[Bucket] = [(Granularity.DAY, 1_790_000_000 // DAY * DAY + n * DAY) for n in range(3)]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def write(
    redis: aioredis.Redis, app: str, bucket: Bucket, customer: str, rows: dict[str, int], applied: int
) -> None:
    """One customer-bucket as the mirror writes it: rows by destination, applied offset, version."""
    g, start = bucket
    key = f"{app}:rows:{g.value}:{start}:c:{customer}"
    await redis.delete(key)
    fields = {
        orjson.dumps([dest, "prov", "USD"]): orjson.dumps([n, n, 0, 0, 0, 0, 0]) for dest, n in rows.items()
    }
    await redis.hset(key, mapping={**fields, "@applied": applied})
    await redis.sadd(f"{app}:idx:{g.value}:{start}:customers", customer)
    await redis.incr(f"{app}:version:{g.value}:{start}")


async def answers(redis: aioredis.Redis, app: str, reader: MirrorReader) -> dict[tuple[str, ...], list[int]]:
    """Every group, and the same answer again as the API builds it: page, row count, totals."""
    tokens = await reader.versions(BUCKETS)
    summary = await reader.summary(BUCKETS, tokens, Filters(), ("customer", "destination"))
    groups = summary.groups
    assert summary.page(None, False, 0, 1000) == sorted(groups.items())
    assert summary.total_rows == len(groups)
    assert summary.currency_totals() == currency_totals(groups.items())
    return groups


async def test_cached_answers_equal_cold_ones_after_every_change(redis: aioredis.Redis) -> None:
    app = f"reader-{uuid.uuid4().hex[:8]}"
    await redis.set(f"{app}:mirror", "first")
    cached = MirrorReader(redis, app, cache_rows=100_000)

    async def check() -> dict[tuple[str, ...], list[int]]:
        cold = await answers(redis, app, MirrorReader(redis, app, cache_rows=0))
        assert await answers(redis, app, cached) == cold
        return cold

    await write(redis, app, BUCKETS[0], "acme", {"France": 1}, applied=5)
    await write(redis, app, BUCKETS[2], "acme", {"France": 2, "Peru": 1}, applied=9)
    await write(redis, app, BUCKETS[2], "beta", {"France": 4}, applied=10)
    assert (await check())[("acme", "France", "USD")][0] == 3

    await write(redis, app, BUCKETS[2], "beta", {"France": 5, "Chad": 1}, applied=11)  # the newest moves
    assert (await check())[("beta", "France", "USD")][0] == 5
    await write(redis, app, BUCKETS[2], "gamma", {"Peru": 7}, applied=12)  # a new customer
    await write(redis, app, BUCKETS[0], "acme", {"France": 3}, applied=13)  # a late CDR in an old bucket
    assert (await check())[("acme", "France", "USD")][0] == 5
    await redis.delete(f"{app}:rows:d:{BUCKETS[2][1]}:c:acme")  # expired, still in the index
    await redis.incr(f"{app}:version:d:{BUCKETS[2][1]}")
    assert (await check())[("acme", "France", "USD")][0] == 3

    # Redis emptied and refilled by the worker: versions start again, the marker is new.
    await redis.delete(*[key async for key in redis.scan_iter(f"{app}:*")])
    await redis.set(f"{app}:mirror", "second")
    await write(redis, app, BUCKETS[2], "beta", {"France": 5, "Chad": 1}, applied=11)
    assert await check() == {
        ("beta", "Chad", "USD"): [1, 1, 0, 0, 0, 0, 0],
        ("beta", "France", "USD"): [5, 5, 0, 0, 0, 0, 0],
    }
