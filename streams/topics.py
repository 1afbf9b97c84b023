"""Creates the topics Breakout reads and writes before the worker subscribes to them."""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from breakout.settings import Settings


async def ensure_topics(settings: Settings, names: list[str]) -> None:
    """Create each missing topic with the configured partitions and replication.

    A source topic that does not exist yet would leave the consumer subscribed to
    nothing until its next metadata refresh, so the worker creates it up front.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in names if name not in existing]
        if missing:
            # Another worker may create one between our list and our create: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(name, settings.partitions, settings.replication) for name in missing]
                )
    finally:
        await admin.close()
