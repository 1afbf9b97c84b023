"""Builds the Faust app from settings; nothing is created at import time."""

from __future__ import annotations

import faust

from breakout.settings import Settings


def create_app(settings: Settings) -> faust.App:
    """A Faust app wired to the settings' broker, store and data directory.

    ``broker_rebalance_timeout`` and ``broker_session_timeout`` follow the settings because
    the embedded broker (Tansu) makes the first group join wait for half the session
    timeout. ``stream_wait_empty``
    is off because the aggregating agent acknowledges a message only once its table
    writes are done: on a rebalance or a stop, Faust must not wait for those
    acknowledgements; the unacknowledged messages are replayed and counted once.
    """
    return faust.App(
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
        web_enabled=False,
        autodiscover=False,
    )
