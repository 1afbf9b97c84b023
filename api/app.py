"""The read API's app factory: a stateless reader of the Redis mirror.

Errors a client can fix come back as ``{"detail": "<sentence>"}`` (``api.errors``): 401
without a valid key, 403 when a key asks beyond its role, 422 for a parameter (which one,
and why), 503 while Redis does not answer or the mirror is being refilled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.admission import Admission
from api.alerts import router as alerts
from api.collector import collect_regularly, tune_gc
from api.errors import install_error_handlers
from api.health import router as health
from api.metrics import ApiMetrics
from api.portal import mount_portal
from api.presented import PresentedPages, PresentedRows
from api.reader import MirrorReader
from api.reports import router as reports
from api.responses import OrjsonResponse
from api.series import SeriesPoints
from api.series import router as series
from breakout import __version__
from breakout.buckets import Retention
from breakout.redis_client import connect
from breakout.redis_layout import Layout
from breakout.settings import Settings, load_settings

log = logging.getLogger(__name__)
# A formatted row weighs about as much as this many cached rows of counters.
ROWS_PER_PRESENTED = 40
# Both of the API's Redis clients: the reports' and the alert streams'.
REDIS_OPTIONS: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 2}


class Measured:
    """Counts each request and its duration by route and status for ``/metrics``.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` runs every request in a task
    of its own behind memory streams, a cost paid per request that shows under load.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, sending)
        route = scope.get("route")
        self.metrics.observe(getattr(route, "path", "unmatched"), status, time.perf_counter() - started)


def create_app(settings: Settings) -> FastAPI:
    """The FastAPI app serving breakout snapshots for ``settings``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not app.state.roles:
            log.warning(
                "BREAKOUT_API_KEYS is empty: every /v1 request will be refused with 401; "
                "create a key with `breakout api-key --role admin`"
            )
        client = connect(settings.redis, **REDIS_OPTIONS)
        app.state.redis = client
        app.state.stream_redis = connect(settings.redis, **REDIS_OPTIONS)  # api.alerts.feed_of
        app.state.reader = MirrorReader(
            client, Layout(settings.app_id), settings.partitions, settings.api_cache_rows
        )
        app.state.series_points = SeriesPoints(settings.api_cache_rows)
        app.state.pages = PresentedPages(PresentedRows(settings.api_cache_rows // ROWS_PER_PRESENTED))
        collecting = asyncio.create_task(collect_regularly())
        try:
            yield
        finally:
            collecting.cancel()
            await client.aclose()
            await app.state.stream_redis.aclose()

    # /docs loads its scripts from this server (the assets ship in the fastapi-offline
    # wheel): it works on a machine with no route to a CDN. No /redoc: its page loads a logo
    # from Redocly's CDN whatever the options.
    app = FastAPIOffline(
        redoc_url=None,
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
    app.include_router(series)
    app.include_router(alerts)
    app.include_router(health)
    install_error_handlers(app)

    # Measured outermost: a request's latency includes its wait for a turn.
    app.add_middleware(
        Admission, in_flight=settings.api_in_flight, waiting=settings.api_waiting, metrics=metrics
    )
    app.add_middleware(Measured, metrics=metrics)

    mount_portal(app)
    return app


def app_from_environment() -> FastAPI:
    """The app of one of ``breakout api --workers N``'s processes, from the same ``BREAKOUT_*``
    variables the command checked before starting them."""
    tune_gc()
    return create_app(load_settings())


def run_api(settings: Settings, workers: int = 1) -> None:
    """``breakout api``: serve the read API with uvicorn until SIGINT/SIGTERM.

    With ``workers`` above 1, that many processes accept on the one port, each with its
    own caches: every cache is keyed on the bucket versions and mirror marker it reads
    from Redis, so a process's answer is as correct as a single process's.
    """
    import uvicorn

    options: dict[str, Any] = {
        "host": settings.api_host,
        "port": settings.api_port,
        "log_level": settings.log_level,
        "loop": "uvloop",
        "http": "httptools",
    }
    if workers == 1:
        tune_gc()
        uvicorn.run(create_app(settings), **options)
    else:
        uvicorn.run("api.app:app_from_environment", factory=True, workers=workers, **options)
