"""Builds the Faust app from settings; nothing is created at import time."""

from __future__ import annotations

import faust
from faust.types import ProducerT

from breakout.settings import Settings

# The largest record batch the worker's producer builds (Faust's default is 16 kB). aiokafka
# sends at most one batch per partition in each round trip to the broker, so a table flush's
# changelog (several MB per partition: its customer-buckets and the versions it counted)
# crossed in hundreds of round trips at 16 kB, seconds at each flush under live traffic (the
# agent's wait behind them: ``PRODUCER_BUFFER_MESSAGES``). The broker refuses a batch over the
# topic's ``max.message.bytes``, so ``run_worker`` lowers this to fit the changelogs' limit.
PRODUCER_BATCH_BYTES = 1_000_000
# Changelog messages waiting in Faust's producer buffer before its conductor holds every new
# message (Faust's default is 100). A table's writes cannot await, so Faust bounds them this
# way; but one partition's table flush puts thousands of customer-buckets and ``versions``
# entries into the buffer at once, and at 100 the agent stopped for the whole delivery of
# each flush (the flushes are bounded by ``streams.aggregator.TABLE_FLUSH_BYTES`` already).
# This still holds the agent when the broker falls behind by a few flushes.
PRODUCER_BUFFER_MESSAGES = 20_000


class App(faust.App):
    """Faust's app, handing its producer out without three turns of the event loop.

    Every message Faust sends (each table's changelog message, a dead letter) first asks
    the app for its producer. Faust's ``maybe_start_producer`` is wrapped in mode's
    ``stampede``, which awaits ``asyncio.sleep(0)`` three times per call, and Faust's
    producer buffer sends the changelog one message after the other: under live traffic,
    with the loop busy, it sent a few hundred messages a second, a table flush's changelog
    took some 10 s to reach the broker, and the agent stopped behind those deliveries
    (docs/benchmarks.md, "The changelog sent a message per turn of the loop"). The worker never runs
    in a transaction, and Faust starts the producer before the consumer, the agents and the
    tables, so nothing that sends finds it starting; one asked for before that is
    started here, as Faust's would be (``Service.start`` marks it started before it awaits
    anything, so two callers cannot both start it).
    """

    async def maybe_start_producer(self) -> ProducerT:
        producer = self.producer
        await producer.maybe_start()
        return producer


def create_app(settings: Settings, producer_batch_bytes: int = PRODUCER_BATCH_BYTES) -> faust.App:
    """A Faust app wired to the settings' broker, store and data directory.

    ``broker_rebalance_timeout`` and ``broker_session_timeout`` follow the settings because
    the embedded broker (Tansu) makes the first group join wait for half the session
    timeout. ``stream_wait_empty``
    is off because the aggregating agent acknowledges a message only once its table
    writes are done: on a rebalance or a stop, Faust must not wait for those
    acknowledgements; the unacknowledged messages are replayed and counted once.
    """
    app = App(
        settings.app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.kafka.split(",")],
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        broker_rebalance_timeout=settings.rebalance_timeout,
        broker_session_timeout=settings.session_timeout,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        producer_max_batch_size=producer_batch_bytes,
        web_enabled=False,
        autodiscover=False,
    )
    app.producer.buffer.max_messages = PRODUCER_BUFFER_MESSAGES
    return app
