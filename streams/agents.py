"""The worker's pipeline: the ingest step, the aggregating agent, the Redis mirror and lag tasks.

The ingest step runs in a process of its own (``streams.ingest_process``) unless
``BREAKOUT_INGEST_PROCESS`` is false.

The agent consumes the internal topic one message at a time; each message carries
thousands of validated CDRs of one partition, so Faust's per-event cost is paid per
batch. What happens to each message, in order, is ``streams.aggregator``'s to say.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from pathlib import Path
from typing import Any

import faust
import orjson
from aiokafka import TopicPartition

from breakout.destinations import load_dial_codes
from breakout.ledger import REVISION_UNKNOWN, TOO_LATE
from breakout.normalize import Record, Reject
from breakout.settings import Settings
from streams.aggregator import NUDGE, NUDGE_SECONDS, Aggregator, OutOfOrder
from streams.deadletter import dead_letter
from streams.heap import TRIM_SECONDS, heap_trimmer
from streams.idstore import MemoryIdIndex, RocksIdIndex
from streams.ingest import Ingest, normalized_topic
from streams.ingest_process import IngestProcess
from streams.lag import LagReporter
from streams.metrics import serve_metrics
from streams.mirror import RedisMirror
from streams.tables import create_tables

log = logging.getLogger(__name__)

# The longest the broker may hold the agent's consumer's fetch for data while some partition
# waits for it to return, and while none does (``fetch_without_stalls``; Faust fixes 1.5 s).
FETCH_WAIT_MS = 100
IDLE_FETCH_WAIT_MS = 1_000
# Table flushes whose changelog delivery may be under way at once before the agent waits.
MAX_DELIVERIES = 4
# After an unexpected error the worker stops through Faust; if that stop itself hangs, the
# process exits anyway after this long, so a supervisor sees it and restarts it.
CRASH_EXIT_SECONDS = 15.0
# The longest a planned stop waits for its finishing flushes (``Finish``) before it stops
# anyway: well inside a supervisor's grace period (10 s for `docker stop`), so a broker that
# is away delays a stop by this much, never makes it a kill.
FINISH_SECONDS = 5.0
FINISH_POLL_SECONDS = 0.05
# The least a planned stop waits for the mirror's last flush (``RedisMirror.settle``) after
# the agent's finishing took its own time: a flush of what the last table flushes staged.
MIRROR_SETTLE_SECONDS = 2.0
# Before a planned stop: finishes the pipeline's work so that the next worker reads none of
# it again (``register_pipeline``).
Finish = Callable[[], Awaitable[None]]


def now_ms() -> int:
    return int(time.time() * 1000)


REFUSED_DETAILS = {
    TOO_LATE: "start_time is older than every kept bucket",
    REVISION_UNKNOWN: "revision {revision} of an id with no version counted for this customer within "
    "the dedup window: a revision must keep its customer_id and follow a counted version",
}


def refused_letter(reason: str, record: Record, topic: str, partition: int, offset: int, index: int) -> bytes:
    """The dead letter of a CDR the aggregator refused: the CDR as published, and where,
    when the ingest kept its origin (it does for old CDRs and revisions, the ones the
    aggregator may refuse); else the record as the internal topic carried it, and where in
    that topic."""
    detail = REFUSED_DETAILS[reason].format(revision=record.revision)
    if record.origin is None:
        reject = Reject(reason, detail, orjson.dumps(record._replace(origin=None)), index)
        return dead_letter(reject, topic, partition, offset, now_ms())
    source_topic, source_partition, source_offset, batch_index, text = record.origin
    payload = b"" if text is None else text.encode()
    if text is None:
        detail += " (the CDR is longer than the internal topic carries: read it at its offset)"
    reject = Reject(reason, detail, payload, batch_index)
    return dead_letter(reject, source_topic, source_partition, source_offset, now_ms())


@contextlib.asynccontextmanager
async def fail_stop(app: faust.App) -> AsyncIterator[None]:
    """Crash the whole worker on an unexpected error instead of limping on without a part.

    Faust would restart a crashed agent at the next event, acknowledging the one that
    failed; stopping the process leaves that offset uncommitted, so the restarted
    worker replays it and the ledger's offsets keep the count exact.
    """
    try:
        yield
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        await stop_worker(app, exc)
        raise


async def stop_worker(app: faust.App, exc: BaseException) -> None:
    """Stop the worker through Faust, and the process anyway if that stop hangs."""
    log.critical("stopping the worker: %r", exc, exc_info=exc)
    deadline = threading.Timer(CRASH_EXIT_SECONDS, os._exit, args=(1,))
    deadline.daemon = True
    deadline.start()
    await app.crash(exc)


def register_pipeline(app: faust.App, settings: Settings) -> Finish:
    """Attach the tables, the agent and the background tasks to ``app``; return what to
    await before a planned stop (``streams.worker``)."""
    # Read here even when the ingest runs in its own process: a bad file stops the worker
    # with its one-line error before anything starts.
    dial_codes = load_dial_codes(settings.dial_codes)
    tables = create_tables(app, settings.partitions)
    counters: Counter[str] = Counter()
    retention = settings.retention
    source = app.topic(
        normalized_topic(settings),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    source_name = source.get_topic_name()

    def assigned() -> set[int] | None:
        if app.rebalancing or app.in_recovery:
            return None  # tables may be half-recovered: nothing to read yet
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == source_name}

    if settings.worker_metrics_port:
        serve_metrics(settings.api_host, settings.worker_metrics_port, counters)
    ingest = (
        IngestProcess(settings, counters)
        if settings.ingest_process
        else Ingest(settings, dial_codes, retention, counters)
    )
    mirror = RedisMirror(
        settings.redis, settings.app_id, retention, counters, ingested=lambda: ingest.newest_event_ms
    )

    aggregator = Aggregator(
        tables,
        mirror,
        retention,
        settings.dedup_window * 1000,
        counters,
        assigned=assigned,
        deliver=tables.sends.delivered,
        ids=(
            MemoryIdIndex()
            if settings.store.startswith("memory")
            else RocksIdIndex(Path(app.conf.tabledir) / "ids", settings.id_cache_mb << 20)
        ),
        short_call_ms=settings.short_call_seconds * 1000,
        table_flush_seconds=settings.table_flush_seconds,
    )
    lag = LagReporter(settings, ingest.committed, aggregator.applied_offsets)
    dlq = app.topic(settings.dlq_topic, key_serializer="raw", value_serializer="raw")

    # Deliveries under way (steps 5-6 of the commit sequence), held until done; a failed one
    # stops the worker like any unexpected error: its messages stay unacknowledged.
    pending: set[asyncio.Future[None]] = set()

    def settle(done: asyncio.Future[None]) -> None:
        pending.discard(done)
        if not done.cancelled() and (exc := done.exception()) is not None:
            pending.add(asyncio.ensure_future(stop_worker(app, exc)))

    rewinds: dict[int, int] = {}  # partition → the offset it was last read again from

    @app.agent(source, name="aggregate")
    async def aggregate(stream: faust.StreamT[bytes]) -> AsyncIterator[Any]:
        async with fail_stop(app):
            async for event in stream.noack().events():  # type: ignore[attr-defined]
                message = event.message
                partition = message.partition
                try:
                    refused = aggregator.apply(partition, message.offset, event.value, event)
                except OutOfOrder as gap:
                    if not await close_gap(app, aggregator, counters, message.tp, gap, rewinds):
                        yield None  # dropped, unacknowledged: the partition is read again
                        continue
                    refused = aggregator.apply(partition, message.offset, event.value, event)
                for index, (reason, record) in enumerate(refused):
                    value = refused_letter(reason, record, message.topic, partition, message.offset, index)
                    key = f"{reason}|{partition}|{message.offset}|{index}".encode()
                    # Delivered before the message can be acknowledged: never lost to a crash.
                    await (await dlq.send(key=key, value=value))
                # Dead letters sent: their message's progress is stored at once, so a restart
                # does not replay it and dead-letter the same CDRs again. Refusals are rare.
                if refused or aggregator.due(partition):
                    acknowledging = asyncio.ensure_future(aggregator.flush(partition))
                    pending.add(acknowledging)
                    acknowledging.add_done_callback(settle)
                    # Back-pressure: what a flush wrote stays in memory until the broker has
                    # it (the versions, for lookups), so a backlog must not outrun delivery.
                    while len(pending) > MAX_DELIVERIES:
                        await asyncio.wait(set(pending), return_when=asyncio.FIRST_COMPLETED)
                yield None

    ingesting: list[asyncio.Task[Any]] = []

    @app.task  # type: ignore[untyped-decorator]
    async def run_ingest() -> None:
        task = asyncio.current_task()
        assert task is not None
        ingesting.append(task)
        async with fail_stop(app):
            await ingest.run()

    @app.task  # type: ignore[untyped-decorator]
    async def run_mirror() -> None:
        async with fail_stop(app):
            await mirror.run(aggregator, lambda: app.should_stop)

    @app.timer(NUDGE_SECONDS)  # type: ignore[untyped-decorator]
    async def nudge_quiet_partitions() -> None:
        """An empty message to each owned partition whose table flush waits for one
        (``Aggregator.to_nudge``): its counted CDRs are then flushed and committed."""
        owned = aggregator.owned()
        for partition in aggregator.to_nudge():
            if partition in owned:
                await source.send(value=NUDGE, partition=partition)

    @app.task  # type: ignore[untyped-decorator]
    async def run_lag_reporter() -> None:
        async with fail_stop(app):
            await lag.run(lambda: app.should_stop)

    release_heap = heap_trimmer()
    if release_heap is not None:

        @app.timer(TRIM_SECONDS)  # type: ignore[untyped-decorator]
        async def trim_heap() -> None:
            release_heap()

    async def forget_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        for tp in revoked:
            if tp.topic == source_name:
                aggregator.forget(tp.partition)

    app.on_partitions_revoked.connect(forget_revoked)  # type: ignore[arg-type]
    read_from_the_tables(app, aggregator, source_name)
    fetch_without_stalls(app)

    async def finish() -> None:
        """Stop reading CDRs, then flush each partition until its tables name every CDR it
        counted delivered (``Aggregator.finishing``), nudging it for the flushes: a stop within
        ``table_flush_seconds`` of a flush would otherwise leave the next worker that many
        seconds of messages to read again, and new CDRs waiting behind them. At most
        ``FINISH_SECONDS``; whatever is not finished then is read again, counted once. Then
        the mirror writes what those flushes staged (``RedisMirror.settle``), for at least
        ``MIRROR_SETTLE_SECONDS`` more: Redis is left whole, not part-way through a flush."""
        began = time.monotonic()
        for task in ingesting:
            task.cancel()
        if ingesting:  # its last sends are acknowledged before it ends, or never committed
            await asyncio.wait(ingesting, timeout=FINISH_SECONDS)
        aggregator.finishing = True
        while not aggregator.finished and time.monotonic() - began < FINISH_SECONDS:
            owned = aggregator.owned()
            for partition in aggregator.to_nudge():
                if partition in owned:
                    await source.send(value=NUDGE, partition=partition)
            await asyncio.sleep(FINISH_POLL_SECONDS)
        # No flush may be on its way when Faust stops its producer: a nudge sent before the
        # last check is read again by the next worker (counting nothing), not flushed now.
        aggregator.finishing = False
        if pending:
            await asyncio.wait(set(pending), timeout=max(0.1, FINISH_SECONDS - (time.monotonic() - began)))
        mirrored = True
        settling = max(MIRROR_SETTLE_SECONDS, FINISH_SECONDS - (time.monotonic() - began))
        try:
            async with asyncio.timeout(settling):
                await mirror.settle()
        except TimeoutError:
            mirrored = False
        log.info(
            "stopping: the tables %s every CDR counted, Redis %s (%.1fs)",
            "name" if aggregator.finished else "do not yet name",
            "holds all of it" if mirrored else "does not yet hold all of it",
            time.monotonic() - began,
        )

    return finish


def read_from_the_tables(app: faust.App, aggregator: Aggregator, topic: str) -> None:
    """Make every assignment read each internal-topic partition from the offset its tables
    end at (``Aggregator.resume_offset``), not from the committed offset.

    Faust seeks the assigned partitions to their committed offsets once the tables are
    recovered and before any message flows (``perform_seek``); that is the one point where
    the tables are readable and nothing has been fetched yet, so the seek is extended
    there. Why the committed offset is not enough: ``streams.aggregator``. It is also where
    the consumer stops fetching what the worker no longer reads (``fetch_only_what_is_read``).
    """
    consumer = app.consumer
    seek_to_committed = consumer.perform_seek

    async def perform_seek() -> None:
        await seek_to_committed()
        await fetch_only_what_is_read(app)
        offsets = {
            tp: aggregator.resume_offset(tp.partition) for tp in consumer.assignment() if tp.topic == topic
        }
        if offsets:
            await consumer.seek_wait(offsets)
            log.info(
                "reading %s from the offsets the tables end at: %s",
                topic,
                {tp.partition: offset for tp, offset in sorted(offsets.items())},
            )

    consumer.perform_seek = perform_seek  # type: ignore[method-assign]


async def fetch_only_what_is_read(app: faust.App) -> None:
    """Pause, in the Kafka consumer itself, the partitions a recovered worker never reads:
    its own tables' changelogs (it writes them) and the assignor's leader topic.

    Faust pauses them in its own books only, so the consumer kept asking the broker for
    every one of them with each fetch (three changelog partitions per internal one, each
    encoded and its empty answer decoded), and fetched back the first batch the worker
    wrote to each, to hold it unread. Standby changelog partitions stay fetched: they keep
    the standby tables current. A new assignment starts with nothing paused, so the recovery after each
    rebalance reads the changelogs it needs, and this runs again once it is done.
    """
    thread = app.consumer._thread  # type: ignore[attr-defined]
    consumer = thread._ensure_consumer()
    unread_topics = {*app.tables.changelog_topics, *app.consumer.randomly_assigned_topics}
    unread = unread_partitions(consumer.assignment(), unread_topics, app.assignor.assigned_standbys())
    if unread:
        await thread.call_thread(consumer.pause, *unread)


def unread_partitions(
    assigned: Iterable[TopicPartition], unread_topics: Collection[str], standbys: Collection[Any]
) -> list[TopicPartition]:
    """The ``assigned`` partitions of ``unread_topics`` that are not ``standbys``."""
    return [tp for tp in assigned if tp.topic in unread_topics and tp not in standbys]


class FetchRequestBuilder:
    """The consumer's fetcher's request builder, choosing how long the broker may hold each
    fetch (``fetch_without_stalls``)."""

    def __init__(self, fetcher: Any) -> None:
        self.fetcher = fetcher
        self.build = fetcher._get_actions_per_node

    def __call__(self, assignment: Any) -> Any:
        # A partition whose fetched messages the agent has not taken yet is left out of
        # the request, and cannot be fetched again until it returns. (A paused partition
        # keeps what was fetched before its pause, but is never fetched again anyway.)
        states = (assignment.state_value(tp) for tp in self.fetcher._records)
        held = any(state is not None and not state.paused for state in states)
        self.fetcher._fetch_max_wait_ms = FETCH_WAIT_MS if held else IDLE_FETCH_WAIT_MS
        return self.build(assignment)


def fetch_without_stalls(app: faust.App) -> None:
    """Keep the broker from holding the agent's fetches long while a partition waits for one.

    The consumer sends one fetch at a time per broker, for the partitions with nothing
    fetched and not yet taken by the agent, and the broker holds it until one of them gets
    data or the maximum wait (Faust fixes 1.5 s) has passed. A fetch that leaves out
    partitions the agent is still taking would be held that long even after the agent
    has emptied them, with their next messages waiting: under live traffic that made
    messages wait 1-1.5 s before the agent saw them, every few seconds
    (``bench/freshness.py``). So such a fetch may be held ``FETCH_WAIT_MS``; one that asks
    for every partition, whose answer nothing can be waiting behind, ``IDLE_FETCH_WAIT_MS``.
    Between bursts of live traffic, and in an idle worker, that is one fetch a second
    instead of ten (py-spy put about half of an idle worker's main process in the fetch
    loop). The builder is replaced once, when the first assignment is complete, before
    messages flow.
    """

    async def choose_fetch_wait(sender: Any, **kwargs: Any) -> None:
        fetcher = app.consumer._thread._consumer._fetcher  # type: ignore[attr-defined]
        if not isinstance(fetcher._get_actions_per_node, FetchRequestBuilder):
            fetcher._get_actions_per_node = FetchRequestBuilder(fetcher)

    app.on_rebalance_complete.connect(choose_fetch_wait)  # type: ignore[arg-type]


async def close_gap(
    app: faust.App,
    aggregator: Aggregator,
    counters: Counter[str],
    tp: Any,
    gap: OutOfOrder,
    rewinds: dict[int, int],
) -> bool:
    """Whether to apply a message that arrived past the next one expected.

    Two things make such a gap. The broker may have deleted the messages between before
    they were applied (the internal topic's retention ran out during an outage): what is
    lost is logged and counted, and reading goes on from this message (True). Or the
    consumer skipped messages it should have handed over: after a rebalance Faust lets
    messages flow before it seeks the partitions (to the committed offsets, then to the
    tables' in ``read_from_the_tables``), so messages fetched from the old position can
    reach the agent, and its fetch loop drops every message below the newest it handed
    over as read already (the scale-out test saw message 0 applied, then 2, never 1). A
    restart would cure that, reading the partition from its tables; seeking it back to
    the offset expected is the same cure without one. Every message past that offset is
    dropped, unacknowledged, seeking again, until the expected one arrives (False).
    """
    earliest = (await app.consumer.earliest_offsets(tp))[tp]
    if earliest > gap.expected:
        lost = earliest - gap.expected
        log.error(
            "partition %d: messages %d to %d of the internal topic were deleted before they were "
            "applied; their CDRs are not counted (keep the topic's retention longer than any outage)",
            gap.partition,
            gap.expected,
            earliest - 1,
        )
        counters["internal_messages_deleted"] += lost
        aggregator.skip_to(gap.partition, earliest)
        return True
    if tp not in app.consumer.assignment():
        return False  # revoked meanwhile: its next owner reads it from the tables
    if rewinds.get(gap.partition) != gap.expected:
        rewinds[gap.partition] = gap.expected
        log.warning("%s; reading the partition again from %d", gap, gap.expected)
    await app.consumer.seek_wait({tp: gap.expected})
    return False
