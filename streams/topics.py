"""Creates the topics Breakout reads and writes, and reads the size limit the broker enforces on each."""

from __future__ import annotations

import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError, for_code

from breakout.settings import Settings

MAX_MESSAGE_BYTES = "max.message.bytes"
KAFKA_DEFAULT = 1_048_588  # Apache Kafka's default max.message.bytes

log = logging.getLogger(__name__)


async def ensure_topics(settings: Settings, names: list[str], compacted: tuple[str, ...] = ()) -> None:
    """Create each missing topic with the configured partitions and replication; those
    named in ``compacted`` with ``cleanup.policy=compact``.

    A source topic that does not exist yet would leave the consumer subscribed to
    nothing until its next metadata refresh, so the worker creates it up front. So it
    does the tables' changelogs, which Faust would otherwise create as it starts: two
    workers starting at once then raced, one seeing the other's new changelog with no
    partitions yet in its metadata and stopping on Faust's ``PartitionsMismatch``.
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
                    [
                        NewTopic(
                            name,
                            settings.partitions,
                            settings.replication,
                            topic_configs={"cleanup.policy": "compact"} if name in compacted else {},
                        )
                        for name in missing
                    ]
                )
    finally:
        await admin.close()


async def max_message_bytes(settings: Settings, names: list[str]) -> dict[str, int]:
    """Each topic's ``max.message.bytes``: the largest record batch the broker accepts for it.

    Read from the broker (the topic's own setting, or the broker's default it inherits): a
    message over it is refused, and a refused send stops the ingest. A broker that cannot
    describe configs (the embedded demo broker) gets Apache Kafka's default, with a warning.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, {MAX_MESSAGE_BYTES: None}) for name in names]
        )
    except KafkaConnectionError as exc:
        log.warning(
            "the broker does not describe topic configs (%r): assuming %s=%d",
            exc,
            MAX_MESSAGE_BYTES,
            KAFKA_DEFAULT,
        )
        return dict.fromkeys(names, KAFKA_DEFAULT)
    finally:
        await admin.close()
    limits: dict[str, int] = {}
    for response in responses:
        for error_code, _message, _type, name, entries in response.resources:
            if error_code:
                raise for_code(error_code)(f"describing topic {name}")
            limits[name] = next(int(entry[1]) for entry in entries if entry[0] == MAX_MESSAGE_BYTES)
    return limits
