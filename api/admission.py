"""How many requests an API process works on at once, and how many it lets wait.

Every request interleaves with the others on one event loop. Without a limit, a burst (a
month-start Refresh by every customer, or a pause that lets requests pile up) makes each
request share the loop with all the others: all of them slow down together, each holds a
Redis connection while it waits for the loop, and past redis-py's pool of 100 connections
or its socket timeout they fail with 503 — measured by ``bench/api_load.py``, where a few
seconds' pause grew into tens of seconds of 503s. With a limit, the requests admitted run
at full speed, the others wait in line without holding anything, and when the line is full
a request is refused at once with ``Retry-After`` instead of failing after a long wait.

Two paths are never held back: ``/healthz`` says whether the process lives, and a busy
process does; ``/v1/alerts/stream`` stays open as long as its client listens, so it would
keep a turn forever while doing almost no work.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

from api.metrics import ApiMetrics
from api.responses import OrjsonResponse

RETRY_AFTER_SECONDS = 1
UNLIMITED_PATHS = frozenset({"/healthz", "/v1/alerts/stream"})


class Admission:
    """An ASGI middleware admitting at most ``in_flight`` requests at once, with at most
    ``waiting`` more in line (first come, first served); it refuses the rest with 503."""

    def __init__(
        self,
        app: ASGIApp,
        in_flight: int,
        waiting: int,
        metrics: ApiMetrics,
    ) -> None:
        self.app = app
        self.waiting_limit = waiting
        self.metrics = metrics
        self._slots = asyncio.Semaphore(in_flight)
        self.waiting = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        if self._slots.locked() and self.waiting >= self.waiting_limit:
            self.metrics.refused.inc()
            refusal = OrjsonResponse(
                {
                    "detail": f"the API is at capacity ({self.waiting} requests waiting); "
                    f"try again in {RETRY_AFTER_SECONDS} s"
                },
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
            await refusal(scope, receive, send)
            return
        self._wait(+1)
        try:
            await self._slots.acquire()
        finally:
            self._wait(-1)
        try:
            await self.app(scope, receive, send)
        finally:
            self._slots.release()

    def _wait(self, change: int) -> None:
        self.waiting += change
        self.metrics.waiting.set(self.waiting)
