"""``api.admission``: a bounded number of requests at work, a bounded line, the rest refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from starlette.types import Receive, Scope, Send

from api.admission import Admission
from api.metrics import ApiMetrics
from api.responses import OrjsonResponse


class HeldApp:
    """Answers each request only when the test lets it go; records how many are inside."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.inside = 0
        self.most_inside = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            if scope["path"] != "/healthz":
                await self.release.wait()
            await OrjsonResponse({"path": scope["path"]})(scope, receive, send)
        finally:
            self.inside -= 1


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


def client_of(admission: Admission) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=admission), base_url="http://api")


async def test_past_the_line_a_request_is_refused_at_once_and_the_line_is_served_in_turn() -> None:
    app, metrics = HeldApp(), ApiMetrics()
    admission = Admission(app, in_flight=2, waiting=1, metrics=metrics)
    async with client_of(admission) as http:
        working = [asyncio.create_task(http.get(f"/v1/breakout?n={n}")) for n in range(2)]
        await until(lambda: app.inside == 2)
        waiting = asyncio.create_task(http.get("/v1/breakout?n=waiting"))
        await until(lambda: admission.waiting == 1)
        assert metrics.waiting._value.get() == 1

        refused = await asyncio.wait_for(http.get("/v1/customers"), 2)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert "at capacity (1 requests waiting)" in refused.json()["detail"]
        assert metrics.refused._value.get() == 1

        app.release.set()
        answers = await asyncio.gather(*working, waiting)
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert app.most_inside == 2
    assert admission.waiting == 0
    assert metrics.waiting._value.get() == 0


@asynccontextmanager
async def one_at_work(
    waiting: int,
) -> AsyncIterator[tuple[HeldApp, Admission, httpx.AsyncClient, asyncio.Task[httpx.Response]]]:
    """One turn, taken by a request the app holds until ``release`` is set."""
    app = HeldApp()
    admission = Admission(app, in_flight=1, waiting=waiting, metrics=ApiMetrics())
    async with client_of(admission) as http:
        working = asyncio.create_task(http.get("/v1/breakout"))
        await until(lambda: app.inside == 1)
        yield app, admission, http, working


async def test_health_and_the_alert_stream_are_never_held_back() -> None:
    async with one_at_work(waiting=0) as (app, _, http, working):
        health = await asyncio.wait_for(http.get("/healthz"), 2)
        assert health.status_code == 200
        stream = asyncio.create_task(http.get("/v1/alerts/stream"))
        await until(lambda: app.inside == 2)  # let in beside the request at work
        assert (await http.get("/v1/me")).status_code == 503
        app.release.set()
        assert (await working).status_code == 200
        assert (await stream).status_code == 200


async def test_a_request_given_up_while_waiting_leaves_the_line() -> None:
    async with one_at_work(waiting=5) as (app, admission, http, working):
        impatient = asyncio.create_task(http.get("/v1/breakout?impatient"))
        await until(lambda: admission.waiting == 1)
        impatient.cancel()
        await until(lambda: admission.waiting == 0)
        app.release.set()
        assert (await working).status_code == 200
        # The slot it never took is free: the next request is served.
        assert (await asyncio.wait_for(http.get("/v1/breakout?next"), 2)).status_code == 200
