"""A mirror written by hand in the worker's layout (``breakout.redis_layout``), for read-API tests
that need Redis in one precise state: whole, emptied, a partition left from an older epoch, a
consumer that stalled. Each write is what the worker's flush writes for it, key by key.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from redis.typing import EncodableT, FieldT

from api.app import create_app
from breakout.aggregate import Counters
from breakout.auth import ADMIN, Role, key_entry, new_key
from breakout.redis_client import Client, EpochKeys, connect
from breakout.redis_layout import (
    APPLIED_FIELD,
    Lag,
    Layout,
    Watermark,
    encode_counters,
    encode_row_field,
    joined_epoch,
)
from breakout.settings import load_settings
from breakout.timerange import Bucket

# Every read that sums mirror rows over a date range: each must refuse an incomplete mirror.
RANGE_READS = [
    ("/v1/breakout", {}),
    ("/v1/breakout", {"format": "csv"}),
    ("/v1/destinations", {}),
    ("/v1/customers", {}),
    ("/v1/providers", {}),
]

Rows = dict[tuple[str, str, str], Counters]  # (destination, provider, currency) → counters


async def write_rows(
    redis: Client, layout: Layout, bucket: Bucket, customer: str, rows: Rows, applied: int
) -> None:
    """One customer-bucket: its hash (replaced whole, with ``@applied``), the destination hashes,
    both indexes, the bucket list and a new version."""
    g, start = bucket
    key = layout.customer_rows(g, start, customer)
    await redis.zadd(layout.buckets(g), {str(start): start})  # another slot: the app's
    pipe = redis.pipeline(transaction=True)  # the bucket's keys, one slot
    fields: dict[FieldT, EncodableT] = {encode_row_field(*k): encode_counters(v) for k, v in rows.items()}
    pipe.delete(key)
    pipe.hset(key, mapping=fields | {APPLIED_FIELD: applied})
    for (destination, provider, currency), counters in rows.items():
        pipe.hset(
            layout.destination_rows(g, start, destination),
            encode_row_field(customer, provider, currency),
            encode_counters(counters),
        )
        pipe.sadd(layout.destinations(g, start), destination)
    pipe.sadd(layout.customers(g, start), customer)
    pipe.incr(layout.version(g, start))
    await pipe.execute()


async def mark_whole(
    redis: Client,
    layout: Layout,
    partitions: int,
    event_ms: int,
    epoch: str | None = None,
    written_ms: int | None = None,
) -> str:
    """The epoch keys (a new epoch unless given: each key holds it, on a cluster one per shard)
    and every partition's watermark in that epoch, as the workers leave them once each has
    mirrored its partitions whole (by default, just now). Returns the epoch as joined."""
    epoch = await set_epoch(redis, layout, epoch or uuid.uuid4().hex)
    written_ms = written_ms or int(time.time() * 1000)
    await redis.hset(
        layout.watermarks,
        mapping={str(p): Watermark(event_ms, 100 + p, written_ms, epoch).encode() for p in range(partitions)},
    )
    return epoch


async def set_epoch(redis: Client, layout: Layout, value: str) -> str:
    """Every epoch key (the marker; on a cluster, one per shard) set to ``value``, as a
    worker's first flush into an empty Redis sets them; returns the epoch as joined."""
    keys = await EpochKeys(redis, layout).keys()
    for key in keys:
        await redis.set(key, value)
    return ",".join([value] * len(keys))


async def current_epoch(redis: Client, layout: Layout) -> str | None:
    """The mirror's epoch as readers see it (``breakout.redis_layout.joined_epoch``)."""
    return joined_epoch([await redis.get(key) for key in await EpochKeys(redis, layout).keys()])


async def set_watermark(redis: Client, layout: Layout, partition: int, mark: Watermark) -> None:
    await redis.hset(layout.watermarks, str(partition), mark.encode())


async def report_lag(redis: Client, layout: Layout, lag: Lag) -> None:
    """One consumed partition's lag, as a worker reports it every few seconds."""
    await redis.hset(layout.lag, lag.field(), lag.encode())


async def empty(redis: Client, layout: Layout) -> None:
    """Every key of this app gone, as after a restart without persistence or a FLUSHALL
    (the session's Redis is shared by every test, so only this app's keys are deleted)."""
    keys = [key async for key in redis.scan_iter(layout.keys_pattern, count=1000)]
    if keys:
        await redis.delete(*keys)


@dataclass(frozen=True)
class Served:
    """The read API on a hand-written mirror: its client, Redis, layout and two keys."""

    http: httpx.AsyncClient
    redis: Client
    layout: Layout
    partitions: int
    admin: dict[str, str]
    customer: dict[str, str]  # the key of customer ``acme``


@asynccontextmanager
async def serve(redis_url: str, partitions: int = 4) -> AsyncIterator[Served]:
    """A fresh app id (nothing mirrored yet) and the API reading it."""
    admin, customer = new_key(), new_key()
    settings = load_settings(
        redis=redis_url,
        app_id=f"handmade-{uuid.uuid4().hex[:10]}",
        partitions=partitions,
        api_keys=f"{key_entry(admin, ADMIN)},{key_entry(customer, Role('acme'))}",
    )
    app = create_app(settings)
    redis = connect(redis_url)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
        ):
            yield Served(
                http,
                redis,
                Layout(settings.app_id),
                partitions,
                {"Authorization": f"Bearer {admin}"},
                {"Authorization": f"Bearer {customer}"},
            )
    finally:
        await redis.aclose()
