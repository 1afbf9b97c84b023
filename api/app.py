"""The read API's app factory: a stateless reader of the Redis mirror.

Errors a client can fix come back as ``{"detail": "<sentence>"}``: 401 without a valid
key, 403 when a key asks beyond its role, 422 for a parameter (which one, and why).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from redis.exceptions import RedisError

from api.alerts import router as alerts
from api.metrics import ApiMetrics
from api.portal import mount_portal
from api.reader import MirrorReader
from api.reports import router as reports
from api.responses import OrjsonResponse
from breakout import __version__
from breakout.buckets import Retention
from breakout.errors import QueryError
from breakout.query import AccessDenied
from breakout.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """The FastAPI app serving breakout snapshots for ``settings``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not app.state.roles:
            log.warning(
                "BREAKOUT_API_KEYS is empty: every /v1 request will be refused with 401; "
                "create a key with `breakout api-key --role admin`"
            )
        client = aioredis.from_url(settings.redis, socket_timeout=5, socket_connect_timeout=2)
        app.state.redis = client
        app.state.reader = MirrorReader(client, settings.app_id, settings.api_cache_rows)
        try:
            yield
        finally:
            await client.aclose()

    app = FastAPI(
        title="Breakout read API",
        version=__version__,
        description="Near-real-time, billing-accurate CDR breakouts, read from the Redis mirror.",
        default_response_class=OrjsonResponse,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.roles = settings.api_roles
    app.state.retention = Retention(
        settings.minute_retention, settings.hour_retention, settings.day_retention
    )
    app.state.metrics = metrics = ApiMetrics()
    app.include_router(reports)
    app.include_router(alerts)

    @app.exception_handler(QueryError)
    async def query_error(request: Request, exc: QueryError) -> OrjsonResponse:
        return OrjsonResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(AccessDenied)
    async def access_denied(request: Request, exc: AccessDenied) -> OrjsonResponse:
        return OrjsonResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> OrjsonResponse:
        problems = []
        for error in exc.errors():
            where = str(error["loc"][-1]) if error.get("loc") else "request"
            problems.append(f"{where}: {error['msg'].lower()}, got {error.get('input')!r}")
        return OrjsonResponse({"detail": "; ".join(problems)}, status_code=422)

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> OrjsonResponse:
        return OrjsonResponse(
            {"detail": f"the Redis mirror is unreachable ({exc}); try again shortly"}, status_code=503
        )

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.observe(
            getattr(route, "path", "unmatched"), response.status_code, time.perf_counter() - started
        )
        return response

    @app.get("/healthz", tags=["health"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Redis is reachable; how fresh the mirror is",
        description="503 when Redis does not answer, or when `max_age` (seconds) is given and no worker "
        "has written the mirror for longer.",
        responses={503: {}},
    )
    async def readyz(request: Request, max_age: float | None = None) -> OrjsonResponse:
        reader: MirrorReader = request.app.state.reader
        try:
            freshness = await reader.freshness()
        except RedisError as exc:
            return OrjsonResponse({"status": "unavailable", "redis": str(exc)}, status_code=503)
        now_ms = time.time() * 1000
        written_age = (
            None if freshness.written_ms is None else round((now_ms - freshness.written_ms) / 1000, 3)
        )
        body: dict[str, Any] = {
            "status": "ok",
            "redis": "ok",
            "as_of_ms": freshness.as_of_ms,
            "mirror_written_age_seconds": written_age,
        }
        if max_age is not None and (written_age is None or written_age > max_age):
            body["status"] = "stale"
            return OrjsonResponse(body, status_code=503)
        return OrjsonResponse(body)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus(request: Request) -> Response:
        reader: MirrorReader = request.app.state.reader
        freshness = await reader.freshness()
        text = await metrics.render(
            request.app.state.redis, settings.app_id, freshness.as_of_ms, freshness.written_ms
        )
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    mount_portal(app)
    return app


def run_api(settings: Settings) -> None:
    """``breakout api``: serve the read API with uvicorn until SIGINT/SIGTERM."""
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level,
        loop="uvloop",
    )
