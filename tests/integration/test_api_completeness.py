"""The read API never serves a partial total as a whole one.

While Redis is emptied and being refilled, every report is a 503 with ``Retry-After``,
``/readyz`` says which partitions are missing, and ``/metrics`` shows it; a consumer that
stops making progress makes ``/readyz`` say ``stalled``. The mirror is written by hand
(``tests.integration.handmade``), so each state is made on purpose against real Redis.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from breakout.buckets import Granularity
from breakout.redis_layout import Lag, Watermark
from breakout.settings import Settings
from tests.integration.handmade import (
    RANGE_READS,
    Served,
    current_epoch,
    empty,
    mark_whole,
    report_lag,
    serve,
    set_watermark,
    write_rows,
)

pytestmark = [pytest.mark.integration, pytest.mark.each_redis]

DAY = 86400
TODAY = int(time.time()) // DAY * DAY
YESTERDAY = TODAY - DAY
SPAN = {
    "from": datetime.fromtimestamp(YESTERDAY, UTC).date().isoformat(),
    "to": datetime.fromtimestamp(TODAY, UTC).date().isoformat(),
}
#            attempts connected duration_ms provider customer pending dtmf
ACME_FRANCE = [10, 4, 300_000, 1_000_000, 1_500_000, 1, 2]
BETA_PERU = [3, 1, 60_000, 200_000, 100_000, 0, 0]


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[Served]:
    async with serve(settings.redis) as api:
        yield api


async def fill(api: Served, scale: int = 1) -> None:
    """Two days of three rows, every partition mirrored whole in a new epoch."""
    d = Granularity.DAY
    await write_rows(api.redis, api.layout, (d, YESTERDAY), "acme", {("France", "p1", "USD"): ACME_FRANCE}, 1)
    await write_rows(api.redis, api.layout, (d, YESTERDAY), "beta", {("Peru", "p2", "EUR"): BETA_PERU}, 2)
    today = [n * scale for n in ACME_FRANCE]
    await write_rows(api.redis, api.layout, (d, TODAY), "acme", {("France", "p1", "USD"): today}, 3)
    await mark_whole(api.redis, api.layout, api.partitions, event_ms=int(time.time() * 1000))


async def get(api: Served, path: str, **params: Any) -> httpx.Response:
    return await api.http.get(path, params=SPAN | params, headers=api.admin)


async def assert_refused(api: Served, detail: str) -> None:
    """Every read that sums mirror rows: 503, Retry-After, the detail saying why."""
    for path, params in RANGE_READS:
        response = await get(api, path, **params)
        assert response.status_code == 503, (path, params, response.text)
        assert response.headers["retry-after"] == "2"
        assert response.headers["content-type"].startswith("application/json")
        assert detail in response.json()["detail"], response.json()
    customer = await api.http.get("/v1/breakout", params=SPAN, headers=api.customer)
    assert customer.status_code == 503 and customer.headers["retry-after"] == "2"


async def metric(api: Served, name: str) -> float | None:
    text = (await api.http.get("/metrics")).text
    line = next((line for line in text.splitlines() if line.startswith(name + " ")), None)
    return None if line is None else float(line.split()[-1])


async def test_a_whole_mirror_is_answered_exactly(served: Served) -> None:
    await fill(served)
    body = (await get(served, "/v1/breakout")).json()
    rows = {(r["customer"], r["destination"], r["currency"]): r for r in body["rows"]}
    assert rows.keys() == {("acme", "France", "USD"), ("beta", "Peru", "EUR")}
    assert (rows["acme", "France", "USD"]["attempts"], rows["acme", "France", "USD"]["customer_charge"]) == (
        20,
        "3.000000",
    )
    assert rows["beta", "Peru", "EUR"]["profit"] == "-0.100000"
    assert body["totals"]["attempts"] == 23 and body["as_of_ms"] is not None
    csv_rows = list(csv.DictReader(io.StringIO((await get(served, "/v1/breakout", format="csv")).text)))
    assert [r["attempts"] for r in csv_rows] == ["20", "3"]
    destinations = (await get(served, "/v1/destinations")).json()["values"]
    assert destinations == [{"name": "France", "attempts": 20}, {"name": "Peru", "attempts": 3}]
    ready = await served.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() | {"as_of_ms": None, "mirror_written_age_seconds": None} == {
        "status": "ok",
        "redis": "ok",
        "as_of_ms": None,
        "behind_ms": None,
        "mirror_written_age_seconds": None,
        "mirror_complete": True,
        "missing_partitions": [],
        "stalled": [],
        "lag": [],
    }
    assert await metric(served, "breakout_mirror_complete") == 1.0


async def test_an_emptied_mirror_is_refused_until_every_partition_is_whole_again(served: Served) -> None:
    await fill(served)
    assert (await get(served, "/v1/breakout")).status_code == 200  # and cached

    # The marker gone (rows still there): Redis lost its data, whatever is left of it.
    await served.redis.delete(served.layout.marker)
    await assert_refused(served, "holds no data yet")
    # Everything gone, as after FLUSHALL or a restart without persistence.
    await empty(served.redis, served.layout)
    await assert_refused(served, "holds no data yet")
    ready = await served.http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "incomplete" and ready.json()["missing_partitions"] == [0, 1, 2, 3]
    assert "holds no data yet" in ready.json()["detail"]
    assert await metric(served, "breakout_mirror_complete") == 0.0

    # The workers refill: a new epoch, but partition 2's watermark still from the old one.
    await fill(served, scale=2)
    old = Watermark(int(time.time() * 1000), 7, int(time.time() * 1000), "an-older-epoch")
    await set_watermark(served.redis, served.layout, 2, old)
    await assert_refused(served, "partitions 2 are not mirrored whole yet")
    ready = await served.http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["missing_partitions"] == [2]

    # Partition 2 mirrored whole: answered again, from the refilled rows, not the old cache.
    epoch = await current_epoch(served.redis, served.layout)
    assert epoch is not None
    await set_watermark(served.redis, served.layout, 2, Watermark(old.event_ms, 7, old.written_ms, epoch))
    body = (await get(served, "/v1/breakout")).json()
    assert body["totals"]["attempts"] == 10 + 20 + 3
    assert (await served.http.get("/readyz")).status_code == 200


async def test_a_stalled_consumer_makes_readyz_say_so(served: Served) -> None:
    await fill(served)
    now = int(time.time() * 1000)
    internal = f"{served.layout.app_id}-normalized"
    lags = [
        Lag("cdrs", 0, end=500, committed=500, moved_ms=now, written_ms=now),
        Lag("cdrs", 1, end=550, committed=500, moved_ms=now - 120_000, written_ms=now),  # no progress
        Lag(internal, 0, end=40, committed=37, moved_ms=now - 1000, written_ms=now),
    ]
    for lag in lags:
        await report_lag(served.redis, served.layout, lag)
    ready = await served.http.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "stalled" and body["stalled"] == [{"topic": "cdrs", "partition": 1}]
    assert "cdrs partition 1" in body["detail"] and body["mirror_complete"] is True
    figures = {(entry["topic"], entry["partition"]): entry for entry in body["lag"]}
    assert {key: (entry["lag"], entry["stalled"]) for key, entry in figures.items()} == {
        ("cdrs", 0): (0, False),
        ("cdrs", 1): (50, True),
        (internal, 0): (3, False),
    }
    assert figures["cdrs", 1]["moved_age_seconds"] >= 120
    # A stalled consumer leaves the mirror whole up to its as_of: reports are still answered.
    assert (await get(served, "/v1/breakout")).status_code == 200

    assert await metric(served, 'breakout_consumer_lag{partition="1",topic="cdrs"}') == 50.0
    assert await metric(served, 'breakout_consumer_stalled{partition="1",topic="cdrs"}') == 1.0
    assert await metric(served, 'breakout_consumer_stalled{partition="0",topic="cdrs"}') == 0.0
    assert await metric(served, f'breakout_consumer_lag{{partition="0",topic="{internal}"}}') == 3.0

    # A worker that stopped reporting is stalled too, even with nothing waiting.
    silent = Lag("cdrs", 1, end=550, committed=550, moved_ms=now, written_ms=now - 60_000)
    await report_lag(served.redis, served.layout, silent)
    assert (await served.http.get("/readyz")).json()["stalled"] == [{"topic": "cdrs", "partition": 1}]
    # Caught up and reporting: ready.
    await report_lag(served.redis, served.layout, Lag("cdrs", 1, 550, 550, now, int(time.time() * 1000)))
    assert (await served.http.get("/readyz")).status_code == 200


async def test_readyz_names_the_first_reason_and_keeps_max_age(served: Served) -> None:
    now = int(time.time() * 1000)
    await report_lag(served.redis, served.layout, Lag("cdrs", 0, 10, 0, now - 120_000, now))
    assert (await served.http.get("/readyz")).json()["status"] == "incomplete"  # then stalled
    await fill(served)
    assert (await served.http.get("/readyz")).json()["status"] == "stalled"
    await served.redis.delete(served.layout.lag)
    assert (await served.http.get("/readyz", params={"max_age": "3600"})).status_code == 200
    two_hours_ago = now - 2 * 3600 * 1000
    await mark_whole(served.redis, served.layout, served.partitions, event_ms=now, written_ms=two_hours_ago)
    stale = await served.http.get("/readyz", params={"max_age": "3600"})
    assert stale.status_code == 503 and stale.json()["status"] == "stale"
    assert "max_age 3600" in stale.json()["detail"]
