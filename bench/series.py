"""Latency of ``GET /v1/series`` over a month of hours of a large deployment, one API process.

    .venv/bin/python bench/series.py [--customers 1000] [--destinations 300] [--days 31] [--per-hour 3]
                                     [--requests 300]

Starts Redis through scripts/redis.sh (or uses BREAKOUT_REDIS), writes ``--days`` whole UTC
days of hour buckets, the last one today, through the worker's own Redis mirror
(``streams.mirror``): every customer calls its own ~30 of the ``--destinations``
destinations, ``--per-hour`` of them each hour, through one or two providers (about 4,500
rows an hour, 3.3 M for 31 days), every row with all its counters (NER, PDD, short calls,
SIP codes). Then it starts ``breakout api`` as a subprocess and times, over HTTP, one
destination's series for the whole range at hour resolution (744 points for 31 days):

* ``warm``: nothing changed between requests; ``live``: before each request one row of the
  newest hour of that destination is rewritten (its destination hash, its customer hash,
  the bucket's version), as a worker's flush does during live traffic.

Every answer is checked: 200, one point per hour, and the points' attempts add up to what
was written for the destination. The baseline is the same API with its cache off
(``BREAKOUT_API_CACHE_ROWS=0``), every request reading and summing every hour; ratios are
baseline p50 / p50. The target (issue 14): p99 <= 20 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.api import Api, Month, on_redis, percentile  # noqa: E402
from breakout.aggregate import (  # noqa: E402
    ATTEMPTS,
    CONNECTED,
    CUSTOMER_CHARGE,
    DTMF,
    DURATION_MS,
    EFFECTIVE,
    PDD_CALLS,
    PDD_MS,
    PENDING,
    PROVIDER_CHARGE,
    SHORT_CALLS,
    WIDTH,
    sip_slot,
)
from breakout.auth import new_key  # noqa: E402
from breakout.buckets import Granularity, Retention  # noqa: E402
from breakout.ledger import BucketKey, CustomerBucket, row_id  # noqa: E402
from breakout.redis_layout import Layout, decode_rows, encode_counters, encode_row_field  # noqa: E402
from breakout.settings import load_settings  # noqa: E402
from streams.mirror import RedisMirror  # noqa: E402

DAY = 86400
HOUR = 3600
H = Granularity.HOUR
DESTINATION = "Destination 007"
METRICS = "attempts,asr,ner,acd,pdd"
PROVIDERS = ["carrier-a", "carrier-b", "carrier-c", "carrier-d"]
FAILURES = [sip_slot(code) for code in (404, 480, 486, 487, 503, 603)]
SUCCESS = sip_slot(200)
TARGET_P99_MS = 20.0


def counters(rng: random.Random) -> list[int]:
    """One row's hour: plausible values for every counter (effective >= connected, the SIP
    codes adding up to at most the attempts, the rest of them without a code)."""
    randint = rng.randint
    attempts = randint(1, 60)
    connected = randint(0, attempts)
    duration_ms = connected * randint(5_000, 300_000)
    cost = duration_ms * randint(1, 200)
    pdd_calls = randint(connected, attempts)
    row = [0] * WIDTH
    row[ATTEMPTS] = attempts
    row[CONNECTED] = connected
    row[DURATION_MS] = duration_ms
    row[PROVIDER_CHARGE] = cost
    row[CUSTOMER_CHARGE] = cost + duration_ms * randint(0, 50)
    row[PENDING] = randint(0, 1)
    row[DTMF] = randint(0, connected)
    row[EFFECTIVE] = randint(connected, attempts)
    row[PDD_MS] = pdd_calls * randint(800, 6_000)
    row[PDD_CALLS] = pdd_calls
    row[SHORT_CALLS] = randint(0, connected // 4)
    row[SUCCESS] = connected
    failed = attempts - connected
    first, second = rng.sample(FAILURES, 2)
    row[first] = randint(0, failed)
    row[second] = randint(0, failed - row[first])
    return row


@dataclass
class Filled:
    first: int  # the first day's start (epoch s)
    written: int  # rows written
    attempts: int  # attempts written for DESTINATION
    newest: int  # the newest hour that holds DESTINATION's rows


async def fill(redis_url: str, app: str, args: argparse.Namespace) -> Filled:
    """Write ``args.days`` days of hour buckets, the last day today, hour after hour."""
    rng = random.Random(7)
    names = [f"Destination {n:03d}" for n in range(args.destinations)]
    own = {c: rng.sample(names, min(30, len(names))) for c in range(args.customers)}
    currency = {c: "EUR" if c % 10 == 0 else "USD" for c in range(args.customers)}
    today = int(time.time()) // DAY * DAY
    first = today - (args.days - 1) * DAY
    settings = load_settings()
    partitions = settings.partitions
    retention = Retention(settings.minute_retention, settings.hour_retention, settings.day_retention)
    # Written by the worker's own mirror (its script, chunks, epoch and watermarks), so the
    # API reads exactly what a worker would have left; stream time at the end of today.
    mirror = RedisMirror(redis_url, app, retention, Counter())
    month = Month(partitions, (today + DAY) * 1000 - 1)
    client = aioredis.from_url(redis_url)
    filled = Filled(first, 0, 0, first)
    began = time.perf_counter()
    try:
        for hour in range(args.days * 24):
            start = first + hour * HOUR
            for c in range(args.customers):
                rows: dict[str, list[int]] = {}
                for destination in rng.sample(own[c], args.per_hour):
                    for provider in rng.sample(PROVIDERS, rng.choice((1, 2))):
                        values = counters(rng)
                        rows[row_id(destination, provider, currency[c])] = values
                        if destination == DESTINATION:
                            filled.attempts += values[ATTEMPTS]
                            filled.newest = start
                filled.written += len(rows)
                mirror.stage(
                    BucketKey(c % partitions, H, start, f"cust-{c:04d}"), CustomerBucket(1, rows), None
                )
            await mirror.flush(client, month)
            if hour % 24 == 23:
                print(
                    f"  day {hour // 24 + 1}/{args.days}: {filled.written:,} rows, "
                    f"{time.perf_counter() - began:.0f} s",
                    flush=True,
                )
    finally:
        await client.aclose()
    return filled


class Live:
    """What a worker's flush does to the newest hour of the destination during live traffic:
    one row rewritten in the destination hash and in its customer's hash (whose ``@applied``
    moves), and the bucket's version bumped."""

    def __init__(self, redis_url: str, app: str, start: int) -> None:
        self.client = aioredis.from_url(redis_url)
        self.layout = Layout(app)
        self.start = start
        self.added = 0  # attempts added to DESTINATION by the rewrites

    async def touch(self) -> None:
        layout, start = self.layout, self.start
        key = layout.destination_rows(H, start, DESTINATION)
        fields: dict[bytes, bytes] = await self.client.hgetall(key)  # type: ignore[assignment]
        customer, provider, currency, values = min(decode_rows(fields))
        values[ATTEMPTS] += 1  # an attempt without a SIP code
        encoded = encode_counters(values)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, encode_row_field(customer, provider, currency), encoded)
        customer_key = layout.customer_rows(H, start, customer)
        pipe.hset(customer_key, encode_row_field(DESTINATION, provider, currency), encoded)
        pipe.hincrby(customer_key, "@applied", 1)
        pipe.incr(layout.version(H, start))
        await pipe.execute()
        self.added += 1

    async def close(self) -> None:
        await self.client.aclose()


