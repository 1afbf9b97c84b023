"""``/healthz``, ``/readyz`` and ``/metrics``: whether this API process should get reads, and why not.

Ready means Redis answers, the mirror is whole in its current epoch (not being refilled
after Redis lost its data) and no worker's consumer has stopped making progress: a
deployment in any other state would answer every report with a 503 or with figures that
are silently getting old. ``max_age`` adds a limit on how long ago a worker last wrote.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from redis.exceptions import RedisClusterException, RedisError

from api.errors import error_responses
from api.metrics import ApiMetrics
from api.reader import MirrorHealth, MirrorReader
from api.responses import OrjsonResponse
from api.schemas import Readiness
from breakout.redis_layout import Lag

router = APIRouter(tags=["health"])


def readiness(health: MirrorHealth, now_ms: int, max_age: float | None) -> tuple[int, dict[str, Any]]:
    """The status code and body of ``/readyz``: the first reason not to be ready (an
    incomplete mirror, a stalled consumer, no write within ``max_age``), with every figure."""
    freshness, state = health.freshness, health.completeness
    written_age = None if freshness.written_ms is None else round((now_ms - freshness.written_ms) / 1000, 3)
    stalled = [lag for lag in health.lags if lag.stalled(now_ms)]
    body: dict[str, Any] = {
        "status": "ok",
        "redis": "ok",
        "as_of_ms": freshness.as_of_ms,
        "behind_ms": freshness.behind_ms,
        "mirror_written_age_seconds": written_age,
        "mirror_complete": state.complete,
        "missing_partitions": list(state.missing),
        "stalled": [{"topic": lag.topic, "partition": lag.partition} for lag in stalled],
        "lag": [_figures(lag, now_ms) for lag in health.lags],
    }
    if not state.complete:
        body |= {"status": "incomplete", "detail": state.explain()}
    elif stalled:
        where = ", ".join(f"{lag.topic} partition {lag.partition}" for lag in stalled)
        body |= {"status": "stalled", "detail": f"no consumer progress on {where}"}
    elif max_age is not None and (written_age is None or written_age > max_age):
        since = "ever" if written_age is None else f"for {written_age} s"
        body |= {"status": "stale", "detail": f"no worker has written the mirror {since} (max_age {max_age})"}
    else:
        return 200, body
    return 503, body


def _figures(lag: Lag, now_ms: int) -> dict[str, Any]:
    return {
        "topic": lag.topic,
        "partition": lag.partition,
        "lag": lag.lag,
        "end": lag.end,
        "committed": lag.committed,
        "stalled": lag.stalled(now_ms),
        "moved_age_seconds": round((now_ms - lag.moved_ms) / 1000, 3),
        "report_age_seconds": round((now_ms - lag.written_ms) / 1000, 3),
    }


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Whether this API can serve whole, current reports",
    description="503 when Redis does not answer, while the mirror is incomplete (being refilled after "
    "Redis lost its data), when a worker's consumer makes no progress, or, with `max_age` (seconds), "
    "when no worker has written the mirror for longer. The body has the figures either way.",
    response_model=Readiness,
    responses={
        **error_responses(422),
        503: {"model": Readiness, "description": "Not ready: `status` says why"},
    },
)
async def readyz(
    request: Request,
    max_age: Annotated[
        float | None, Query(description="Seconds since the last write beyond which: 503")
    ] = None,
) -> OrjsonResponse:
    reader: MirrorReader = request.app.state.reader
    try:
        health = await reader.health()
    except (RedisError, RedisClusterException) as exc:
        return OrjsonResponse({"status": "unavailable", "redis": str(exc)}, status_code=503)
    status, body = readiness(health, int(time.time() * 1000), max_age)
    return OrjsonResponse(body, status_code=status)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    # The route returns its own text; a bare Response class keeps the errors' media type JSON.
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **error_responses(503),
    },
)
async def prometheus(request: Request) -> Response:
    reader: MirrorReader = request.app.state.reader
    metrics: ApiMetrics = request.app.state.metrics
    health = await reader.health()
    text = await metrics.render(reader.client, reader.layout, health, int(time.time() * 1000))
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")
