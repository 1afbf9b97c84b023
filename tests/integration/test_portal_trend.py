"""The portal's trend chart and SIP code panel in a real headless Chromium, against the real API
on Redis filled by the real pipeline from a known dataset: a quiet period two days back, then
a day of the same traffic with a burst of 503s on one destination in its last hours.

What the chart draws (the data attributes of its SVG) must be what ``GET /v1/series`` answers
for the same selection, the alert markers what ``GET /v1/alerts`` holds for the selection's
destinations, the cause panel what ``GET /v1/causes`` answers; a hover shows a point's exact
strings. Screenshots: ``test-artifacts/portal-trend-1366.png`` and ``-1920.png``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from api.app import create_app
from breakout.auth import ADMIN, Role, key_entry, new_key
from breakout.noc.keys import history_key
from breakout.settings import Settings, load_settings
from tests.integration.pipeline import Worker, publish, with_dial_codes
from tests.integration.test_portal import (
    ARTIFACTS,
    chromium,
    css,
    refresh,
    select_destination,
    serve_api,
    set_period,
    sign_in,
    wait,
)

pytestmark = pytest.mark.integration

OWN = "cust-01"  # the customer key's account
BURST = "Country 0"  # the destination whose calls fail with 503 in the last hours
QUIET = "Country 1"
PREFIXES = {BURST: "2001", QUIET: "2071", "Country 2": "2141"}  # in tests.dataset.dial_code_table
USUAL_CODES = [200] * 11 + [486] * 4 + [487] * 2 + [404] * 2 + [None]  # None: no sip_code
METRICS = ("asr", "ner", "acd", "pdd", "attempts")
SVG_WIDTH = "return document.querySelector('#trend-chart svg').width.baseVal.value"


@dataclass
class Trend:
    settings: Settings
    keys: dict[str, str]
    cdrs: list[dict[str, Any]]
    first_day: str  # the portal's range: yesterday and today (UTC), so 15-minute points
    last_day: str
    range_start: float  # epoch seconds

    def headers(self, who: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


def trend_cdrs(now: float) -> list[dict[str, Any]]:
    """The known traffic, timed from ``now``: 720 CDRs 70 to 50 hours ago (the previous period
    of a two-day range), 1440 over the 20 hours before the last 4, then 720 in those 4 hours,
    when half of BURST's attempts fail with 503. About one in ten reports no PDD."""
    rng = random.Random(14)
    cdrs: list[dict[str, Any]] = []

    def add(count: int, begin: float, end: float, burst: bool) -> None:
        for i in range(count):
            destination = rng.choice(sorted(PREFIXES))
            code = 503 if burst and destination == BURST and rng.random() < 0.5 else rng.choice(USUAL_CODES)
            answered = code == 200 or (code is None and rng.random() < 0.5)
            cdr: dict[str, Any] = {
                "id": f"trend-{len(cdrs)}",
                "customer_id": rng.choice([OWN, "cust-02"]),
                "provider_id": rng.choice(["prov-1", "prov-2"]),
                "dst": f"+{PREFIXES[destination]}{rng.randrange(10**6):06d}",
                "start_time": round(begin + (end - begin) * i / count, 3),
                "duration": rng.choice([3, rng.randint(7, 400)]) if answered else 0,
                "status": "answered" if answered else "failed",
                "provider_charge": "0.010000",
                "customer_charge": "0.020000",
                "currency": "USD",
                "dtmf": 0,
            }
            if code is not None:
                cdr["sip_code"] = code
            if rng.random() < 0.9:
                cdr["pdd_ms"] = rng.randint(800, 9000)
            cdrs.append(cdr)

    add(720, now - 70 * 3600, now - 50 * 3600, burst=False)
    add(1440, now - 24 * 3600, now - 4 * 3600, burst=False)
    add(720, now - 4 * 3600, now - 600, burst=True)
    return cdrs