async def measure(
    api: Api, key: str, params: dict[str, str], requests: int, points: int, filled: Filled, live: Live | None
) -> list[float]:
    """Latencies in ms of ``requests`` series requests, after two that fill the cache; each
    answer checked against what was written."""
    latencies = []
    async with httpx.AsyncClient(
        base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    ) as http:
        for n in range(requests + 2):
            if live is not None:
                await live.touch()
            began = time.perf_counter()
            response = await http.get("/v1/series", params=params)
            elapsed = time.perf_counter() - began
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
            body = response.json()
            expected = filled.attempts + (live.added if live is not None else 0)
            got = sum(p["attempts"] for p in body["points"])
            if len(body["points"]) != points or got != expected:
                raise RuntimeError(
                    f"wrong answer: {len(body['points'])} points (expected {points}), "
                    f"{got:,} attempts (expected {expected:,})"
                )
            if n >= 2:  # the first two fill the cache
                latencies.append(elapsed * 1000)
    return latencies


async def run(args: argparse.Namespace, redis_url: str) -> None:
    app = f"bench-series-{uuid.uuid4().hex[:8]}"
    key = new_key()
    began = time.perf_counter()
    filled = await fill(redis_url, app, args)
    client = aioredis.from_url(redis_url)
    memory = (await client.info("memory"))["used_memory_human"]
    await client.aclose()
    print(
        f"mirrored {filled.written:,} rows ({args.customers} customers x {args.destinations} destinations, "
        f"{args.per_hour} per hour, {args.days} days of hours) in {time.perf_counter() - began:.0f} s; "
        f"Redis holds {memory}; {DESTINATION}: {filled.attempts:,} attempts"
    )
    last = filled.first + (args.days - 1) * DAY
    params = {
        "from": time.strftime("%Y-%m-%d", time.gmtime(filled.first)),
        "to": time.strftime("%Y-%m-%d", time.gmtime(last)),
        "resolution": "hour",
        "destination": DESTINATION,
        "metric": METRICS,
    }
    points = args.days * 24
    case = f"{DESTINATION}, hour"
    results: dict[str, list[float]] = {}
    baseline = Api(redis_url, app, key, cache_rows=0)
    try:
        results["baseline"] = await measure(
            baseline, key, params, args.baseline_requests, points, filled, None
        )
    finally:
        baseline.stop()
    api = Api(redis_url, app, key, cache_rows=load_settings().api_cache_rows)
    live = Live(redis_url, app, filled.newest)
    try:
        results["warm"] = await measure(api, key, params, args.requests, points, filled, None)
        results["live"] = await measure(api, key, params, args.requests, points, filled, live)
    finally:
        api.stop()
        await live.close()
    print(f"GET /v1/series?{httpx.QueryParams(params)} ({points} points)")
    print(
        f"{'case':<26}{'mode':<10}{'requests':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
        f"{'baseline p50 / p50':>20}"
    )
    base = statistics.median(results["baseline"])
    for mode, latencies in results.items():
        p50 = statistics.median(latencies)
        print(
            f"{case:<26}{mode:<10}{len(latencies):>9}{p50:>9.1f}{percentile(latencies, 0.9):>9.1f}"
            f"{percentile(latencies, 0.99):>9.1f}{base / p50:>19.1f}x"
        )
    worst = max(percentile(results[mode], 0.99) for mode in ("warm", "live"))
    verdict = "met" if worst <= TARGET_P99_MS else "NOT met"
    print(f"target: p99 <= {TARGET_P99_MS:.0f} ms warm and live: {verdict} (worst p99 {worst:.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--destinations", type=int, default=300)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--per-hour", type=int, default=3, help="destinations each customer calls an hour")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--baseline-requests", type=int, default=50)
    args = parser.parse_args()
    on_redis("bench-series-", lambda redis_url: run(args, redis_url))


if __name__ == "__main__":
    main()
