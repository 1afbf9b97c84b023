"""Mirrors changed customer-buckets to Redis, in pipelined batches, as absolute values.

The agent only stages what changed (``stage``), in memory and coalesced per key, so
aggregation never waits for Redis; ``run`` flushes the staged set every
``FLUSH_SECONDS`` in one MULTI/EXEC, and when Redis is unreachable keeps it (newer
values replacing older ones) and retries, so the mirror catches up when Redis returns.
Writing absolute values (never HINCRBY) makes a repeated flush harmless.
See ``docs/redis-layout.md`` for the keys.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from breakout.buckets import Retention
from breakout.ledger import BucketKey, CustomerBucket

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.1
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)


def customer_key(app_id: str, key: BucketKey) -> str:
    return f"{app_id}:rows:{key.granularity.value}:{key.start}:c:{key.customer}"


def destination_key(app_id: str, key: BucketKey, destination: str) -> str:
    return f"{app_id}:rows:{key.granularity.value}:{key.start}:d:{destination}"


def index_key(app_id: str, key: BucketKey, kind: str) -> str:
    return f"{app_id}:idx:{key.granularity.value}:{key.start}:{kind}"


class RedisMirror:
    """Staged changes waiting for Redis, and the loop that writes them."""

    def __init__(self, url: str, app_id: str, retention: Retention) -> None:
        self.url = url
        self.app_id = app_id
        self.retention = retention
        self._staged: dict[BucketKey, CustomerBucket | None] = {}
        self._watermarks: dict[int, tuple[int, int]] = {}
        self.flushed_keys = 0

    def stage(self, key: BucketKey, bucket: CustomerBucket | None) -> None:
        """Remember the latest value of ``key`` (None: deleted) for the next flush."""
        self._staged[key] = bucket

    def stage_watermark(self, partition: int, stream_ms: int, offset: int) -> None:
        self._watermarks[partition] = (stream_ms, offset)

    @property
    def pending(self) -> int:
        return len(self._staged)

    async def run(self) -> None:
        client = aioredis.from_url(self.url)
        failures = 0
        try:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                if not self._staged and not self._watermarks:
                    continue
                staged, self._staged = self._staged, {}
                watermarks, self._watermarks = self._watermarks, {}
                try:
                    await self._write(client, staged, watermarks)
                except (RedisError, OSError) as exc:
                    # Keep what failed unless a newer value was staged meanwhile.
                    self._staged = staged | self._staged
                    self._watermarks = watermarks | self._watermarks
                    delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                    failures += 1
                    log.warning("Redis mirror: %s; %d keys kept, retrying in %.1fs", exc, self.pending, delay)
                    await asyncio.sleep(delay)
                else:
                    if failures:
                        log.info("Redis mirror: caught up after %d failed flushes", failures)
                    failures = 0
                    self.flushed_keys += len(staged)
        finally:
            await client.aclose()

    async def flush_now(self) -> None:
        """Write everything staged, once (used at shutdown and by tests)."""
        client = aioredis.from_url(self.url)
        try:
            staged, self._staged = self._staged, {}
            watermarks, self._watermarks = self._watermarks, {}
            await self._write(client, staged, watermarks)
        finally:
            await client.aclose()

    async def _write(
        self,
        client: aioredis.Redis,
        staged: dict[BucketKey, CustomerBucket | None],
        watermarks: dict[int, tuple[int, int]],
    ) -> None:
        app_id = self.app_id
        stream_s = max((ms for ms, _ in watermarks.values()), default=int(time.time() * 1000)) // 1000
        pipe = client.pipeline(transaction=True)
        for key, bucket in staged.items():
            c_key = customer_key(app_id, key)
            if bucket is None:
                pipe.delete(c_key)
                pipe.srem(index_key(app_id, key, "customers"), key.customer)
                continue
            ttl = max(1, self.retention.expires_at(key.granularity, key.start) - stream_s)
            pipe.hset(
                c_key,
                mapping={orjson.dumps(row_id): orjson.dumps(row) for row_id, row in bucket.rows.items()},
            )
            pipe.expire(c_key, ttl)
            destinations: set[str] = set()
            for (destination, provider, currency), row in bucket.rows.items():
                d_key = destination_key(app_id, key, destination)
                pipe.hset(d_key, orjson.dumps((key.customer, provider, currency)), orjson.dumps(row))
                if destination not in destinations:
                    destinations.add(destination)
                    pipe.expire(d_key, ttl)
            customers_key = index_key(app_id, key, "customers")
            destinations_key = index_key(app_id, key, "destinations")
            pipe.sadd(customers_key, key.customer)
            pipe.sadd(destinations_key, *destinations)
            pipe.expire(customers_key, ttl)
            pipe.expire(destinations_key, ttl)
            pipe.zadd(f"{app_id}:buckets:{key.granularity.value}", {str(key.start): key.start})
        if watermarks:
            now = int(time.time() * 1000)
            pipe.hset(
                f"{app_id}:watermark",
                mapping={
                    str(p): orjson.dumps({"event_ms": ms, "offset": offset, "written_ms": now})
                    for p, (ms, offset) in watermarks.items()
                },
            )
        await pipe.execute()
