"""The read API's cache against real Redis: after any write it answers like a cold read.

The worker's writes are imitated key by key (docs/redis-layout.md), so each kind of change
— a customer's rows move, a customer appears, a customer's hash expires, Redis is emptied
and refilled — can be made on purpose between two reads. Rows are read only from a whole
mirror, and a mirror emptied between the versions and the rows is not read as a short one.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import pytest

from api.app import create_app
from api.reader import IncompleteMirror, MirrorReader
from breakout.aggregate import widened
from breakout.auth import ADMIN, key_entry, new_key
from breakout.buckets import Granularity
from breakout.redis_client import Client
from breakout.redis_layout import Layout
from breakout.settings import Settings, load_settings
from breakout.snapshot import Filters, currency_totals
from breakout.timerange import Bucket
from tests.integration.handmade import empty, mark_whole, set_epoch, write_rows

pytestmark = [pytest.mark.integration, pytest.mark.each_redis]

DAY = 86400
BUCKETS: list[Bucket] = [(Granularity.DAY, 1_790_000_000 // DAY * DAY + n * DAY) for n in range(3)]
PARTITIONS = 4


async def write(
    redis: Client, layout: Layout, bucket: Bucket, customer: str, rows: dict[str, int], applied: int
) -> None:
    """One customer-bucket: ``n`` connected calls to each destination, through one provider."""
    counters = {(dest, "prov", "USD"): [n, n, 0, 0, 0, 0, 0] for dest, n in rows.items()}
    await write_rows(redis, layout, bucket, customer, counters, applied)


def reader_of(redis: Client, layout: Layout, cache_rows: int) -> MirrorReader:
    return MirrorReader(redis, layout, PARTITIONS, cache_rows)


async def answers(redis: Client, reader: MirrorReader) -> dict[tuple[str, ...], list[int]]:
    """Every group, and the same answer again as the API builds it: page, row count, totals."""
    tokens = await reader.versions(BUCKETS, await reader.freshness())
    summary = await reader.summary(BUCKETS, tokens, Filters(), ("customer", "destination"))
    groups = summary.groups
    assert summary.page(None, False, 0, 1000) == sorted(groups.items())
    assert summary.total_rows == len(groups)
    assert summary.currency_totals() == currency_totals(groups.items())
    return groups


async def test_cached_answers_equal_cold_ones_after_every_change(redis: Client) -> None:
    layout = Layout(f"reader-{uuid.uuid4().hex[:8]}")
    await mark_whole(redis, layout, PARTITIONS, event_ms=BUCKETS[2][1] * 1000, epoch="first")
    cached = reader_of(redis, layout, cache_rows=100_000)

    async def check() -> dict[tuple[str, ...], list[int]]:
        cold = await answers(redis, reader_of(redis, layout, cache_rows=0))
        assert await answers(redis, cached) == cold
        return cold

    await write(redis, layout, BUCKETS[0], "acme", {"France": 1}, applied=5)
    await write(redis, layout, BUCKETS[2], "acme", {"France": 2, "Peru": 1}, applied=9)
    await write(redis, layout, BUCKETS[2], "beta", {"France": 4}, applied=10)
    assert (await check())[("acme", "France", "USD")][0] == 3

    await write(redis, layout, BUCKETS[2], "beta", {"France": 5, "Chad": 1}, applied=11)  # the newest moves
    assert (await check())[("beta", "France", "USD")][0] == 5
    await write(redis, layout, BUCKETS[2], "gamma", {"Peru": 7}, applied=12)  # a new customer
    await write(redis, layout, BUCKETS[0], "acme", {"France": 3}, applied=13)  # a late CDR in an old bucket
    assert (await check())[("acme", "France", "USD")][0] == 5
    g, start = BUCKETS[2]
    await redis.delete(layout.customer_rows(g, start, "acme"))  # expired, still in the index
    await redis.incr(layout.version(g, start))
    assert (await check())[("acme", "France", "USD")][0] == 3

    # Redis emptied and being refilled by the worker: versions start again, the marker is new,
    # and until every partition is mirrored whole in the new epoch nothing is read.
    await empty(redis, layout)
    await set_epoch(redis, layout, "second")
    await write(redis, layout, BUCKETS[2], "beta", {"France": 5, "Chad": 1}, applied=11)
    for reader in (cached, reader_of(redis, layout, cache_rows=0)):
        with pytest.raises(IncompleteMirror, match="partitions 0, 1, 2, 3"):
            await answers(redis, reader)
    await mark_whole(redis, layout, PARTITIONS, event_ms=BUCKETS[2][1] * 1000, epoch="second")
    assert await check() == {
        ("beta", "Chad", "USD"): widened([1, 1, 0, 0, 0, 0, 0]),
        ("beta", "France", "USD"): widened([5, 5, 0, 0, 0, 0, 0]),
    }


@pytest.mark.parametrize("cache_rows", [0, 100_000])
async def test_a_mirror_emptied_after_the_versions_are_read_is_not_read_as_a_short_one(
    redis: Client, cache_rows: int
) -> None:
    """Redis emptied (and the refill begun) between the versions' MGET and the rows' reads:
    the marker read again at the end of the rows' pipeline tells, so no partial sum is made."""
    layout = Layout(f"reader-{uuid.uuid4().hex[:8]}")
    await mark_whole(redis, layout, PARTITIONS, event_ms=BUCKETS[2][1] * 1000)
    for n, bucket in enumerate(BUCKETS):
        await write(redis, layout, bucket, "acme", {"France": n + 1}, applied=n)
    reader = reader_of(redis, layout, cache_rows)
    for filters in (Filters(), Filters(customers=frozenset({"acme"}))):
        tokens = await reader.versions(BUCKETS, await reader.freshness())
        await empty(redis, layout)
        await set_epoch(redis, layout, "refilling")
        await write(redis, layout, BUCKETS[2], "acme", {"France": 3}, applied=2)
        with pytest.raises(IncompleteMirror, match="being refilled"):
            await reader.summary(BUCKETS, tokens, filters, ("customer", "destination"))
        await mark_whole(redis, layout, PARTITIONS, event_ms=BUCKETS[2][1] * 1000)
        for n, bucket in enumerate(BUCKETS[:2]):
            await write(redis, layout, bucket, "acme", {"France": n + 1}, applied=n)
        assert (await answers(redis, reader))[("acme", "France", "USD")][0] == 6


