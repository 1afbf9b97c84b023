"""Latency of ``GET /v1/breakout`` over a month of a large deployment, one API process.

    .venv/bin/python bench/api.py [--customers 1000] [--destinations 300] [--days 31] [--requests 300]

Starts Redis through scripts/redis.sh (or uses BREAKOUT_REDIS), writes ``--days`` whole
UTC days through the worker's own Redis mirror (``streams.mirror``): every customer
calls its own ~30 of the ``--destinations`` destinations, 20 of them each day, through
one or two providers (about 30,000 rows a day, 930,000 for a month). Then it starts
``breakout api`` as a subprocess and times, over HTTP, the report for the whole month:

* all rows (default grouping customer x destination, first page of 1,000 rows, totals
  over everything) and one destination's rows;
* ``warm``: nothing changed between requests; ``live``: before each request the newest
  day's bucket is rewritten, as a worker does every second during live traffic.

The baseline is the same API with its cache off (``BREAKOUT_API_CACHE_ROWS=0``), every
request reading and summing every bucket; ratios are baseline p50 / p50.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from breakout.auth import ADMIN, key_entry, new_key  # noqa: E402
from breakout.buckets import Granularity, Retention  # noqa: E402
from breakout.ledger import BucketKey, CustomerBucket, row_id  # noqa: E402
from breakout.redis_layout import Layout, decode_rows, encode_counters, encode_row_field  # noqa: E402
from breakout.settings import load_settings  # noqa: E402
from streams.mirror import RedisMirror  # noqa: E402

DAY = 86400
D = Granularity.DAY


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def on_redis(prefix: str, work: Callable[[str], Coroutine[Any, Any, None]]) -> None:
    """Run ``work(redis_url)`` on BREAKOUT_REDIS, or else on a Redis started through
    scripts/redis.sh (its files in a temporary directory named ``prefix``…) and stopped after."""
    redis_url = os.environ.get("BREAKOUT_REDIS")
    if redis_url:
        asyncio.run(work(redis_url))
        return
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    port = free_port()
    subprocess.run([str(ROOT / "scripts" / "redis.sh"), "start", str(port), str(directory)], check=True)
    try:
        asyncio.run(work(f"redis://127.0.0.1:{port}/0"))
    finally:
        subprocess.run([str(ROOT / "scripts" / "redis.sh"), "stop", str(directory)], check=False)


def day_rows(
    rng: random.Random, customer: int, destinations: list[str]
) -> dict[tuple[str, str, str], list[int]]:
    """One customer's rows of one day: 20 of its destinations, one or two providers each."""
    currency = "EUR" if customer % 10 == 0 else "USD"
    rows = {}
    for destination in rng.sample(destinations, 20):
        for provider in rng.sample(["carrier-a", "carrier-b", "carrier-c", "carrier-d"], rng.choice((1, 2))):
            attempts = rng.randint(1, 400)
            connected = rng.randint(0, attempts)
            duration_ms = connected * rng.randint(5_000, 300_000)
            cost = duration_ms * rng.randint(1, 200)
            rows[(destination, provider, currency)] = [
                attempts,
                connected,
                duration_ms,
                cost,
                cost + duration_ms * rng.randint(0, 50),
                rng.randint(0, 3),
                rng.randint(0, connected),
            ]
    return rows


class Month:
    """The bench's stand-in for a worker, as the mirror sees it (``streams.mirror.MirrorSource``):
    every partition owned, nothing left to write whole, stream time at the end of today."""

    def __init__(self, partitions: int, stream_ms: int) -> None:
        self.partitions = partitions
        self.stream_ms = stream_ms

    def owned(self) -> set[int]:
        return set(range(self.partitions))

    def bucket_keys(self, partitions: set[int]) -> list[BucketKey]:
        return []  # every bucket was staged and written already

    def value(self, key: BucketKey) -> CustomerBucket | None:
        return None

    def watermark(self, partition: int) -> tuple[int, int]:
        return self.stream_ms, 0


