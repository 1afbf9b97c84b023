"""The NOC detector's edge: minute buckets from the Redis mirror in, alerts to Kafka and Redis out.

One detector runs per deployment, in whichever worker is Faust's leader. Each round it
reads the watermark, takes every minute the watermark has completed (in order, at most
``MINUTES_PER_ROUND`` per read), lets the pure detector (``breakout.noc``) decide,
publishes the alerts to ``<app_id>.alerts`` and then records, in one Redis transaction
guarded by the cursor, the alerts, the keys' states, the counts it used and the next
minute. Whatever fails midway, the in-memory state is dropped and rebuilt from Redis, so
memory never runs ahead of what Redis says was done; a second leader (during a
rebalance) loses the cursor race and rebuilds too. An alert may then be sent twice; it
carries the same ``incident`` id both times. See ``docs/noc-alerts.md``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from redis.exceptions import WatchError

from breakout.aggregate import Counters, add, empty
from breakout.buckets import Granularity
from breakout.noc import keys
from breakout.noc.alert import Alert, key_text, parse_subject, subject_text
from breakout.noc.clock import due_minutes, effective_watermark, may_be_due
from breakout.noc.detector import Detector, KeyState
from breakout.noc.minutes import decode_minute, encode_minute
from breakout.noc.rules import Rules
from breakout.redis_client import REDIS_ERRORS, Client, EpochKeys, connect
from breakout.redis_layout import Layout, completeness, decode_rows, decode_watermarks, joined_epoch
from breakout.settings import Settings
from streams.agents import fail_stop
from streams.ingest import normalized_topic

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
MINUTES_PER_ROUND = 60
REBUILD_CHUNK = 120
HISTORY_SECONDS = 30 * 86400
SNAPSHOT_TTL_MARGIN = 3600

Send = Callable[[bytes, bytes], Awaitable[None]]
Pairs = dict[tuple[str, str], Counters]


def alerts_topic(settings: Settings) -> str:
    return f"{settings.app_id}.alerts"


async def read_minutes(client: Client, app_id: str, starts: list[int]) -> dict[int, Pairs]:
    """The row counters per (destination, provider) in each minute bucket of the mirror.

    Reads each minute's destination index and each destination's hash
    (``docs/redis-layout.md``), summing over customers and currencies: attempts and
    connected for the ASR, effective attempts for the NER, the PDD sum and count, and
    the SIP code counters for the causes.
    """
    layout = Layout(app_id)
    minute = Granularity.MINUTE
    pipe = client.pipeline(transaction=False)
    for start in starts:
        pipe.smembers(layout.destinations(minute, start))
    members = await pipe.execute()
    pipe = client.pipeline(transaction=False)
    order: list[tuple[int, str]] = []
    for start, destinations in zip(starts, members, strict=True):
        for raw in destinations:
            destination = raw.decode()
            order.append((start, destination))
            pipe.hgetall(layout.destination_rows(minute, start, destination))
    rows = await pipe.execute() if order else []
    sums: dict[int, Pairs] = {start: {} for start in starts}
    for (start, destination), fields in zip(order, rows, strict=True):
        for _, provider, _, counters in decode_rows(fields):
            total = sums[start].get((destination, provider))
            if total is None:
                total = sums[start][(destination, provider)] = empty()
            add(total, counters)
    return sums


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for index in range(0, len(items), size):
        yield items[index : index + size]


class AlertRunner:
    """The detector's rounds, its Redis client and the consumer it asks for log-end offsets."""

    def __init__(self, settings: Settings, rules: Rules, send: Send) -> None:
        self.settings = settings
        self.rules = rules
        self.send = send
        self.app_id = settings.app_id
        self.layout = Layout(settings.app_id)
        self._client: Client | None = None
        self._epoch_keys: EpochKeys | None = None
        self._offsets: AIOKafkaConsumer | None = None
        self._detector: Detector | None = None
        self._next_minute = 0

    async def run(self, leading: Callable[[], bool], stopping: Callable[[], bool]) -> None:
        """A round a second while this worker leads, until the worker stops; then close.

        ``stopping`` ends the loop as well as the task's cancellation does: a cancellation
        that arrives just as a call inside a round completes can be swallowed (Python 3.11's
        ``asyncio.wait_for``, which redis-py and aiokafka use, then returns the call's
        result), and a loop that went on would hold the worker's stop until its supervisor
        killed it.
        """
        try:
            while not stopping():
                await asyncio.sleep(TICK_SECONDS)
                if leading() and not stopping():
                    await self.tick()
        finally:
            await self.close()

    async def tick(self) -> None:
        """One round; on a Redis or Kafka error, forget the in-memory state and try again next round."""
        try:
            await self._round()
        except (KafkaError, ProducerSendError, *REDIS_ERRORS) as exc:
            if not isinstance(exc, WatchError):
                log.warning("alert detector: %r; resuming from Redis next round", exc)
            self._detector = None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._offsets is not None:
            await self._offsets.stop()

    async def _round(self) -> None:
        if self._client is None:
            self._client = connect(self.settings.redis)
            self._epoch_keys = EpochKeys(self._client, self.layout)
        client = self._client
        watermark = await self._watermark(client)
        if watermark is None:
            return
        cursor = await client.get(keys.cursor_key(self.app_id))
        if self._detector is None or cursor is None or int(cursor) != self._next_minute:
            self._detector = await self._load(client, cursor, watermark)
        detector = self._detector
        if detector is None:
            return
        settle = self.rules.detector.settle_seconds
        try:
            while minutes := due_minutes(self._next_minute, watermark, settle, MINUTES_PER_ROUND):
                counts = await read_minutes(client, self.app_id, minutes)
                alerts: list[Alert] = []
                for start in minutes:
                    alerts.extend(detector.step(start, counts[start]))
                    await asyncio.sleep(0)  # catching up: let the agents run between minutes
                emitted_ms = int(time.time() * 1000)
                documents = [orjson.dumps(alert.document(emitted_ms)) for alert in alerts]
                for alert, document in zip(alerts, documents, strict=True):
                    await self.send(key_text(alert.key).encode(), document)
                    log.info("alert %s %s: %s", alert.state, subject_text(alert.subject), document.decode())
                await self._commit(client, detector, minutes, counts, alerts, documents)
                self._next_minute = minutes[-1] + 60
        except BaseException:
            self._detector = None  # memory may be ahead of Redis: rebuild from what Redis holds
            raise

    async def _watermark(self, client: Client) -> int | None:
        """The event time every partition is mirrored up to; None while the mirror is not whole,
        or while the marks alone show that no minute is due yet (``may_be_due``).

        A mirror being refilled after Redis lost its data would show minutes short of
        calls, which the detector would take for an ASR drop.

        The marks are read before the log-end offsets: a partition whose mark reaches the
        end then had nothing unmirrored when the other partitions' marks were taken. Read
        the other way round, a partition could receive a minute's CDRs between the two
        reads, look idle, and have that minute evaluated without them while the others'
        marks moved past it (in a replay, minutes of event time pass in a moment).
        """
        if self._offsets is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka, enable_auto_commit=False)
            await consumer.start()
            self._offsets = consumer
        assert self._epoch_keys is not None
        epoch_keys = await self._epoch_keys.keys()
        pipe = client.pipeline(transaction=False)
        for key in epoch_keys:
            pipe.get(key)
        pipe.hgetall(self.layout.watermarks)
        *epoch, fields = await pipe.execute()
        watermarks = decode_watermarks(fields)
        if not completeness(joined_epoch(epoch), watermarks, self.settings.partitions).complete:
            return None
        marks = {p: (mark.event_ms, mark.offset) for p, mark in watermarks.items()}
        settle = self.rules.detector.settle_seconds
        if self._detector is not None and not may_be_due(self._next_minute, marks, settle):
            return None
        topic = normalized_topic(self.settings)
        partitions = [TopicPartition(topic, p) for p in range(self.settings.partitions)]
        ends = await self._offsets.end_offsets(partitions)
        return effective_watermark(marks, {tp.partition: end for tp, end in ends.items()})

    async def _load(self, client: Client, cursor: bytes | str | None, watermark: int) -> Detector | None:
        """A detector rebuilt from Redis: states, and the history before the cursor.

        Without a cursor (first start) the detector begins at the first minute bucket
        within one history span of the watermark, so a replay into a new deployment starts
        at its first minute whatever the replay speed.
        """
        app_id = self.app_id
        span = self.rules.detector.span_minutes * 60
        if cursor is None:
            low = watermark // 1000 // 60 * 60 - span
            first = await client.zrangebyscore(
                self.layout.buckets(Granularity.MINUTE), low, "+inf", start=0, num=1
            )
            if not first:
                return None
            await client.set(keys.cursor_key(app_id), int(cast(bytes, first[0])), nx=True)
            cursor = await client.get(keys.cursor_key(app_id))
            assert cursor is not None
        self._next_minute = int(cursor)
        states = {
            parse_subject(field): KeyState.from_record(orjson.loads(value))
            for field, value in (await client.hgetall(keys.state_key(app_id))).items()
        }
        detector = Detector(self.rules, states)
        history = list(range(self._next_minute - span, self._next_minute, 60))
        for chunk in _chunks(history, REBUILD_CHUNK):
            # Minutes already evaluated: exactly the counts used then; others: the mirror.
            saved = await client.mget([keys.snapshot_key(app_id, start) for start in chunk])
            missing = [start for start, raw in zip(chunk, saved, strict=True) if raw is None]
            mirrored = await read_minutes(client, app_id, missing) if missing else {}
            for start, raw in zip(chunk, saved, strict=True):
                detector.series.push(decode_minute(raw) if raw is not None else mirrored[start])
            await asyncio.sleep(0)
        log.info(
            "alert detector: resuming at minute %d with %d open or recent incidents",
            self._next_minute,
            len(states),
        )
        return detector

    async def _commit(
        self,
        client: Client,
        detector: Detector,
        minutes: list[int],
        counts: dict[int, Pairs],
        alerts: list[Alert],
        documents: list[bytes],
    ) -> None:
        """Record one round in one transaction, unless another leader moved the cursor meanwhile."""
        app_id = self.app_id
        span = self.rules.detector.span_minutes * 60
        cursor = keys.cursor_key(app_id)
        async with client.pipeline(transaction=True) as pipe:
            await pipe.watch(cursor)
            current = await pipe.get(cursor)
            if current is None or int(current) != self._next_minute:
                raise WatchError("another detector moved the cursor")
            pipe.multi()  # type: ignore[no-untyped-call]
            next_minute = minutes[-1] + 60
            pipe.set(cursor, next_minute)
            for start in minutes:
                pipe.set(
                    keys.snapshot_key(app_id, start),
                    encode_minute(counts[start]),
                    ex=span + SNAPSHOT_TTL_MARGIN,
                )
                pipe.delete(keys.snapshot_key(app_id, start - span))  # out of the history now
            pipe.delete(keys.state_key(app_id))
            if detector.states:
                mapping: dict[Any, Any] = {
                    subject_text(subject): orjson.dumps(state.record())
                    for subject, state in detector.states.items()
                }
                pipe.hset(keys.state_key(app_id), mapping=mapping)
            for alert, document in zip(alerts, documents, strict=True):
                if alert.state == "raised":
                    pipe.hset(keys.active_key(app_id), subject_text(alert.subject), document)
                else:
                    pipe.hdel(keys.active_key(app_id), subject_text(alert.subject))
                pipe.zadd(keys.history_key(app_id), {document: alert.detected_at * 1000})
            pipe.zremrangebyscore(keys.history_key(app_id), "-inf", (next_minute - HISTORY_SECONDS) * 1000)
            await pipe.execute()
        # Published once recorded (a cluster runs no PUBLISH inside a transaction): a
        # subscriber never sees an alert that the history does not hold.
        for document in documents:
            await client.publish(keys.events_channel(app_id), document)


def register_detector(app: faust.App, settings: Settings, rules: Rules) -> None:
    """Run the detector in the leader worker, once a second (nothing, if the rules disable it).

    A task rather than ``@app.timer(on_leader=True)``: the same leader check each second,
    plus a ``finally`` that closes the detector's connections when the worker stops
    (``AlertRunner.run``).
    """
    if not rules.detector.enabled:
        return
    topic = alerts_topic(settings)

    async def send(key: bytes, value: bytes) -> None:
        await app.producer.send_and_wait(topic, key, value, None, None, None)

    runner = AlertRunner(settings, rules, send)

    @app.task  # type: ignore[untyped-decorator]
    async def detect_noc_alerts() -> None:
        async with fail_stop(app):
            await runner.run(app.is_leader, lambda: app.should_stop)
