"""``/v1/series`` and ``/v1/causes`` on real Redis filled by the real pipeline from a known dataset.

Every expected figure comes from ``tests.dataset``: Decimal sums and the contract's E.425
and SIP catalogue written out independently over the raw CDR dicts, step by step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import httpx
import pytest

from api.app import create_app
from tests import dataset
from tests.integration.pipeline import Mirrored, mirror_dataset

pytestmark = pytest.mark.integration

OWN = "cust-02"  # the customer key's account
METRICS = ("attempts", "connected", "asr", "ner", "acd", "pdd", "short_calls", "short_pct")


@pytest.fixture(scope="module")
async def mirrored(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Mirrored:
    return await mirror_dataset(
        kafka_bootstrap,
        redis_url,
        tmp_path_factory.mktemp("series"),
        name="series",
        seed=23,
        total=3000,
        customer=OWN,
    )


@pytest.fixture
async def client(mirrored: Mirrored) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(mirrored.settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
    ):
        yield http


def expected_points(
    mirrored: Mirrored, bounds: list[datetime], admit: Any = lambda cdr, destination: True
) -> list[dict[str, Any]]:
    points = []
    for start, end in pairwise(bounds):
        _, totals, _ = dataset.expected_report(
            mirrored.cdrs, mirrored.table, start.timestamp(), end.timestamp(), (), admit
        )
        points.append(
            {"start": start.isoformat(), "end": end.isoformat(), **{name: totals[name] for name in METRICS}}
        )
    return points


async def test_each_point_equals_the_independent_sums_of_its_step(
    mirrored: Mirrored, client: httpx.AsyncClient
) -> None:
    # 15-minute steps from a start that is not on a quarter hour: a short first step.
    start = mirrored.start + timedelta(minutes=7)
    end = mirrored.end
    params = {"from": start.isoformat(), "to": end.isoformat(), "resolution": "15m", "metric": list(METRICS)}
    response = await client.get("/v1/series", params=params, headers=mirrored.headers())
    assert response.status_code == 200, response.text
    body = response.json()
    bounds = [start]
    while bounds[-1] < end:
        following = bounds[-1] + timedelta(minutes=15)
        bounds.append(min(following.replace(minute=following.minute // 15 * 15), end))
    assert body["resolution"] == "15m" and body["metrics"] == list(METRICS)
    assert body["points"] == expected_points(mirrored, bounds)
    inside = [c for c in mirrored.cdrs if start.timestamp() <= dataset.start_seconds(c) < end.timestamp()]
    assert sum(point["attempts"] for point in body["points"]) == len(inside) > 0
    assert body["as_of_ms"] is not None


async def test_hourly_points_of_one_destination(mirrored: Mirrored, client: httpx.AsyncClient) -> None:
    destinations = Counter(
        cdr.get("destination") or dataset.expected_destination(cdr["dst"], mirrored.table)
        for cdr in mirrored.cdrs
    )
    busiest = destinations.most_common(1)[0][0]
    start = mirrored.start.replace(minute=0)
    end = mirrored.end.replace(minute=0) + timedelta(hours=1)
    params = {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "resolution": "hour",
        "destination": busiest,
        "metric": ",".join(METRICS),
    }
    body = (await client.get("/v1/series", params=params, headers=mirrored.headers())).json()
    bounds = [start + timedelta(hours=n) for n in range(int((end - start).total_seconds()) // 3600 + 1)]
    assert body["points"] == expected_points(
        mirrored, bounds, lambda cdr, destination: destination == busiest
    )


async def test_a_customer_key_sees_its_own_series_only(mirrored: Mirrored, client: httpx.AsyncClient) -> None:
    start, end = mirrored.start, mirrored.end
    params = {"from": start.isoformat(), "to": end.isoformat(), "resolution": "hour", "metric": list(METRICS)}
    body = (await client.get("/v1/series", params=params, headers=mirrored.headers("customer"))).json()
    own = sum(1 for cdr in mirrored.cdrs if cdr["customer_id"] == OWN)
    assert sum(point["attempts"] for point in body["points"]) == own > 0
    refused = await client.get(
        "/v1/series", params=params | {"provider": "prov-1"}, headers=mirrored.headers("customer")
    )
    assert refused.status_code == 403
    other = await client.get(
        "/v1/causes",
        params={"customer": "cust-01", "from": start.isoformat()},
        headers=mirrored.headers("customer"),
    )
    assert other.status_code == 403


@pytest.mark.parametrize(
    "params, message",
    [
        ({"resolution": "week"}, "resolution: expected one of minute, 15m, hour, day, got 'week'"),
        ({"metric": "profit"}, "metric: 'profit' is not a series metric"),
        ({"resolution": "minute", "from": "2026-01-01", "to": "2026-12-31"}, "more than 10000 points"),
        ({"bogus": "1"}, "unknown parameter 'bogus'"),
        ({"resolution": ["hour", "day"]}, "resolution: give it once, not 2 times"),
    ],
)
async def test_bad_series_parameters_are_clear_422s(
    mirrored: Mirrored, client: httpx.AsyncClient, params: dict[str, Any], message: str
) -> None:
    response = await client.get("/v1/series", params=params, headers=mirrored.headers())
    assert response.status_code == 422 and message in response.json()["detail"], response.text


def shares(cdrs: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(dataset.sip_label(cdr.get("sip_code")) for cdr in cdrs))


async def test_causes_compare_the_range_with_the_period_before(
    mirrored: Mirrored, client: httpx.AsyncClient
) -> None:
    middle = mirrored.start + (mirrored.end - mirrored.start) / 2
    middle = middle.replace(second=0, microsecond=0)
    length = mirrored.end - middle
    params = {"from": middle.isoformat(), "to": mirrored.end.isoformat()}
    body = (await client.get("/v1/causes", params=params, headers=mirrored.headers())).json()
    now = [
        c for c in mirrored.cdrs if middle.timestamp() <= dataset.start_seconds(c) < mirrored.end.timestamp()
    ]
    before = [
        c
        for c in mirrored.cdrs
        if (middle - length).timestamp() <= dataset.start_seconds(c) < middle.timestamp()
    ]
    assert body["attempts"] == len(now) and body["previous_attempts"] == len(before)
    assert body["previous"] == {"from": (middle - length).isoformat(), "to": middle.isoformat()}
    got = {row["code"]: (row["count"], row["previous_count"]) for row in body["codes"]}
    now_counts, before_counts = shares(now), shares(before)
    assert got == {
        code: (now_counts.get(code, 0), before_counts.get(code, 0)) for code in {*now_counts, *before_counts}
    }
    changes = [float(row["change_points"]) for row in body["codes"]]
    assert changes == sorted(changes, reverse=True)
    assert sum(float(row["share"]) for row in body["codes"]) == pytest.approx(100, abs=0.1)
