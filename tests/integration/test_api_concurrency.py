"""Many portal users at once: identical concurrent requests, and several API processes.

Concurrent identical requests share one computation (``api.singleflight``) and the newest
bucket is regrouped only for the customers that moved (``api.newest``); each answer must
still be exactly what a cold API (cache off) answers for the versions that request read,
including when the newest bucket changes while requests are in flight. ``breakout api
--workers 2`` runs two processes with their own caches on one port: every answer, whichever
process gives it, must be the cold one after every change.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from api.alerts import feed_of
from api.app import create_app
from breakout.auth import ADMIN, Role, key_entry, new_key
from breakout.buckets import Granularity
from breakout.redis_layout import Layout
from breakout.settings import Settings, load_settings
from breakout.timerange import Bucket
from tests.integration.handmade import mark_whole, write_rows

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DAY = 86400
BUCKETS: list[Bucket] = [(Granularity.DAY, 1_790_000_000 // DAY * DAY + n * DAY) for n in range(3)]
PARTITIONS = 4
ADMIN_KEY, ACME_KEY = new_key(), new_key()
KEYS = f"{key_entry(ADMIN_KEY, ADMIN)},{key_entry(ACME_KEY, Role('acme'))}"
DAYS = [datetime.fromtimestamp(start, UTC).date().isoformat() for _, start in BUCKETS]
MONTH = {"from": DAYS[0], "to": DAYS[2]}
# (key, parameters): a portal's mix, admin reports and a customer's own month and day.
QUERIES: list[tuple[str, dict[str, str]]] = [
    (ADMIN_KEY, MONTH),
    (ADMIN_KEY, MONTH | {"group_by": "destination"}),
    (ADMIN_KEY, MONTH | {"group_by": "customer", "sort": "-attempts", "limit": "2"}),
    (ADMIN_KEY, MONTH | {"group_by": "provider", "format": "csv"}),
    (ADMIN_KEY, MONTH | {"destination": "France"}),
    (ACME_KEY, MONTH),
    (ACME_KEY, {"from": DAYS[2], "to": DAYS[2], "format": "csv"}),
]


async def write(
    redis: aioredis.Redis, layout: Layout, bucket: Bucket, customer: str, rows: dict[str, int], applied: int
) -> None:
    """One customer-bucket: ``n`` attempts to each destination, half connected, two providers."""
    counters = {
        (dest, f"prov-{n % 2}", "USD"): [n, n // 2, 1000 * n, 3 * n, 5 * n, 0, 0] for dest, n in rows.items()
    }
    await write_rows(redis, layout, bucket, customer, counters, applied)


async def remove(redis: aioredis.Redis, layout: Layout, bucket: Bucket, customer: str) -> None:
    """A customer-bucket gone, as the worker's mirror deletes one (retracted, or expired)."""
    g, start = bucket
    await redis.delete(layout.customer_rows(g, start, customer))
    await redis.srem(layout.customers(g, start), customer)
    await redis.incr(layout.version(g, start))


async def mirror(redis: aioredis.Redis) -> Layout:
    layout = Layout(f"concurrent-{uuid.uuid4().hex[:8]}")
    await mark_whole(redis, layout, PARTITIONS, event_ms=BUCKETS[2][1] * 1000)
    for n, bucket in enumerate(BUCKETS):
        await write(redis, layout, bucket, "acme", {"France": 2 + n, "Peru": 1}, applied=n)
        await write(redis, layout, bucket, "beta", {"France": 4, "Chad": n + 1}, applied=10 + n)
    return layout


def settings_of(redis_url: str, layout: Layout, cache_rows: int | None = None) -> Settings:
    update = {"redis": redis_url, "app_id": layout.app_id, "partitions": PARTITIONS, "api_keys": KEYS}
    if cache_rows is not None:
        update["api_cache_rows"] = cache_rows
    return load_settings().model_copy(update=update)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
    ):
        yield http