def destination_of(cdr: dict[str, Any]) -> str:
    return next(name for name, prefix in PREFIXES.items() if cdr["dst"].startswith(f"+{prefix}"))


def alert(destination: str, state: str, at: float) -> dict[str, Any]:
    """An alert document as the worker's detector records it."""
    moment = datetime.fromtimestamp(at // 60 * 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "key": orjson.dumps([destination, "prov-1"]).decode(),
        "incident": f"trend-{destination}-{int(at)}",
        "destination": destination,
        "provider": "prov-1",
        "state": state,
        "metric": "asr",
        "asr": 12.5,
        "baseline_asr": 55.0,
        "threshold": 35.0,
        "attempts": 40,
        "window_start": moment,
        "window_end": moment,
        "detected_at": moment,
        "emitted_at": moment,
    }


@pytest.fixture(scope="module")
async def trend(kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Trend:
    """The known traffic through a real worker into Redis, served whole, and three alerts."""
    tmp = tmp_path_factory.mktemp("trend")
    token = tmp.name.replace("_", "-")[-12:]
    keys = {"admin": new_key(), "customer": new_key()}
    settings = load_settings(
        kafka=kafka_bootstrap,
        redis=redis_url,
        topic=f"cdrs-trend-{token}",
        app_id=f"breakout-trend-{token}",
        data_dir=tmp / "data",
        store="memory://",
        rebalance_timeout=10,
        api_keys=f"{key_entry(keys['admin'], ADMIN)},{key_entry(keys['customer'], Role(OWN))}",
    )
    settings, _ = with_dial_codes(settings, tmp)
    now = time.time()
    today = datetime.fromtimestamp(now, UTC).date()
    cdrs = trend_cdrs(now)
    worker = Worker(settings, tmp / "w", tmp / "worker.log")
    try:
        # Oldest first, in batches of 20, as a platform catching up would send them.
        await publish(settings, [(None, orjson.dumps(cdrs[i : i + 20])) for i in range(0, len(cdrs), 20)])
        await _served_whole(settings, keys["admin"], today, len(cdrs), worker)
    finally:
        worker.stop()
    client = aioredis.from_url(settings.redis)
    try:
        recorded = [alert(BURST, "raised", now - 3 * 3600), alert(QUIET, "raised", now - 2 * 3600)]
        recorded.append(alert(BURST, "cleared", now - 3600))
        await client.zadd(
            history_key(settings.app_id),
            {orjson.dumps(a): datetime.fromisoformat(a["detected_at"]).timestamp() * 1000 for a in recorded},
        )
    finally:
        await client.aclose()
    first = today - timedelta(days=1)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC).timestamp()
    return Trend(settings, keys, cdrs, first.isoformat(), today.isoformat(), start)


async def _served_whole(settings: Settings, key: str, today: date, count: int, worker: Worker) -> None:
    """Wait until the API serves every CDR (the five days holding them, summed)."""
    app = create_app(settings)
    params = {
        "from": (today - timedelta(days=4)).isoformat(),
        "to": today.isoformat(),
        "group_by": "destination",
    }
    deadline = time.monotonic() + 120
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        while True:
            assert worker.process.poll() is None, f"worker exited:\n{worker.tail()}"
            answer = await client.get(
                "/v1/breakout", params=params, headers={"Authorization": f"Bearer {key}"}
            )
            if answer.status_code == 200 and answer.json()["totals"]["attempts"] == count:
                return
            assert time.monotonic() < deadline, f"not all {count} CDRs served: {answer.text[:300]}"
            await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
def portal(trend: Trend) -> Iterator[str]:
    with serve_api(trend.settings) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("trend-downloads")) as driver:
        yield driver