@asynccontextmanager
async def serving(settings: Settings, key: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://api",
            headers={"Authorization": f"Bearer {key}"},
        ) as http,
    ):
        yield http


async def test_a_kept_series_answers_like_a_cold_one_after_every_change(
    redis: Client, settings: Settings
) -> None:
    """``/v1/series`` keeps its last points while their buckets' versions hold: a write to one
    bucket must change that step's point, and only by what was written."""
    layout = Layout(f"series-{uuid.uuid4().hex[:8]}")
    await mark_whole(redis, layout, PARTITIONS, event_ms=BUCKETS[2][1] * 1000, epoch="first")
    key = new_key()
    settings = load_settings().model_copy(
        update={"redis": settings.redis, "app_id": layout.app_id, "partitions": PARTITIONS}
        | {"api_keys": key_entry(key, ADMIN)}
    )
    days = [datetime.fromtimestamp(start, UTC).date().isoformat() for _, start in BUCKETS]
    params = {"from": days[0], "to": days[2], "resolution": "day", "metric": "attempts,connected,asr"}

    async def points(http: httpx.AsyncClient) -> list[tuple[int, int]]:
        body = (await http.get("/v1/series", params=params)).json()
        return [(point["attempts"], point["connected"]) for point in body["points"]]

    async with serving(settings, key) as kept:

        async def check() -> list[tuple[int, int]]:
            async with serving(settings.model_copy(update={"api_cache_rows": 0}), key) as cold:
                expected = await points(cold)
            assert await points(kept) == expected
            assert await points(kept) == expected  # the kept answer
            return expected

        await write(redis, layout, BUCKETS[0], "acme", {"France": 1}, applied=5)
        await write(redis, layout, BUCKETS[2], "acme", {"France": 2, "Peru": 1}, applied=9)
        assert await check() == [(1, 1), (0, 0), (3, 3)]
        await write(redis, layout, BUCKETS[2], "beta", {"France": 4}, applied=10)  # the newest moves
        assert await check() == [(1, 1), (0, 0), (7, 7)]
        await write(redis, layout, BUCKETS[1], "beta", {"Chad": 2}, applied=11)  # a late CDR
        assert await check() == [(1, 1), (2, 2), (7, 7)]
        g, start = BUCKETS[2]
        await redis.delete(layout.customer_rows(g, start, "acme"))  # expired
        await redis.incr(layout.version(g, start))
        assert await check() == [(1, 1), (2, 2), (4, 4)]