async def ask(http: httpx.AsyncClient, key: str, params: dict[str, str]) -> bytes:
    response = await http.get("/v1/breakout", params=params, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.content


async def cold_answers(settings: Settings) -> list[bytes]:
    async with serving(settings.model_copy(update={"api_cache_rows": 0})) as cold:
        return [await ask(cold, key, params) for key, params in QUERIES]


async def test_concurrent_identical_requests_get_the_answer_of_the_versions_they_read(
    redis: aioredis.Redis, redis_url: str
) -> None:
    layout = await mirror(redis)
    settings = settings_of(redis_url, layout)
    newest = BUCKETS[2]
    changes: list[Callable[[], Awaitable[None]]] = [
        lambda: write(redis, layout, newest, "acme", {"France": 9, "Chad": 2}, applied=20),  # moved
        lambda: write(redis, layout, newest, "gamma", {"Peru": 7}, applied=21),  # a new customer
        lambda: remove(redis, layout, newest, "beta"),  # a customer gone
        lambda: write(redis, layout, BUCKETS[0], "beta", {"Peru": 3}, applied=22),  # a late CDR
        lambda: write(redis, layout, newest, "beta", {"France": 1}, applied=23),  # back again
    ]
    async with serving(settings) as http:
        before = await cold_answers(settings)
        assert [await ask(http, key, params) for key, params in QUERIES] == before
        for change in changes:
            # Eight copies of every query in flight while the newest bucket changes under them:
            # each answers for the versions before the change or after it, never a mix.
            in_flight = [ask(http, key, params) for _ in range(8) for key, params in QUERIES]
            answers, _ = await asyncio.gather(asyncio.gather(*in_flight), change())
            after = await cold_answers(settings)
            for n, answer in enumerate(answers):
                assert answer in (before[n % len(QUERIES)], after[n % len(QUERIES)])
            # Once the change is in Redis, every request reads it.
            again = await asyncio.gather(
                *[ask(http, key, params) for _ in range(8) for key, params in QUERIES]
            )
            assert again == after * 8
            before = after


async def test_past_its_line_the_api_refuses_at_once_and_answers_the_others_exactly(
    redis: aioredis.Redis, redis_url: str
) -> None:
    layout = await mirror(redis)
    settings = settings_of(redis_url, layout).model_copy(update={"api_in_flight": 2, "api_waiting": 3})
    expected = await cold_answers(settings)
    async with serving(settings) as http:
        burst = [
            http.get("/v1/breakout", params=params, headers={"Authorization": f"Bearer {key}"})
            for _ in range(8)
            for key, params in QUERIES
        ]
        answers = await asyncio.gather(*burst)
        served = 0
        for n, answer in enumerate(answers):
            if answer.status_code == 200:
                assert answer.content == expected[n % len(QUERIES)]
                served += 1
            else:
                assert answer.status_code == 503, answer.text
                assert answer.headers["Retry-After"] == "1"
                assert answer.json()["detail"].startswith("the API is at capacity (3 requests waiting)")
        # Two at work and three in line are served, the rest of the burst refused at once.
        assert 5 <= served < len(answers)
        metrics = (await http.get("/metrics")).text
        assert f"breakout_api_refused_at_capacity_total {float(len(answers) - served)}" in metrics
        # The line drains: a request now is served.
        assert [await ask(http, key, params) for key, params in QUERIES] == expected


async def test_open_alert_streams_never_take_the_connections_reports_need(
    redis: aioredis.Redis, redis_url: str
) -> None:
    """A hundred NOC screens each hold a subscription, as many as redis-py's pool has
    connections: reports are still answered, from connections of their own."""
    layout = await mirror(redis)
    settings = settings_of(redis_url, layout)
    expected = await cold_answers(settings)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
        AsyncExitStack() as streams,
    ):
        for _ in range(100):
            await streams.enter_async_context(feed_of(app))
        assert [await ask(http, key, params) for key, params in QUERIES] == expected


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_api(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "cli", "api", "--workers", "2"], env=env, cwd=ROOT)


def serving_processes(pid: int) -> int:
    """How many of ``pid``'s children are uvicorn's worker processes (spawned by multiprocessing)."""
    count = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            count += "spawn_main" in Path(f"/proc/{child}/cmdline").read_text()
    return count


async def test_two_api_processes_serve_correct_answers_after_every_change(
    redis: aioredis.Redis, redis_url: str
) -> None:
    layout = await mirror(redis)
    settings = settings_of(redis_url, layout)
    port = free_port()
    env = dict(
        os.environ,
        BREAKOUT_REDIS=redis_url,
        BREAKOUT_APP_ID=layout.app_id,
        BREAKOUT_PARTITIONS=str(PARTITIONS),
        BREAKOUT_API_PORT=str(port),
        BREAKOUT_API_KEYS=KEYS,
        BREAKOUT_LOG_LEVEL="warning",
    )
    process = start_api(env)
    # A new connection per request, so both processes take their share.
    fresh = httpx.Limits(max_keepalive_connections=0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=fresh, timeout=30) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert process.poll() is None and time.monotonic() < deadline, "the API did not start"
                await asyncio.sleep(0.2)
            assert serving_processes(process.pid) == 2

            async def check() -> None:
                expected = await cold_answers(settings)
                for _ in range(6):
                    answers = await asyncio.gather(*[ask(http, key, params) for key, params in QUERIES])
                    assert answers == expected

            await check()
            await write(redis, layout, BUCKETS[2], "acme", {"France": 9, "Chad": 2}, applied=20)
            await check()
            await remove(redis, layout, BUCKETS[2], "beta")
            await write(redis, layout, BUCKETS[0], "gamma", {"Peru": 3}, applied=21)
            await check()
    finally:
        process.terminate()
        process.wait(30)
