"""Reads of the NOC alerts for the API: the open incidents, the history and the live feed.

The worker's detector records every alert in Redis (``docs/noc-alerts.md``); these
functions only read. Documents are returned as published: the alert JSON with ``key``,
``incident``, ``destination``, ``provider``, ``state``, ``asr``, ``baseline_asr``,
``threshold``, ``attempts``, ``window_start``, ``window_end``, ``detected_at`` and
``emitted_at``. Works with a client made with or without ``decode_responses``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from breakout.noc.keys import active_key, events_channel, history_key


async def active_alerts(redis: aioredis.Redis, app_id: str) -> list[dict[str, Any]]:
    """The raise alert of every open incident, oldest first (then by key)."""
    documents = [orjson.loads(value) for value in await redis.hvals(active_key(app_id))]
    return sorted(documents, key=lambda document: (document["detected_at"], document["key"]))


async def alert_history(
    redis: aioredis.Redis, app_id: str, since_ms: int, *, limit: int = 1000
) -> list[dict[str, Any]]:
    """Raises and clears detected at or after ``since_ms`` (event time, epoch ms), oldest first.

    At most ``limit`` of them; the history keeps 30 days of event time.
    """
    values = await redis.zrangebyscore(history_key(app_id), since_ms, "+inf", start=0, num=limit)
    return [orjson.loads(cast(bytes | str, value)) for value in values]


async def alert_events(redis: aioredis.Redis, app_id: str) -> AsyncIterator[dict[str, Any]]:
    """Each alert as the detector records it, from now on, until the caller stops iterating.

    Redis pub/sub: alerts published while nobody listens are not replayed here; a
    client that reconnects reads ``alert_history`` for what it missed.
    """
    pubsub = redis.pubsub()
    await pubsub.subscribe(events_channel(app_id))
    try:
        async for message in pubsub.listen():
            if message["type"] == "message":
                yield orjson.loads(message["data"])
    finally:
        await pubsub.unsubscribe()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
