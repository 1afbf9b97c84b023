"""Reports consumer lag per partition to Redis, so a worker that is alive but stuck shows.

A worker can stay up while making no progress (a hung stop, a task waiting forever).
Every ``REPORT_SECONDS`` this task asks the broker — through a client of its own, not the
consumers that may be the stuck part — for the log-end offsets of the partitions this
worker works on, and compares them with how far each step has got: for the CDR topic,
the offsets the ingest step has committed (they stop moving while any of its steps
hangs); for the internal topic, the offsets the aggregator has applied (the agent
acknowledges a quiet partition's last messages only at its next table flush, so the
committed offset could stay behind for good). It writes each with when that progress
last moved (``breakout.redis_layout.Lag``). Readers call a partition stalled when its lag
has not shrunk for a minute, and stalled when no report is fresh: a partition no worker
works on, or a blocked event loop. The same success touches ``<data dir>/heartbeat``, for a
supervisor that can only look at files.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from breakout.redis_client import REDIS_ERRORS, Client, connect
from breakout.redis_layout import Lag, Layout
from breakout.settings import Settings
from streams.ingest import normalized_topic

log = logging.getLogger(__name__)

REPORT_SECONDS = 5.0
HEARTBEAT_FILE = "heartbeat"


class LagReporter:
    """The loop above; remembers per partition when its committed offset last moved."""

    def __init__(
        self, settings: Settings, ingested: dict[int, int], applied: Callable[[], dict[int, int]]
    ) -> None:
        self.settings = settings
        # Touched after each report that reached the broker and Redis: a container
        # healthcheck reads its age (docker-compose.yml).
        self.heartbeat = settings.data_dir / HEARTBEAT_FILE
        self.ingested = ingested  # CDR-topic partition assigned here → offset committed
        self.applied = applied  # owned internal-topic partition → next offset to apply
        self.layout = Layout(settings.app_id)
        # (group's topic, partition) → (committed offset, when it last moved or the lag was 0)
        self._moved: dict[tuple[str, int], tuple[int, int]] = {}

    def lags(
        self, ends: dict[tuple[str, int], int], committed: dict[tuple[str, int], int], now_ms: int
    ) -> list[Lag]:
        """One ``Lag`` per partition from the broker's end and committed offsets (-1: none yet)."""
        found = []
        for (topic, partition), end in sorted(ends.items()):
            offset = committed.get((topic, partition), -1)
            before = self._moved.get((topic, partition))
            if before is None or before[0] != offset or end <= max(offset, 0):
                self._moved[(topic, partition)] = before = (offset, now_ms)
            found.append(Lag(topic, partition, end, max(offset, 0), before[1], now_ms))
        return found

    async def run(self, stopping: Callable[[], bool]) -> None:
        """A report every ``REPORT_SECONDS`` until the worker stops (``stopping``: also when
        a timeout here swallowed the task's cancellation, ``streams.alerts.AlertRunner.run``)."""
        settings = self.settings
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka, enable_auto_commit=False)
        client = connect(settings.redis, socket_timeout=5, socket_connect_timeout=2)
        await consumer.start()
        try:
            while not stopping():
                try:
                    await asyncio.wait_for(self._report(consumer, client), REPORT_SECONDS * 2)
                    self.heartbeat.touch()
                except (KafkaError, TimeoutError, *REDIS_ERRORS) as exc:
                    log.warning("lag report failed: %r", exc)
                await asyncio.sleep(REPORT_SECONDS)
        finally:
            await client.aclose()
            await consumer.stop()

    async def _report(self, consumer: AIOKafkaConsumer, client: Client) -> None:
        settings = self.settings
        internal = normalized_topic(settings)
        progress = {(settings.topic, p): offset for p, offset in self.ingested.items()}
        progress |= {(internal, p): offset for p, offset in self.applied().items()}
        if not progress:
            return
        partitions = [TopicPartition(topic, p) for topic, p in progress]
        ends = {(tp.topic, tp.partition): end for tp, end in (await consumer.end_offsets(partitions)).items()}
        lags = self.lags(ends, progress, int(time.time() * 1000))
        # No expiry: when every worker is gone, their last, ageing report is what says so.
        await client.hset(self.layout.lag, mapping={lag.field(): lag.encode() for lag in lags})
