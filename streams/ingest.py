"""The ingest step: CDR topic → validated, destination-resolved records on the internal topic.

Faust's per-message path costs tens of microseconds before any work is done (see
``docs/operations.md``), so the public CDR topic is read here in large batches with
aiokafka directly and validated with plain functions; what comes out is a few large
messages per poll, one per partition of the internal topic, which the Faust agent
then consumes cheaply. Re-keying by customer on the way puts every CDR of a customer,
and so every re-delivery of one, on the same partition, whatever key the producer used.

The loop, in order, per poll:
1. fetch up to ``MAX_RECORDS`` messages, the broker holding each fetch up to
   ``BREAKOUT_INGEST_LINGER_MS`` for more to share the internal messages;
2. normalize each (``breakout.normalize``), refusing what breaks the contract;
3. send the records, grouped by target partition, and the dead letters;
4. wait until the broker has acknowledged every send;
5. commit the consumed offsets.
A crash anywhere before step 5 replays the poll; the agent's id index makes the
re-sent records count once.

Step 1's linger is what keeps live traffic cheap: a backlog fills a poll at once, but a
steady trickle would otherwise make each poll a handful of CDRs, and every poll costs a
fetch, an internal message per partition, a round trip for the acknowledgements and a
commit. The agent pays per internal message, not per CDR, so half a second of
waiting here turns hundreds of tiny messages a second into a few: a bounded delay, not
waiting for a batch to fill.

Nothing a message holds may stop this loop, since a restarted worker would meet the same
message again: every CDR is counted or dead-lettered, and every message sent fits the
``max.message.bytes`` the broker enforces on its topic, read from the broker at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from breakout.buckets import Retention
from breakout.cdr import FUTURE_SLACK_MS
from breakout.destinations import DialCodes
from breakout.errors import ConfigError
from breakout.normalize import MAX_RECORD_BYTES, UNPROCESSABLE, Record, internal_messages, normalize_message
from breakout.settings import Settings
from streams.deadletter import MIN_LIMIT, dead_letter
from streams.topics import max_message_bytes

log = logging.getLogger(__name__)

MAX_RECORDS = 20_000
# How long a poll waits for the fetcher: records end it at once, so this only sets how often
# an idle loop turns (and follows a new assignment).
POLL_MS = 1_000
FETCH_MIN_BYTES = 1 << 20
RECORDS_PER_MESSAGE = 5_000
# A record batch's header (61 bytes) and one record's framing (at most 21) around a value,
# plus its key, with room to spare: a value this much under its topic's limit always fits.
FRAMING_BYTES = 1024
# The aggregator applies a record a little after it is read here, when stream time may have
# moved on with CDRs read later: an hour's margin on the too-late bound covers that.
LATE_MARGIN_MS = 3_600_000
# How long one step may wait on the broker (start, sends, commit) before the clients are
# replaced; aiokafka's own request timeout is 40 s, so a healthy broker answers well within.
BROKER_WAIT_SECONDS = 60.0
CLOSE_WAIT_SECONDS = 10.0
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0)


def normalized_topic(settings: Settings) -> str:
    """The internal topic between the ingest step and the aggregating agent."""
    return f"{settings.app_id}-normalized"


def value_room(topic: str, limit: int, needed: int) -> int:
    """The largest message value ``topic`` takes under its ``limit`` (``max.message.bytes``).

    A ``ConfigError`` if that is under ``needed``, the most one record or one dead letter
    with its payload cut away can take: a worker that could not send one would stop on it.
    """
    room = limit - FRAMING_BYTES
    if room < needed:
        raise ConfigError(
            f"topic {topic}: max.message.bytes={limit} is too small, Breakout needs {needed + FRAMING_BYTES}"
        )
    return room


def target_partition(customer_id: str, partitions: int, cache: dict[str, int]) -> int:
    """A stable partition per customer (CRC-32, cached: a worker sees few customers)."""
    partition = cache.get(customer_id)
    if partition is None:
        partition = cache[customer_id] = zlib.crc32(customer_id.encode()) % partitions
    return partition


class Ingest:
    """Runs the loop above until cancelled; counts what it accepted and refused, by reason.

    Whether a CDR is too late is decided once, by the aggregating ledger from its
    partition's stream time, which can be at most ``FUTURE_SLACK_MS`` past the wall clock.
    A CDR older than that bound minus the longest ``retention`` may therefore be refused
    there: it travels with its origin, so its dead letter is the CDR as published.
    """

    def __init__(
        self,
        settings: Settings,
        dial_codes: DialCodes,
        retention: Retention,
        counters: Counter[str],
        sent: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.dial_codes = dial_codes
        self.retention = retention
        self.counters = counters
        # Called once the broker has every message of a poll, before its commit: what the
        # poll counted is final, and the agent cannot have applied its records yet.
        self.sent = sent
        self._partition_of: dict[str, int] = {}
        # Per CDR-topic partition assigned here: the offset committed so far (-1: none yet).
        # How far the ingest has got, for the lag report; it does not move while a step hangs.
        self.committed: dict[int, int] = {}
        # The newest CDR event time among the CDRs committed here: how far the worker has read.
        self.newest_event_ms: int | None = None
        self._record_room = self._dead_letter_room = 0  # set by run() from the broker's limits

    async def run(self) -> None:
        """The loop, on fresh Kafka clients whenever the broker leaves the current ones stuck.

        Kafka clients can outlive a broker restart without recovering (a group coordinator
        that is never found again: the commit then waits forever, ingesting nothing while
        the process looks alive). Every step that waits on the broker has a time limit;
        past it, or on a Kafka error, the clients are dropped and made anew, and the poll
        that was not committed is read again (its records count once, by id).
        """
        settings = self.settings
        topic = normalized_topic(settings)
        limits = await max_message_bytes(settings, [topic, settings.dlq_topic])
        self._record_room = value_room(topic, limits[topic], MAX_RECORD_BYTES)
        self._dead_letter_room = value_room(settings.dlq_topic, limits[settings.dlq_topic], MIN_LIMIT)
        failures = 0
        while True:
            try:
                await self._run_clients(limits)
            except (KafkaError, TimeoutError) as exc:
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                log.warning("ingest: %r; new Kafka clients in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    async def _run_clients(self, limits: dict[str, int]) -> None:
        settings = self.settings
        consumer = AIOKafkaConsumer(
            settings.topic,
            bootstrap_servers=settings.kafka,
            group_id=f"{settings.app_id}-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 << 20,
            fetch_max_bytes=64 << 20,
            # Step 1's linger: the broker answers a fetch once FETCH_MIN_BYTES are waiting or
            # the linger has passed, so a trickle arrives in batches without asking more often.
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=settings.ingest_linger_ms,
            rebalance_timeout_ms=settings.rebalance_timeout * 1000,
            session_timeout_ms=settings.session_timeout * 1000,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka,
            acks="all",
            linger_ms=5,
            # A batch of several messages stays within either topic's limit; a message that
            # fills a batch alone (within its own topic's room) passes the client's check.
            max_batch_size=min(limits.values()),
            max_request_size=max(limits.values()),
        )
        try:
            await asyncio.wait_for(producer.start(), BROKER_WAIT_SECONDS)
            await asyncio.wait_for(consumer.start(), BROKER_WAIT_SECONDS)
            while True:
                batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=MAX_RECORDS)
                if batches:
                    newest = await asyncio.wait_for(self._process(batches, producer), BROKER_WAIT_SECONDS)
                    self.sent()
                    await asyncio.wait_for(consumer.commit(), BROKER_WAIT_SECONDS)
                    if newest is not None and (self.newest_event_ms or 0) < newest:
                        self.newest_event_ms = newest
                    for tp, messages in batches.items():
                        self.committed[tp.partition] = messages[-1].offset + 1
                await self._follow_assignment(consumer)
        finally:
            self.committed.clear()
            for client in (consumer, producer):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.stop(), CLOSE_WAIT_SECONDS)

    async def _follow_assignment(self, consumer: AIOKafkaConsumer) -> None:
        """Keep ``committed`` to the partitions assigned here, starting each at its committed offset."""
        assigned = {tp.partition: tp for tp in consumer.assignment()}
        for partition in self.committed.keys() - assigned.keys():
            del self.committed[partition]
        for partition in assigned.keys() - self.committed.keys():
            offset = await asyncio.wait_for(consumer.committed(assigned[partition]), BROKER_WAIT_SECONDS)
            self.committed[partition] = offset if offset is not None else -1

    async def _process(
        self, batches: dict[TopicPartition, list[ConsumerRecord[Any, Any]]], producer: AIOKafkaProducer
    ) -> int | None:
        """Steps 2-4; the newest event time among the CDRs sent (None: there were none)."""
        settings = self.settings
        partitions = settings.partitions
        now_ms = int(time.time() * 1000)
        late_before_ms = now_ms + FUTURE_SLACK_MS + LATE_MARGIN_MS - self.retention.longest_kept * 1000
        by_partition: defaultdict[int, list[Record]] = defaultdict(list)
        sends = []
        newest = -1
        for tp, messages in batches.items():
            for message in messages:
                records, rejects = normalize_message(
                    message.value,
                    dial_codes=self.dial_codes,
                    default_currency=settings.currency,
                    now_ms=now_ms,
                    source=(tp.topic, tp.partition, message.offset),
                    late_before_ms=late_before_ms,
                )
                if records:
                    newest = max(newest, max(record.start_ms for record in records))
                for record in records:
                    by_partition[target_partition(record.customer_id, partitions, self._partition_of)].append(
                        record
                    )
                for reject in rejects:
                    if reject.reason == UNPROCESSABLE:
                        log.error(
                            "dead-lettered unprocessable message %s[%d]@%d: %.500s",
                            tp.topic,
                            tp.partition,
                            message.offset,
                            reject.detail,
                        )
                    self.counters[f"rejected:{reject.reason}"] += 1
                    value = dead_letter(
                        reject, tp.topic, tp.partition, message.offset, now_ms, limit=self._dead_letter_room
                    )
                    sends.append(await producer.send(settings.dlq_topic, value, key=reject.reason.encode()))
                self.counters["accepted"] += len(records)
        topic = normalized_topic(settings)
        for partition, records in by_partition.items():
            for value in internal_messages(
                records, max_records=RECORDS_PER_MESSAGE, max_bytes=self._record_room
            ):
                sends.append(await producer.send(topic, value, partition=partition))
        await asyncio.gather(*sends)
        return newest if newest >= 0 else None
