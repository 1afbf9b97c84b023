"""Prometheus metrics of the API process, plus the mirror's freshness and the workers' counters.

The worker counters live in Redis (one hash per worker process); exposing their sum here
gives one scrape target for the whole deployment's accepted / rejected / duplicate CDRs.
"""

from __future__ import annotations

import time
from collections import Counter

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client import Counter as PromCounter


class ApiMetrics:
    """One registry per app, so several apps in one process (tests) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = PromCounter(
            "breakout_api_requests", "Requests served", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "breakout_api_request_seconds",
            "Request latency",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.as_of_age = Gauge(
            "breakout_mirror_as_of_age_seconds",
            "Wall-clock seconds since the event time the mirror is complete up to",
            registry=self.registry,
        )
        self.written_age = Gauge(
            "breakout_mirror_written_age_seconds",
            "Seconds since a worker last wrote the mirror",
            registry=self.registry,
        )
        self.cdrs = Gauge(
            "breakout_worker_cdrs",
            "CDRs counted by the running workers since they started, by outcome",
            ["outcome"],
            registry=self.registry,
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    async def render(
        self, client: aioredis.Redis, app_id: str, as_of_ms: int | None, written_ms: int | None
    ) -> bytes:
        now = time.time()
        if as_of_ms is not None:
            self.as_of_age.set(now - as_of_ms / 1000)
        if written_ms is not None:
            self.written_age.set(now - written_ms / 1000)
        totals: Counter[str] = Counter()
        async for key in client.scan_iter(match=f"{app_id}:counters:*", count=1000):
            for name, count in (await client.hgetall(key)).items():
                totals[_text(name)] += int(count)
        for outcome, total in totals.items():
            self.cdrs.labels(outcome).set(total)
        return generate_latest(self.registry)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
