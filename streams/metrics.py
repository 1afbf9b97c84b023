"""The worker's own ``/metrics``: its CDR counters, scraped by Prometheus from the process.

The counters are the same ``Counter`` every step already updates (accepted, rejected by
reason, duplicates, replayed, revised); a collector reads it at scrape time, so counting
costs nothing more. They die with the process, as Prometheus expects: a worker that is
gone stops being scraped, rather than counting as running.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class CdrCounters(Collector):
    def __init__(self, counters: Counter[str]) -> None:
        self.counters = counters

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "breakout_worker_cdrs",
            "CDRs this worker process has handled since it started, by outcome",
            labels=["outcome"],
        )
        for outcome, count in sorted(self.counters.items()):
            family.add_metric([outcome], count)
        yield family


def serve_metrics(host: str, port: int, counters: Counter[str]) -> None:
    """Serve ``/metrics`` on ``host:port`` in a thread; a port in use is a warning, not a stop."""
    registry = CollectorRegistry()
    registry.register(CdrCounters(counters))
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.warning("worker metrics not served on %s:%d: %s", host, port, exc)
        return
    log.info("worker metrics on http://%s:%d/metrics", host, port)
