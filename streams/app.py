"""Builds the Faust app from settings; nothing is created at import time."""

from __future__ import annotations

import faust

from breakout.settings import Settings


def create_app(settings: Settings) -> faust.App:
    """A Faust app wired to the settings' broker, store and data directory.

    ``broker_rebalance_timeout`` follows the settings because the embedded broker
    (Tansu) makes the first group join wait for the whole timeout.
    """
    return faust.App(
        settings.app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.kafka.split(",")],
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        broker_rebalance_timeout=settings.rebalance_timeout,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        autodiscover=False,
    )