async def fill(
    redis_url: str,
    app: str,
    customers: int,
    destinations: int,
    days: int,
    *,
    through_today: bool = False,
    customer_name: Callable[[int], str] = lambda c: f"cust-{c:04d}",
) -> tuple[int, int, int]:
    """Write ``days`` whole days, ending yesterday (or today); return (first day start,
    last day start, rows written)."""
    rng = random.Random(7)
    names = [f"Destination {n:03d}" for n in range(destinations)]
    own = {c: rng.sample(names, min(30, destinations)) for c in range(customers)}
    today = int(time.time()) // DAY * DAY
    first = today - (days - 1 if through_today else days) * DAY
    # Written by the worker's own mirror (its script, chunks, epoch and watermarks), so the
    # API reads exactly what a worker would have left.
    partitions = load_settings().partitions
    mirror = RedisMirror(redis_url, app, Retention(172_800, 3_024_000, 34_560_000), Counter())
    month = Month(partitions, (today + DAY) * 1000 - 1)
    client = aioredis.from_url(redis_url)
    written = 0
    try:
        for day in range(days):
            start = first + day * DAY
            for c in range(customers):
                rows = day_rows(rng, c, own[c])
                written += len(rows)
                bucket = CustomerBucket(1, {row_id(*row): counters for row, counters in rows.items()})
                mirror.stage(BucketKey(c % partitions, D, start, customer_name(c)), bucket, None)
            await mirror.flush(client, month)
    finally:
        await client.aclose()
    return first, first + (days - 1) * DAY, written


class Api:
    """``breakout api`` in a subprocess."""

    def __init__(self, redis_url: str, app: str, key: str, cache_rows: int) -> None:
        self.port = free_port()
        env = dict(
            os.environ,
            BREAKOUT_REDIS=redis_url,
            BREAKOUT_APP_ID=app,
            BREAKOUT_API_PORT=str(self.port),
            BREAKOUT_API_KEYS=key_entry(key, ADMIN),
            BREAKOUT_API_CACHE_ROWS=str(cache_rows),
            BREAKOUT_LOG_LEVEL="warning",
        )
        self.process = subprocess.Popen([sys.executable, "-m", "cli", "api"], env=env, cwd=ROOT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the API did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


async def touch_newest(redis_url: str, app: str, start: int) -> None:
    """What a worker's flush does to the newest bucket during live traffic: rows and version move."""
    client = aioredis.from_url(redis_url)
    layout = Layout(app)
    try:
        key = layout.customer_rows(D, start, "cust-0001")
        fields: dict[bytes, bytes] = await client.hgetall(key)  # type: ignore[assignment]
        destination, provider, currency, counters = decode_rows(fields)[0]
        counters[0] += 1
        await client.hset(key, encode_row_field(destination, provider, currency), encode_counters(counters))
        await client.incr(layout.version(D, start))
    finally:
        await client.aclose()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(
    api: Api, key: str, params: dict[str, str], requests: int, live: tuple[str, str, int] | None
) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(
        base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    ) as http:
        for n in range(requests + 2):
            if live is not None:
                await touch_newest(*live)
            began = time.perf_counter()
            response = await http.get("/v1/breakout", params=params)
            elapsed = time.perf_counter() - began
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
            if n >= 2:  # the first two fill the cache
                latencies.append(elapsed * 1000)
    return latencies


async def run(args: argparse.Namespace, redis_url: str) -> None:
    app = f"bench-api-{uuid.uuid4().hex[:8]}"
    key = new_key()
    began = time.perf_counter()
    first, last, written = await fill(redis_url, app, args.customers, args.destinations, args.days)
    print(
        f"mirrored {written:,} rows ({args.customers} customers x {args.destinations} destinations, "
        f"{args.days} days) in {time.perf_counter() - began:.0f} s"
    )
    span = {
        "from": time.strftime("%Y-%m-%d", time.gmtime(first)),
        "to": time.strftime("%Y-%m-%d", time.gmtime(last)),
    }
    cases = {"all rows": span, "one destination": span | {"destination": "Destination 007"}}
    live = (redis_url, app, last)
    results: dict[tuple[str, str], list[float]] = {}
    baseline = Api(redis_url, app, key, cache_rows=0)
    try:
        for case, params in cases.items():
            results[(case, "baseline")] = await measure(baseline, key, params, args.baseline_requests, None)
    finally:
        baseline.stop()
    api = Api(redis_url, app, key, cache_rows=2_000_000)
    try:
        for case, params in cases.items():
            results[(case, "warm")] = await measure(api, key, params, args.requests, None)
            results[(case, "live")] = await measure(api, key, params, args.requests, live)
    finally:
        api.stop()
    print(f"{'case':<17}{'mode':<10}{'requests':>9}{'p50 ms':>10}{'p99 ms':>10}{'vs baseline p50':>17}")
    for (case, mode), latencies in results.items():
        p50 = statistics.median(latencies)
        base = statistics.median(results[(case, "baseline")])
        print(
            f"{case:<17}{mode:<10}{len(latencies):>9}{p50:>10.1f}{percentile(latencies, 0.99):>10.1f}"
            f"{base / p50:>16.1f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--destinations", type=int, default=300)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--baseline-requests", type=int, default=10)
    args = parser.parse_args()
    on_redis("bench-api-", lambda redis_url: run(args, redis_url))


if __name__ == "__main__":
    main()
