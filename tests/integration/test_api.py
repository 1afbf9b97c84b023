"""The read API on real Redis filled by the real pipeline from a known dataset.

Every expected figure comes from ``tests.dataset.expected_report``: Decimal sums over the
raw CDR dicts, never the API's own arithmetic.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from api.app import create_app
from breakout.auth import ADMIN, key_entry, new_key
from breakout.settings import load_settings
from tests import dataset
from tests.integration.pipeline import Mirrored, diff, mirror_dataset

pytestmark = pytest.mark.integration

OWN = "cust-03"  # the customer key's account


@pytest.fixture(scope="module")
async def mirrored(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Mirrored:
    return await mirror_dataset(
        kafka_bootstrap,
        redis_url,
        tmp_path_factory.mktemp("api"),
        name="api",
        seed=11,
        total=4000,
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


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _check_report(body: dict[str, Any], expected: tuple[Any, Any, Any], group_by: tuple[str, ...]) -> None:
    rows, totals, per_currency = expected
    got = {(*(row[name] for name in group_by), row["currency"]): row for row in body["rows"]}
    assert got == rows, diff(got, rows)
    assert body["total_rows"] == len(rows)
    assert body["totals"] == totals
    assert body["currency_totals"] == per_currency


async def test_every_column_equals_the_independent_totals(
    mirrored: Mirrored, client: httpx.AsyncClient
) -> None:
    start, end = mirrored.start, mirrored.end
    cases: list[tuple[dict[str, Any], float, float, tuple[str, ...]]] = [
        # The whole dataset by customer and destination: hours inside, minutes at the edges.
        (
            {"from": _iso(start), "to": _iso(end)},
            start.timestamp(),
            end.timestamp(),
            ("customer", "destination"),
        ),
        # A 15-minute window by destination and provider.
        (
            {"from": _iso(start + timedelta(minutes=30)), "to": _iso(start + timedelta(minutes=45))},
            (start + timedelta(minutes=30)).timestamp(),
            (start + timedelta(minutes=45)).timestamp(),
            ("destination", "provider"),
        ),
    ]
    # Whole days in a half-hour zone: the edges fall mid-hour in UTC.
    kolkata = ZoneInfo("Asia/Kolkata")
    first_day = start.astimezone(kolkata).date()
    last_day = end.astimezone(kolkata).date()
    day_start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=kolkata)
    day_end = datetime(last_day.year, last_day.month, last_day.day, tzinfo=kolkata) + timedelta(days=1)
    cases.append(
        (
            {
                "from": first_day.isoformat(),
                "to": last_day.isoformat(),
                "tz": "Asia/Kolkata",
                "group_by": "customer",
            },
            day_start.timestamp(),
            day_end.timestamp(),
            ("customer",),
        )
    )
    for params, low, high, group_by in cases:
        query = params | {"limit": 10000, "group_by": ",".join(group_by)}
        response = await client.get("/v1/breakout", params=query, headers=mirrored.headers())
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["group_by"] == list(group_by)
        _check_report(
            body, dataset.expected_report(mirrored.cdrs, mirrored.table, low, high, group_by), group_by
        )
        assert body["as_of_ms"] is not None and body["as_of_ms"] <= end.timestamp() * 1000

    # Filters: two destinations, one provider.
    destinations = sorted({r["destination"] for r in (await _admin_rows(client, mirrored))})[:2]
    params = {"from": _iso(start), "to": _iso(end), "destination": destinations, "provider": "prov-1"}
    response = await client.get("/v1/breakout", params=params | {"limit": 10000}, headers=mirrored.headers())
    expected = dataset.expected_report(
        mirrored.cdrs,
        mirrored.table,
        start.timestamp(),
        end.timestamp(),
        ("customer", "destination"),
        admit=lambda cdr, destination: destination in destinations and cdr["provider_id"] == "prov-1",
    )
    _check_report(response.json(), expected, ("customer", "destination"))


async def _admin_rows(client: httpx.AsyncClient, mirrored: Mirrored, **params: Any) -> list[dict[str, Any]]:
    query = {"from": _iso(mirrored.start), "to": _iso(mirrored.end), "limit": 10000} | params
    response = await client.get("/v1/breakout", params=query, headers=mirrored.headers())
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["rows"]
    return rows


async def test_sort_and_pages(mirrored: Mirrored, client: httpx.AsyncClient) -> None:
    everything = await _admin_rows(client, mirrored, sort="-attempts")
    attempts = [row["attempts"] for row in everything]
    assert attempts == sorted(attempts, reverse=True)
    pages = [
        await _admin_rows(client, mirrored, sort="-attempts", limit=7, offset=offset) for offset in (0, 7, 14)
    ]
    assert [row for page in pages for row in page] == everything[:21]
    by_asr = await _admin_rows(client, mirrored, sort="asr", group_by="destination")
    defined = [float(row["asr"]) for row in by_asr if row["asr"] is not None]
    assert defined == sorted(defined)


def _cell(value: object) -> str:
    """A JSON value as its CSV cell: null is empty, the SIP codes are ``code:count`` pairs."""
    if isinstance(value, dict):
        return " ".join(f"{code}:{count}" for code, count in value.items())
    return "" if value is None else str(value)


async def test_csv_equals_json(mirrored: Mirrored, client: httpx.AsyncClient) -> None:
    for who in ("admin", "customer"):
        params = {
            "from": _iso(mirrored.start),
            "to": _iso(mirrored.end),
            "sort": "-customer_charge",
            "limit": 10000,
        }
        body = (await client.get("/v1/breakout", params=params, headers=mirrored.headers(who))).json()
        response = await client.get(
            "/v1/breakout", params=params | {"format": "csv"}, headers=mirrored.headers(who)
        )
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(response.text)))
        as_text = [{k: _cell(v) for k, v in row.items()} for row in body["rows"]]
        assert table == as_text
        assert len(table) == body["total_rows"] > 0


async def test_a_customer_key_sees_only_its_own_account(
    mirrored: Mirrored, client: httpx.AsyncClient
) -> None:
    mine = [c for c in mirrored.cdrs if c["customer_id"] == OWN]
    assert mine and len(mine) < len(mirrored.cdrs)
    span = {"from": _iso(mirrored.start), "to": _iso(mirrored.end)}
    headers = mirrored.headers("customer")

    body = (await client.get("/v1/breakout", params=span | {"limit": 10000}, headers=headers)).json()
    rows, totals, per_currency = dataset.expected_report(
        mirrored.cdrs,
        mirrored.table,
        mirrored.start.timestamp(),
        mirrored.end.timestamp(),
        ("customer", "destination"),
        admit=lambda cdr, destination: cdr["customer_id"] == OWN,
    )
    hidden = dict.fromkeys(("provider_charge", "profit", "profit_pct"))
    _check_report(
        body,
        (
            {key: row | hidden for key, row in rows.items()},
            totals | (hidden if totals["currency"] else {}),
            [row | hidden for row in per_currency],
        ),
        ("customer", "destination"),
    )
    assert {row["customer"] for row in body["rows"]} == {OWN}

    csv_text = (await client.get("/v1/breakout", params=span | {"format": "csv"}, headers=headers)).text
    assert {row["customer"] for row in csv.DictReader(io.StringIO(csv_text))} == {OWN}
    by_destination = (
        await client.get("/v1/breakout", params=span | {"group_by": "destination"}, headers=headers)
    ).json()
    assert sum(r["attempts"] for r in by_destination["rows"]) == len(mine)

    customers = (await client.get("/v1/customers", params=span, headers=headers)).json()
    assert customers["values"] == [{"name": OWN, "attempts": len(mine)}]
    destinations = (await client.get("/v1/destinations", params=span, headers=headers)).json()
    assert sum(v["attempts"] for v in destinations["values"]) == len(mine)
    own_destinations = {
        c.get("destination") or dataset.expected_destination(c["dst"], mirrored.table) for c in mine
    }
    assert {v["name"] for v in destinations["values"]} == own_destinations

    for path, params in [
        ("/v1/breakout", span | {"customer": "cust-04"}),
        ("/v1/breakout", span | {"customer": [OWN, "cust-04"]}),
        ("/v1/breakout", span | {"customer": "cust-04", "format": "csv"}),
        ("/v1/customers", span | {"customer": "cust-04"}),
        ("/v1/destinations", span | {"customer": "cust-04"}),
        ("/v1/breakout", span | {"group_by": "provider"}),
        ("/v1/breakout", span | {"sort": "-provider_charge"}),
        ("/v1/breakout", span | {"sort": "profit", "format": "csv"}),
        ("/v1/breakout", span | {"sort": "-profit_pct"}),
        ("/v1/providers", span),
        ("/v1/alerts", {}),
        ("/v1/alerts/stream", {}),
    ]:
        response = await client.get(path, params=params, headers=headers)
        assert response.status_code == 403, (path, params, response.text)
        assert response.json()["detail"]


async def test_admin_lists_for_the_selectors(mirrored: Mirrored, client: httpx.AsyncClient) -> None:
    span = {"from": _iso(mirrored.start), "to": _iso(mirrored.end)}
    body = (await client.get("/v1/providers", params=span, headers=mirrored.headers())).json()
    expected: dict[str, int] = {}
    for cdr in mirrored.cdrs:
        expected[cdr["provider_id"]] = expected.get(cdr["provider_id"], 0) + 1
    assert {v["name"]: v["attempts"] for v in body["values"]} == expected
    attempts = [v["attempts"] for v in body["values"]]
    assert attempts == sorted(attempts, reverse=True)
    customers = (await client.get("/v1/customers", params=span, headers=mirrored.headers())).json()
    assert sum(v["attempts"] for v in customers["values"]) == len(mirrored.cdrs)


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"frm": "2026-01-01"}, 422, "unknown parameter 'frm'"),
        ({"from": "2026-13-01"}, 422, "is not a date"),
        ({"from": "yesterday"}, 422, "neither a date"),
        ({"from": "2026-11-02", "to": "2026-11-01"}, 422, "must be before"),
        ({"from": "2020-01-01", "tz": "UTC"}, 422, "beyond retention"),
        ({"tz": "Mars/Olympus"}, 422, "unknown time zone"),
        ({"sort": "price"}, 422, "not a column"),
        ({"sort": "provider"}, 422, "not a column"),
        ({"group_by": "country"}, 422, "group_by"),
        ({"limit": "0"}, 422, "limit"),
        ({"limit": "lots"}, 422, "limit"),
        ({"format": "xml"}, 422, "json or csv"),
        ({"from": "2026-11-01T10:00:30"}, 422, "whole minute"),
        ({"tz": ["UTC", "UTC"]}, 422, "once"),
        ({"from": "9999-12-31"}, 422, "includes its whole day"),
        ({"from": "2026-11-01", "to": "9999-12-31T23:00-05:00"}, 422, "outside the calendar"),
        ({"from": "0001-01-01", "to": "9999-12-30"}, 422, "beyond retention"),
        ({"tz": "a" * 300}, 422, "unknown time zone"),
    ],
)
async def test_bad_parameters_get_a_readable_422(
    mirrored: Mirrored, client: httpx.AsyncClient, params: dict[str, Any], status: int, message: str
) -> None:
    response = await client.get("/v1/breakout", params=params, headers=mirrored.headers())
    assert response.status_code == status, response.text
    assert message in response.json()["detail"], response.json()


async def test_keys_are_required(mirrored: Mirrored, client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer bk_not-a-key"}, {"X-API-Key": "nope"}):
        response = await client.get("/v1/breakout", headers=headers)
        assert response.status_code == 401, response.text
        assert "key" in response.json()["detail"]
    response = await client.get("/v1/me", headers={"X-API-Key": mirrored.keys["customer"]})
    assert response.json() == {"role": "customer", "customer": OWN}


async def test_health_readiness_and_metrics(mirrored: Mirrored, client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    body = ready.json()
    # The worker that mirrored the dataset has stopped: 30 s on, its lag reports are silent.
    assert (ready.status_code, body["status"]) in {(200, "ok"), (503, "stalled")}, ready.text
    assert (
        body["as_of_ms"] is not None and body["mirror_complete"] is True and body["missing_partitions"] == []
    )
    topics = {mirrored.settings.topic, f"{mirrored.settings.app_id}-normalized"}
    assert body["lag"] and {lag["topic"] for lag in body["lag"]} <= topics
    stale = await client.get("/readyz", params={"max_age": "0"})
    assert stale.status_code == 503 and stale.json()["status"] in {"stale", "stalled"}
    await client.get("/v1/breakout", headers=mirrored.headers())
    metrics = (await client.get("/metrics")).text
    assert 'breakout_api_requests_total{route="/v1/breakout",status="200"}' in metrics
    assert "breakout_mirror_complete 1.0" in metrics
    accepted = next(
        line for line in metrics.splitlines() if line.startswith('breakout_worker_cdrs{outcome="accepted"}')
    )
    assert float(accepted.split()[-1]) >= len(mirrored.cdrs)


async def test_unreachable_redis_is_503() -> None:
    """Not a crash and not a hang: the API says the mirror is unreachable."""
    key = new_key()
    app = create_app(load_settings(redis="redis://127.0.0.1:1/0", api_keys=key_entry(key, ADMIN)))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
    ):
        response = await http.get("/v1/breakout", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 503 and "unreachable" in response.json()["detail"]
        assert (await http.get("/readyz")).status_code == 503
