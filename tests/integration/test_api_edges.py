"""The read API at its edges: hidden columns, the ends of the calendar, formulas in CSV cells,
and every error body as the OpenAPI reference declares it. On a hand-written mirror in real Redis.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import pytest

from api.app import create_app
from breakout.auth import ADMIN, key_entry, new_key
from breakout.buckets import Granularity
from breakout.csv_cells import csv_cell
from breakout.settings import load_settings
from tests.integration.handmade import RANGE_READS, Served, mark_whole, serve, write_rows

pytestmark = pytest.mark.integration

DAY = 86400
TODAY = int(time.time()) // DAY * DAY
SPAN = {"from": time.strftime("%Y-%m-%d", time.gmtime(TODAY))}
COST_COLUMNS = ("provider_charge", "profit", "profit_pct")


@pytest.fixture
async def served(redis_url: str) -> AsyncIterator[Served]:
    async with serve(redis_url) as api:
        day = (Granularity.DAY, TODAY)
        rows = {
            ("France", "p1", "USD"): [10, 4, 300_000, 1_000_000, 1_500_000, 1, 2],
            ("Peru", "p2", "USD"): [5, 5, 90_000, 900_000, 300_000, 0, 0],
        }
        await write_rows(api.redis, api.layout, day, "acme", rows, 1)
        await mark_whole(api.redis, api.layout, api.partitions, event_ms=int(time.time() * 1000))
        yield api


async def test_a_customer_key_cannot_sort_by_the_costs_it_does_not_see(served: Served) -> None:
    for column in COST_COLUMNS:
        for sort in (column, f"-{column}"):
            for output in ("json", "csv"):
                params = SPAN | {"sort": sort, "format": output}
                response = await served.http.get("/v1/breakout", params=params, headers=served.customer)
                assert response.status_code == 403, (sort, output, response.text)
                assert f"sort: '{column}'" in response.json()["detail"]
                admin = await served.http.get("/v1/breakout", params=params, headers=served.admin)
                assert admin.status_code == 200, admin.text
    shown = await served.http.get(
        "/v1/breakout", params=SPAN | {"sort": "-attempts"}, headers=served.customer
    )
    assert [row["destination"] for row in shown.json()["rows"]] == ["France", "Peru"]
    assert all(row[column] is None for row in shown.json()["rows"] for column in COST_COLUMNS)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "9999-12-31"}, "from: '9999-12-31' includes its whole day"),
        ({"from": "9999-12-30", "to": "9999-12-31"}, "to: '9999-12-31' includes its whole day"),
        ({"from": "2026-11-01", "to": "9999-12-31T23:00-05:00"}, "outside the calendar"),
        (
            {"from": "9999-12-31T10:00Z", "to": "9999-12-31T11:00Z", "tz": "Etc/GMT-14"},
            "outside the calendar",
        ),
        ({"from": "0001-01-01T00:00+14:00", "to": "0001-01-02"}, "outside the calendar"),
        ({"from": "0001-01-01", "tz": "Etc/GMT-14"}, "outside the calendar"),
        ({"from": "0001-01-01"}, "beyond retention"),  # on the calendar, long expired
    ],
)
async def test_ranges_past_the_calendar_are_a_422_on_every_read(
    served: Served, params: dict[str, str], message: str
) -> None:
    for path, extra in RANGE_READS:
        response = await served.http.get(path, params=params | extra, headers=served.admin)
        assert response.status_code == 422, (path, extra, response.text)
        assert message in response.json()["detail"], response.json()


async def test_the_last_days_of_the_calendar_are_answered(served: Served) -> None:
    for params in (
        {"from": "9999-12-30"},
        {"from": "9999-12-31T00:00", "to": "9999-12-31T23:59", "tz": "Etc/GMT-14"},
    ):
        for path, extra in RANGE_READS:
            response = await served.http.get(path, params=params | extra, headers=served.admin)
            assert response.status_code == 200, (path, params, response.text)
    body = (await served.http.get("/v1/breakout", params={"from": "9999-12-30"}, headers=served.admin)).json()
    assert (body["to"], body["rows"]) == ("9999-12-31T00:00:00+00:00", [])


@pytest.mark.parametrize(
    "since", ["0001-01-01", "0001-01-01T00:00+14:00", "9999-12-31", "9999-12-31T23:59-14:00"]
)
async def test_alerts_since_the_ends_of_the_calendar(served: Served, since: str) -> None:
    response = await served.http.get("/v1/alerts", params={"since": since}, headers=served.admin)
    assert response.status_code == 200, response.text
    assert response.json() == {"active": [], "history": []}


def shown(value: Any) -> Any:
    """A JSON value as its CSV cell holds it: the SIP codes as ``code:count`` pairs."""
    if isinstance(value, dict):
        return " ".join(f"{code}:{count}" for code, count in value.items())
    return value


async def test_csv_cells_are_written_as_the_portal_writes_them(served: Served) -> None:
    """Names from CDRs that a spreadsheet would run are neutralised; losses stay numbers."""
    names = {
        '=HYPERLINK("https://x.example","Refund")': "+cmd|' /C calc'!A0",
        "@SUM(A1:A9)": "-2+3",
        "\tindent": "\rreturn",
    }
    for n, (customer, destination) in enumerate(names.items()):
        counters = [1, 1, 1000, 2_000_000, 1_500_000, 0, 0]  # a loss: profit -0.500000
        await write_rows(
            served.redis,
            served.layout,
            (Granularity.DAY, TODAY),
            customer,
            {(destination, "p", "USD"): counters},
            10 + n,
        )
    params = SPAN | {"sort": "customer", "customer": list(names)}
    body = (await served.http.get("/v1/breakout", params=params, headers=served.admin)).json()
    text = (
        await served.http.get("/v1/breakout", params=params | {"format": "csv"}, headers=served.admin)
    ).text
    header, *lines = text.split("\r\n")[:-1]
    columns = header.split(",")
    assert lines == [",".join(csv_cell(shown(row[column])) for column in columns) for row in body["rows"]]
    table = list(csv.DictReader(io.StringIO(text, newline="")))
    assert {(row["customer"], row["destination"]) for row in table} == {
        ("'" + customer, "'" + destination) for customer, destination in names.items()
    }
    assert {row["profit"] for row in table} == {"-0.500000"}


async def _error_responses(
    served: Served, unreachable: httpx.AsyncClient
) -> list[tuple[str, httpx.Response]]:
    """One of every error the API answers, with the route it came from."""
    span, admin, customer = SPAN, served.admin, served.customer
    asks: list[tuple[httpx.AsyncClient, str, dict[str, Any], dict[str, str]]] = [
        (served.http, "/v1/breakout", span, {}),
        (served.http, "/v1/breakout", span, {"Authorization": "Bearer bk_unknown"}),
        (served.http, "/v1/breakout", span | {"sort": "-profit"}, customer),
        (served.http, "/v1/breakout", span | {"customer": "beta"}, customer),
        (served.http, "/v1/breakout", span | {"group_by": "provider"}, customer),
        (served.http, "/v1/breakout", {"frm": "2026-01-01"}, admin),
        (served.http, "/v1/breakout", span | {"limit": "lots"}, admin),
        (served.http, "/v1/breakout", {"from": "9999-12-31", "format": "csv"}, admin),
        (served.http, "/v1/me", {}, {}),
        (served.http, "/v1/destinations", {"tz": "Mars/Olympus"}, admin),
        (served.http, "/v1/providers", span, customer),
        (served.http, "/v1/alerts", {}, customer),
        (served.http, "/v1/alerts", {"since": "soon"}, admin),
        (served.http, "/v1/alerts/stream", {}, customer),
        (served.http, "/readyz", {"max_age": "soon"}, {}),
        (unreachable, "/v1/breakout", span, admin),
        (unreachable, "/v1/destinations", span, admin),
        (unreachable, "/v1/alerts", {}, admin),
        (unreachable, "/readyz", {}, {}),
        (unreachable, "/metrics", {}, {}),
    ]
    answered = [
        (path, await client.get(path, params=params, headers=headers))
        for client, path, params, headers in asks
    ]
    await served.redis.delete(served.layout.marker)  # Redis lost the mirror: it is being refilled
    for path, params in RANGE_READS:
        answered.append((path, await served.http.get(path, params=span | params, headers=admin)))
    answered.append(("/readyz", await served.http.get("/readyz")))
    return answered


async def test_every_error_body_is_what_the_openapi_reference_declares(served: Served) -> None:
    key = new_key()
    down = create_app(load_settings(redis="redis://127.0.0.1:1/0", api_keys=key_entry(key, ADMIN)))
    spec = down.openapi()
    async with (
        down.router.lifespan_context(down),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=down), base_url="http://api") as unreachable,
    ):
        unreachable.headers["Authorization"] = f"Bearer {key}"
        answered = await _error_responses(served, unreachable)
    statuses = set()
    for path, response in answered:
        assert response.status_code >= 400, (path, response.text)
        declared = spec["paths"][path]["get"]["responses"].get(str(response.status_code))
        assert declared is not None, (
            f"{path} answered {response.status_code}, which its reference does not declare"
        )
        media_type = response.headers["content-type"].split(";")[0]
        assert media_type in declared["content"], (path, response.status_code, media_type)
        schema = {"$ref": declared["content"][media_type]["schema"]["$ref"], "components": spec["components"]}
        jsonschema.Draft202012Validator(schema).validate(response.json())
        if response.status_code == 503 and "Retry-After" in declared.get("headers", {}):
            assert response.headers.get("retry-after") == "2" or "unreachable" in response.json()["detail"]
        statuses.add((path, response.status_code))
    assert {("/v1/breakout", status) for status in (401, 403, 422, 503)} <= statuses
