"""The read API's app factory: a stateless reader of the Redis mirror.

Errors a client can fix come back as ``{"detail": "<sentence>"}`` (``api.errors``): 401
without a valid key, 403 when a key asks beyond its role, 422 for a parameter (which one,
and why), 503 while Redis does not answer or the mirror is being refilled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI, Request, Response
from fastapi_offline import FastAPIOffline

from api.alerts import router as alerts
from api.errors import install_error_handlers
from api.health import router as health
from api.metrics import ApiMetrics
from api.portal import mount_portal
from api.reader import MirrorReader
from api.reports import router as reports
from api.responses import OrjsonResponse
from api.series import SeriesPoints
from api.series import router as series
from breakout import __version__
from breakout.buckets import Retention
from breakout.redis_layout import Layout
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
        app.state.reader = MirrorReader(
            client, Layout(settings.app_id), settings.partitions, settings.api_cache_rows
        )
        app.state.series_points = SeriesPoints(settings.api_cache_rows)
        try:
            yield
        finally:
            await client.aclose()

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

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.observe(
            getattr(route, "path", "unmatched"), response.status_code, time.perf_counter() - started
        )
        return response

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
