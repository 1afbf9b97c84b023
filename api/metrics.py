"""Prometheus metrics of the API process, plus the mirror's health and the workers' counters.

The worker counters and consumer lag live in Redis (``breakout.redis_layout``); exposing
them here gives one scrape target for the whole deployment: accepted / rejected / duplicate
CDRs, how far each consumer is behind, and whether the mirror is whole.
"""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client import Counter as PromCounter

from api.reader import MirrorHealth
from breakout.redis_client import Client
from breakout.redis_layout import Layout


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
        self.waiting = Gauge(
            "breakout_api_requests_waiting",
            "Requests waiting for a turn (BREAKOUT_API_IN_FLIGHT are worked on at once)",
            registry=self.registry,
        )
        self.refused = PromCounter(
            "breakout_api_refused_at_capacity",
            "Requests refused with 503 because BREAKOUT_API_WAITING were already waiting",
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
        self.behind = Gauge(
            "breakout_mirror_behind_seconds",
            "Seconds the newest mirrored CDR event time trails the newest the workers have ingested",
            registry=self.registry,
        )
        self.ingested_age = Gauge(
            "breakout_ingested_age_seconds",
            "Wall-clock seconds since the event time of the newest CDR the workers have ingested",
            registry=self.registry,
        )
        self.complete = Gauge(
            "breakout_mirror_complete",
            "1 when every partition is mirrored whole in the current epoch, 0 while Redis is refilled",
            registry=self.registry,
        )
        self.lag = Gauge(
            "breakout_consumer_lag",
            "Messages a worker has yet to commit, per consumed topic and partition, as last reported",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.stalled = Gauge(
            "breakout_consumer_stalled",
            "1 when a partition's consumer makes no progress with messages waiting, or stopped reporting",
            ["topic", "partition"],
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

    async def render(self, client: Client, layout: Layout, health: MirrorHealth, now_ms: int) -> bytes:
        totals: Counter[str] = Counter()
        async for key in client.scan_iter(match=layout.counters_pattern, count=1000):
            for name, count in (await client.hgetall(key)).items():
                totals[_text(name)] += int(count)
        for outcome, total in totals.items():
            self.cdrs.labels(outcome).set(total)
        # Set after the last await, so concurrent scrapes cannot interleave the clear and the sets.
        freshness = health.freshness
        if freshness.as_of_ms is not None:
            self.as_of_age.set((now_ms - freshness.as_of_ms) / 1000)
        if freshness.written_ms is not None:
            self.written_age.set((now_ms - freshness.written_ms) / 1000)
        if freshness.behind_ms is not None:
            self.behind.set(freshness.behind_ms / 1000)
        if freshness.ingested_ms is not None:
            self.ingested_age.set((now_ms - freshness.ingested_ms) / 1000)
        self.complete.set(health.completeness.complete)
        self.lag.clear()  # a partition no longer reported is no longer shown
        self.stalled.clear()
        for lag in health.lags:
            self.lag.labels(lag.topic, str(lag.partition)).set(lag.lag)
            self.stalled.labels(lag.topic, str(lag.partition)).set(lag.stalled(now_ms))
        return generate_latest(self.registry)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
