"""Reads of the NOC alerts for the API: the open incidents, the history and the live feed.

The worker's detector records every alert in Redis (``docs/noc-alerts.md``); these
functions only read. Documents are returned as published: the alert JSON with ``key``,
``incident``, ``metric``, ``destination``, ``provider``, ``state``, ``value``,
``baseline``, ``threshold``, ``attempts``, ``asr``, ``baseline_asr``, ``grown_causes``,
``window_start``, ``window_end``, ``detected_at`` and ``emitted_at`` (alerts recorded
before NER and PDD were watched are ASR alerts without ``metric``, ``value``,
``baseline`` and ``grown_causes``). Works with a client made with or without
``decode_responses``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import orjson
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import StreamingResponse
from redis.asyncio.cluster import RedisCluster

from api.errors import error_responses
from api.security import Caller
from breakout.auth import Role
from breakout.errors import QueryError
from breakout.noc.keys import active_key, events_channel, history_key
from breakout.query import AccessDenied
from breakout.redis_client import Client

router = APIRouter(prefix="/v1", tags=["alerts"])
KEEPALIVE_SECONDS = 15.0


async def active_alerts(redis: Client, app_id: str) -> list[dict[str, Any]]:
    """The raise alert of every open incident, oldest first (then by key, then ASR, NER, PDD)."""
    documents = [orjson.loads(value) for value in await redis.hvals(active_key(app_id))]
    return sorted(documents, key=lambda d: (d["detected_at"], d["key"], d.get("metric", "asr")))


async def alert_history(
    redis: Client, app_id: str, since_ms: int, *, limit: int = 1000
) -> list[dict[str, Any]]:
    """Raises and clears detected at or after ``since_ms`` (event time, epoch ms), oldest first.

    At most ``limit`` of them; the history keeps 30 days of event time.
    """
    values = await redis.zrangebyscore(history_key(app_id), since_ms, "+inf", start=0, num=limit)
    return [orjson.loads(cast(bytes | str, value)) for value in values]


class AlertFeed:
    """Each alert as the detector records it, from entering on.

    Subscribed before ``__aenter__`` returns, so nothing recorded after that is missed.
    Redis pub/sub does not replay: a client that reconnects reads ``alert_history`` for
    what it missed.
    """

    def __init__(self, redis: Client, app_id: str) -> None:
        self._redis = redis
        self._pubsub = redis.pubsub()
        self._channel = events_channel(app_id)

    async def __aenter__(self) -> AlertFeed:
        if isinstance(self._redis, RedisCluster):
            await self._redis.initialize()  # its pub/sub routes by a slot map it does not load
        await self._pubsub.subscribe(self._channel)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._pubsub.unsubscribe()
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def next(self, wait: float) -> dict[str, Any] | None:
        """The next alert, or None after ``wait`` seconds without one."""
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            if message is not None and message["type"] == "message":
                document: dict[str, Any] = orjson.loads(message["data"])
                return document
        return None


def feed_of(app: FastAPI) -> AlertFeed:
    """A live feed on the app's client for alert streams (``app.state.stream_redis``).

    Each open stream holds a connection for its subscription as long as its client listens,
    and streams are not held back by ``api.admission``; on a client of their own, a crowd of
    them can use up only their own connections, never those the reports need.
    """
    return AlertFeed(app.state.stream_redis, app.state.settings.app_id)


def _admin_only(role: Role) -> None:
    if not role.is_admin:
        raise AccessDenied("alerts are about carriers and routes: they are for admin keys")


def _since_ms(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(f"since: {text!r} is not an ISO date or datetime (e.g. 2026-11-25T10:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@router.get(
    "/alerts",
    summary="Open NOC alerts, and the history since a time",
    description="`active`: the raise alert of every open incident. With `since` (ISO date or datetime, "
    "UTC unless it has an offset; event time), also `history`: every raise and clear detected since, "
    "oldest first. Admin keys only.",
    responses=error_responses(401, 403, 422, 503),
)
async def alerts(
    request: Request,
    role: Caller,
    since: Annotated[str | None, Query(description="Also return the history from this event time.")] = None,
) -> dict[str, Any]:
    _admin_only(role)
    unknown = set(request.query_params) - {"since"}
    if unknown:
        raise QueryError(f"unknown parameter {sorted(unknown)[0]!r}; this endpoint takes since")
    redis, app_id = request.app.state.redis, request.app.state.settings.app_id
    body: dict[str, Any] = {"active": await active_alerts(redis, app_id)}
    if since is not None:
        body["history"] = await alert_history(redis, app_id, _since_ms(since))
    return body


@router.get(
    "/alerts/stream",
    summary="Live NOC alerts as Server-Sent Events",
    description="One event per raise or clear (`event: raised` / `event: cleared`, `data:` the alert JSON, "
    "`id:` incident and state), and a comment every 15 s to keep proxies from closing the stream. "
    "Admin keys only.",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **error_responses(401, 403)},
)
async def alert_stream(request: Request, role: Caller) -> StreamingResponse:
    _admin_only(role)
    feed = feed_of(request.app)

    async def events() -> AsyncIterator[str]:
        async with feed:
            yield ": connected\n\n"
            while True:
                alert = await feed.next(wait=KEEPALIVE_SECONDS)
                if alert is None:
                    yield ": keep-alive\n\n"
                    continue
                data = orjson.dumps(alert).decode()
                yield f"event: {alert['state']}\nid: {alert['incident']}:{alert['state']}\ndata: {data}\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