def api_get(portal: str, trend: Trend, path: str, params: list[tuple[str, str]], who: str = "admin") -> Any:
    answer = httpx.get(f"{portal}{path}", params=params, headers=trend.headers(who), timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def selection(trend: Trend, *destinations: str) -> list[tuple[str, str]]:
    return [("from", trend.first_day), ("to", trend.last_day), ("tz", "UTC")] + [
        ("destination", d) for d in destinations
    ]


def chart_points(driver: WebDriver) -> list[dict[str, str]]:
    """Each point the chart drew: its times and exact values, from its hover column."""
    script = """return [...document.querySelectorAll("#trend-chart .trend-hit")].map((r) => {
                  const point = {start: r.dataset.start, end: r.dataset.end};
                  for (const m of arguments[0]) point[m] = r.dataset[m];
                  return point;
                });"""
    points: list[dict[str, str]] = driver.execute_script(script, list(METRICS))
    return points


def as_drawn(points: list[dict[str, Any]]) -> list[dict[str, str]]:
    """API points as the chart's data attributes carry them: strings, "" for null."""
    return [
        {"start": p["start"], "end": p["end"], **{m: "" if p[m] is None else str(p[m]) for m in METRICS}}
        for p in points
    ]


def chart_markers(driver: WebDriver) -> list[tuple[str, str, str]]:
    markers: list[tuple[str, str, str]] = driver.execute_script(
        """return [...document.querySelectorAll("#trend-chart .trend-marker")].map(
             (g) => [g.dataset.state, g.dataset.destination, g.dataset.at]);"""
    )
    return [(state, destination, at) for state, destination, at in markers]


def expected_markers(
    portal: str, trend: Trend, series: dict[str, Any], destinations: set[str]
) -> list[tuple[str, str, str]]:
    """The alerts of the selection's destinations (all without a filter) inside the range."""
    history = api_get(portal, trend, "/v1/alerts", [("since", series["from"])])["history"]
    start, end = datetime.fromisoformat(series["from"]), datetime.fromisoformat(series["to"])
    return [
        (a["state"], a["destination"], a["detected_at"])
        for a in history
        if (not destinations or a["destination"] in destinations)
        and start <= datetime.fromisoformat(a["detected_at"]) < end
    ]


def cause_rows(driver: WebDriver) -> list[tuple[str, ...]]:
    rows: list[list[str]] = driver.execute_script(
        """return [...document.querySelectorAll("#causes-body tbody tr")].map((tr) =>
             ["code", "count", "share", "previousCount", "previousShare", "change"].map((k) => tr.dataset[k])
               .concat([tr.classList.contains("grew") ? "grew" : ""]));"""
    )
    return [tuple(row) for row in rows]


def expected_causes(body: dict[str, Any]) -> list[tuple[str, ...]]:
    def text(value: Any) -> str:
        return "" if value is None else str(value)

    return [
        (
            c["code"],
            str(c["count"]),
            text(c["share"]),
            text(c["previous_count"]),
            text(c["previous_share"]),
            text(c["change_points"]),
            "grew" if c["change_points"] is not None and float(c["change_points"]) > 0 else "",
        )
        for c in body["codes"]
    ]


def shows(driver: WebDriver, expected: list[dict[str, str]]) -> bool:
    """Whether the chart now draws exactly ``expected`` (the panels load beside the table)."""
    return chart_points(driver) == expected


def ticked_metrics(driver: WebDriver) -> list[str]:
    return [m for m in METRICS if css(driver, f'#trend-metrics input[data-metric="{m}"]').is_selected()]


def page_fits(driver: WebDriver) -> bool:
    return bool(driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"))


def test_the_chart_and_the_cause_panel_draw_what_the_api_answers(
    trend: Trend, portal: str, browser: WebDriver
) -> None:
    try:
        browser.set_window_size(1366, 768)
        sign_in(browser, portal, trend.keys["admin"])
        set_period(browser, trend.first_day, trend.last_day)
        refresh(browser)

        # No destination chosen: every destination's alerts are marked.
        series = api_get(portal, trend, "/v1/series", [*selection(trend), ("resolution", "15m")])
        assert series["resolution"] == "15m" and len(series["points"]) == 192  # two days, auto
        wait(browser, lambda d: shows(d, as_drawn(series["points"])))
        everywhere = expected_markers(portal, trend, series, set())
        assert {(s, d) for s, d, _ in everywhere} >= {
            ("raised", BURST),
            ("cleared", BURST),
            ("raised", QUIET),
        }
        assert chart_markers(browser) == everywhere

        # One destination: its points, its markers only, its codes.
        select_destination(browser, BURST)
        refresh(browser)
        series = api_get(portal, trend, "/v1/series", [*selection(trend, BURST), ("resolution", "15m")])
        points = series["points"]
        wait(browser, lambda d: shows(d, as_drawn(points)))
        assert set(series["metrics"]) == set(METRICS)  # the API's default: what the chart asks for
        assert css(browser, "#trend-resolution").get_attribute("value") == "auto"
        assert "15 min" in Select(css(browser, "#trend-resolution")).first_selected_option.text
        markers = expected_markers(portal, trend, series, {BURST})
        assert {d for _, d, _ in markers} == {BURST}
        assert {"raised", "cleared"} <= {s for s, _, _ in markers}  # ours (the detector may add its own)
        assert chart_markers(browser) == markers
        assert not css(browser, "#trend-legend").get_attribute("hidden")

        # The default metrics are drawn: a line per ratio through each point that has one, bars.
        for metric in ("asr", "ner"):
            path = css(browser, f'#trend-chart path[data-metric="{metric}"]').get_attribute("d") or ""
            assert path.count("M") + path.count("L") == sum(p[metric] is not None for p in points), metric
        bars = browser.find_elements(By.CSS_SELECTOR, "#trend-chart .trend-bar")
        assert [b.get_attribute("data-value") for b in bars] == [str(p["attempts"]) for p in points]
        assert not browser.find_elements(By.CSS_SELECTOR, '#trend-chart path[data-metric="acd"]')

        # Hover: the busiest point's time range and exact strings, as the API wrote them.
        busiest = max(range(len(points)), key=lambda i: (points[i]["attempts"], -i))
        point = points[busiest]
        hit = css(browser, f'#trend-chart .trend-hit[data-index="{busiest}"]')
        ActionChains(browser).move_to_element(hit).perform()
        tip = css(browser, "#trend-chart .trend-tip")
        wait(browser, lambda d: tip.is_displayed() and tip.get_attribute("data-index") == str(busiest))
        start, end = datetime.fromisoformat(point["start"]), datetime.fromisoformat(point["end"])
        when = css(browser, ".trend-tip .tip-time").text
        assert f"{start:%H:%M} \u2013 {end:%H:%M} UTC" in when and str(start.day) in when, when
        values = {
            row.get_attribute("data-metric"): row.find_element(By.CSS_SELECTOR, ".tip-value").text
            for row in browser.find_elements(By.CSS_SELECTOR, ".trend-tip .tip-row")
        }
        assert values == {
            "asr": f"{point['asr']}%",
            "ner": f"{point['ner']}%",
            "attempts": f"{point['attempts']:,}",
        }

        # The causes: the API's rows in its order (most grown first), 503 on top as it burst.
        causes = api_get(portal, trend, "/v1/causes", selection(trend, BURST))
        wait(browser, lambda d: cause_rows(d) == expected_causes(causes))
        burst_503 = sum(
            1
            for c in trend.cdrs
            if destination_of(c) == BURST
            and c.get("sip_code") == 503
            and c["start_time"] >= trend.range_start
        )
        code, count, _, before, _, _, grew = cause_rows(browser)[0]
        assert (code, count, before, grew) == ("503", str(burst_503), "0", "grew")
        caption = css(browser, ".causes-caption").text
        assert f"{causes['attempts']:,} attempts now" in caption
        assert f"{causes['previous_attempts']:,} before" in caption

        # Fits a 1366-px screen beside the table: no horizontal scroll of the page.
        assert page_fits(browser)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "portal-trend-1366.png"))

        # All five metrics, each panel drawn; remembered after a reload.
        for metric in ("acd", "pdd"):
            css(browser, f'#trend-metrics input[data-metric="{metric}"]').click()
        for metric in ("asr", "ner", "acd", "pdd"):
            path = css(browser, f'#trend-chart path[data-metric="{metric}"]').get_attribute("d") or ""
            assert path.count("M") + path.count("L") == sum(p[metric] is not None for p in points), metric
        hit = css(browser, f'#trend-chart .trend-hit[data-index="{busiest}"]')  # drawn anew
        ActionChains(browser).move_to_element(hit).perform()
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '.trend-tip .tip-row[data-metric="pdd"]'))
        pdd = css(browser, '.trend-tip .tip-row[data-metric="pdd"] .tip-value').text
        assert pdd == (f"{point['pdd']} s" if point["pdd"] is not None else "no data")
        assert page_fits(browser)
        browser.set_window_size(1920, 1080)
        wait(browser, lambda d: d.execute_script(SVG_WIDTH) > 1200)  # redrawn at the new width
        assert page_fits(browser)
        browser.save_screenshot(str(ARTIFACTS / "portal-trend-1920.png"))

        # At least one metric stays: unticking them all leaves the last one.
        for metric in METRICS:
            box = css(browser, f'#trend-metrics input[data-metric="{metric}"]')
            if box.is_selected():
                box.click()
        assert ticked_metrics(browser) == ["attempts"]
        browser.refresh()
        wait(browser, lambda d: css(d, "#trend-metrics input[data-metric='attempts']").is_displayed())
        assert ticked_metrics(browser) == ["attempts"]

        # Another resolution, chosen by hand: hourly points, equal to the API's.
        set_period(browser, trend.first_day, trend.last_day)
        select_destination(browser, BURST)
        refresh(browser)
        Select(css(browser, "#trend-resolution")).select_by_value("hour")
        hourly = api_get(portal, trend, "/v1/series", [*selection(trend, BURST), ("resolution", "hour")])
        assert len(hourly["points"]) == 48
        wait(browser, lambda d: shows(d, as_drawn(hourly["points"])))

        # A refusal (per-minute totals of five days reach beyond their retention) is the API's sentence.
        first = (date.fromisoformat(trend.first_day) - timedelta(days=3)).isoformat()
        set_period(browser, first, trend.last_day)
        Select(css(browser, "#trend-resolution")).select_by_value("minute")
        refresh(browser)
        refused = httpx.get(
            f"{portal}/v1/series",
            params=[("from", first), ("to", trend.last_day), ("tz", "UTC"), ("resolution", "minute")],
            headers=trend.headers(),
        )
        assert refused.status_code == 422
        wait(browser, lambda d: css(d, "#trend-chart .trend-empty").text == refused.json()["detail"])
    finally:
        browser.execute_script("window.localStorage.removeItem('breakout.trendMetrics')")
        browser.set_window_size(1600, 1000)


def test_a_customer_key_sees_its_trend_without_alert_markers(
    trend: Trend, portal: str, browser: WebDriver
) -> None:
    sign_in(browser, portal, trend.keys["customer"])
    set_period(browser, trend.first_day, trend.last_day)
    refresh(browser)
    series = api_get(portal, trend, "/v1/series", [*selection(trend), ("resolution", "15m")], who="customer")
    own = sum(1 for c in trend.cdrs if c["customer_id"] == OWN and c["start_time"] >= trend.range_start)
    assert sum(p["attempts"] for p in series["points"]) == own  # its own traffic only
    wait(browser, lambda d: shows(d, as_drawn(series["points"])))
    assert chart_markers(browser) == []
    assert css(browser, "#trend-legend").get_attribute("hidden")
    causes = api_get(portal, trend, "/v1/causes", selection(trend), who="customer")
    wait(browser, lambda d: cause_rows(d) == expected_causes(causes))
    css(browser, "#sign-out").click()
    assert browser.find_elements(By.CSS_SELECTOR, "#trend-chart .trend-hit") == []
