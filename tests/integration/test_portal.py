"""The portal page in a real headless Chromium, against the real API on Redis filled by the real
pipeline: a person's steps (key, dates, Select Destination, Refresh) must show the totals that
``tests.dataset.expected_report`` computes independently, in Decimal, from the raw CDRs.

Chromium and chromedriver are Debian's (``scripts/chromium.sh``, which ``scripts/test`` runs).
Screenshots land in ``test-artifacts/`` (``portal.png``, ``portal-1366.png``, ``portal-1920.png``).
The trend chart and the cause panel have their own dataset: ``test_portal_trend.py``.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import redis.asyncio as aioredis
import uvicorn
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from api.app import create_app
from breakout.noc.keys import active_key
from breakout.settings import Settings
from tests import dataset
from tests.conftest import ROOT, free_port
from tests.integration.pipeline import Mirrored, mirror_dataset

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "test-artifacts"
OWN = "cust-05"  # the customer key's account
T = TypeVar("T")


@pytest.fixture(scope="module")
async def mirrored(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Mirrored:
    return await mirror_dataset(
        kafka_bootstrap,
        redis_url,
        tmp_path_factory.mktemp("portal"),
        name="portal",
        seed=23,
        total=3000,
        customer=OWN,
    )


def days(mirrored: Mirrored) -> tuple[str, str]:
    """The UTC dates covering every CDR."""
    return mirrored.start.date().isoformat(), (mirrored.end - timedelta(minutes=1)).date().isoformat()


def expected_over_days(
    mirrored: Mirrored, group_by: tuple[str, ...], admit: Callable[[dict[str, Any], str], bool]
) -> tuple[Any, Any, Any]:
    """``dataset.expected_report`` over the whole UTC days of ``days(mirrored)``."""
    first_day, last_day = days(mirrored)
    start = datetime.fromisoformat(first_day).replace(tzinfo=UTC)
    end = datetime.fromisoformat(last_day).replace(tzinfo=UTC) + timedelta(days=1)
    return dataset.expected_report(
        mirrored.cdrs, mirrored.table, start.timestamp(), end.timestamp(), group_by, admit=admit
    )


@contextmanager
def serve_api(settings: Settings) -> Iterator[str]:
    """The real API (and its page) served by uvicorn on a free loopback port, in a thread."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", loop="asyncio"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-portal", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def portal(mirrored: Mirrored) -> Iterator[str]:
    with serve_api(mirrored.settings) as url:
        yield url


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@contextmanager
def chromium(downloads: Path) -> Iterator[WebDriver]:
    """Debian's headless Chromium through Debian's chromedriver: nothing is downloaded."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    assert not missing, f"{', '.join(missing)} missing: run scripts/chromium.sh (scripts/test does)"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1600,1000",
        "--lang=en-US",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[WebDriver]:
    with chromium(downloads) as driver:
        yield driver


def wait(driver: WebDriver, until: Callable[[WebDriver], T], timeout: float = 30) -> T:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(until)


def css(driver: WebDriver, selector: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, selector)


def answered(driver: WebDriver) -> int:
    return int(css(driver, "#app").get_attribute("data-answered") or 0)


def sign_in(driver: WebDriver, url: str, key: str) -> None:
    driver.get(url + "/")
    driver.execute_script("window.localStorage.clear()")
    driver.get(url + "/")
    field = css(driver, "#api-key")
    wait(driver, lambda d: field.is_displayed())  # once the module has run
    field.send_keys(key)
    css(driver, "#sign-in").click()
    wait(driver, lambda d: answered(d) >= 1)  # the first snapshot (today) has been answered


def set_period(driver: WebDriver, first: str, last: str) -> None:
    """Type-independent: set the date inputs as the picker would, firing their change events."""
    driver.execute_script(
        """for (const [id, value] of [["from", arguments[0]], ["to", arguments[1]]]) {
             const input = document.getElementById(id);
             input.value = value;
             input.dispatchEvent(new Event("change", { bubbles: true }));
           }""",
        first,
        last,
    )


def select_destination(driver: WebDriver, name: str) -> None:
    css(driver, "#destination-select .ms-toggle").click()
    css(driver, "#destination-select .ms-search").send_keys(name)

    def tick(d: WebDriver) -> bool:  # the list may be redrawn when the new period's names arrive
        try:
            box = d.find_element(By.CSS_SELECTOR, f'#destination-select [data-value="{name}"] input')
            if box.is_selected():
                return True
            box.click()
        except (NoSuchElementException, StaleElementReferenceException):
            pass
        return False

    wait(driver, tick)
    css(driver, "#destination-select .ms-search").send_keys(Keys.ESCAPE)
    assert css(driver, "#destination-select .ms-value").text == name


def refresh(driver: WebDriver) -> None:
    before = answered(driver)
    css(driver, "#refresh").click()
    wait(driver, lambda d: answered(d) > before)
    error = css(driver, "#error")
    assert not error.is_displayed(), error.text


def column(driver: WebDriver, name: str) -> list[str]:
    """The texts of one column over the rows in the DOM (the first screenfuls)."""
    headers = [th.get_attribute("data-col") for th in driver.find_elements(By.CSS_SELECTOR, "#header-row th")]
    index = headers.index(name) + 1
    cells = driver.find_elements(By.CSS_SELECTOR, f"#rows tr:not(.pad) td:nth-child({index})")
    return [cell.text for cell in cells]


def total(driver: WebDriver, row: str, col: str) -> tuple[str, str]:
    """(text shown, exact value) of one totals cell."""
    cell = css(driver, f"{row} [data-col={col}]")
    return cell.text, cell.get_attribute("data-value") or ""


def money(value: str, currency: str) -> str:
    """At the currency's usual decimals (cents for the dataset's USD and EUR), half to even."""
    assert currency in ("USD", "EUR"), currency
    return f"{Decimal(value).quantize(Decimal('0.01'), ROUND_HALF_EVEN):,f}"


def duration(hms: str) -> str:
    """The API's H:MM:SS as the page shows it: minutes (thousands separators) and seconds."""
    hours, minutes, seconds = hms.split(":")
    return f"{int(hours) * 60 + int(minutes):,}:{seconds}"


async def test_totals_for_one_destination_equal_the_independent_sums(
    mirrored: Mirrored, portal: str, browser: WebDriver, downloads: Path
) -> None:
    by_destination, _, _ = dataset.expected_report(mirrored.cdrs, mirrored.table, 0, 2e10, ("destination",))
    busiest = max(by_destination.values(), key=lambda row: (row["attempts"], row["destination"]))
    name = busiest["destination"]
    first_day, last_day = days(mirrored)
    rows, totals, per_currency = expected_over_days(
        mirrored, ("customer", "destination"), lambda cdr, destination: destination == name
    )

    # An open NOC incident on that destination, as the worker's detector records it.
    alert = {
        "key": orjson.dumps([name, "prov-1"]).decode(),
        "incident": "0123456789abcdef",
        "destination": name,
        "provider": "prov-1",
        "state": "raised",
        "asr": 6.67,
        "baseline_asr": 50.72,
        "threshold": 30.72,
        "attempts": 60,
        "window_start": "2026-11-25T13:45:00Z",
        "window_end": "2026-11-25T13:46:00Z",
        "detected_at": "2026-11-25T13:46:00Z",
        "emitted_at": "2026-11-25T19:57:02.448Z",
    }
    client = aioredis.from_url(mirrored.settings.redis)
    try:
        await client.hset(active_key(mirrored.settings.app_id), alert["key"], orjson.dumps(alert))
    finally:
        await client.aclose()

    sign_in(browser, portal, mirrored.keys["admin"])
    assert css(browser, "#account-name").text == "Administrator"
    assert css(browser, "#customer-select").is_displayed() and css(browser, "#provider-select").is_displayed()
    set_period(browser, first_day, last_day)
    select_destination(browser, name)
    refresh(browser)

    # The totals row: counts and ratios over every currency, exactly as computed in Decimal.
    assert total(browser, "#totals-row", "attempts") == (f"{totals['attempts']:,}", str(totals["attempts"]))
    assert total(browser, "#totals-row", "connected") == (
        f"{totals['connected']:,}",
        str(totals["connected"]),
    )
    assert total(browser, "#totals-row", "pending")[1] == str(totals["pending"])
    assert total(browser, "#totals-row", "dtmf")[1] == str(totals["dtmf"])
    assert total(browser, "#totals-row", "asr") == (f"{totals['asr']}%", totals["asr"])
    assert total(browser, "#totals-row", "ner") == (f"{totals['ner']}%", totals["ner"])
    assert total(browser, "#totals-row", "pdd") == (f"{totals['pdd']} s", totals["pdd"])
    assert total(browser, "#totals-row", "duration") == (duration(totals["duration_hms"]), totals["duration"])
    # Money is per currency (never summed across them), to the micro-unit.
    if len(per_currency) == 1:
        lines = [("#totals-row", totals)]
    else:
        assert total(browser, "#totals-row", "customer_charge")[1] == ""
        lines = [(f'tr.currency-total-row[data-currency="{t["currency"]}"]', t) for t in per_currency]
    for selector, expected in lines:
        currency = expected["currency"]
        for col in ("customer_charge", "provider_charge", "profit"):
            assert total(browser, selector, col) == (money(expected[col], currency), expected[col]), col
        assert total(browser, selector, "attempts")[1] == str(expected["attempts"])

    # The open alert: in the panel, and flagged on the destination's rows.
    assert css(browser, "#alerts").is_displayed()
    assert (
        "via prov-1: ASR 6.67% (usually 50.72%)"
        in css(browser, f'#alert-list [data-destination="{name}"]').text
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#rows td .alert-flag")

    # The rows: one per customer and currency, all of the chosen destination.
    assert css(browser, "#row-count").text == f"{len(rows)} rows"
    assert {cell.removesuffix(" ASR") for cell in column(browser, "destination")} == {name}
    shown = {
        (c, name, cur)
        for c, cur in zip(column(browser, "customer"), column(browser, "currency"), strict=True)
    }
    assert shown == set(rows)

    # Click-to-sort, numeric-aware, both directions (the first click on a number sorts descending).
    css(browser, "[data-col=customer_charge] button").click()
    css(browser, "[data-col=attempts] button").click()
    descending = [int(v.replace(",", "")) for v in column(browser, "attempts")]
    assert descending == sorted(descending, reverse=True)
    assert css(browser, "[data-col=attempts]").get_attribute("aria-sort") == "descending"
    css(browser, "[data-col=attempts] button").click()
    ascending = [int(v.replace(",", "")) for v in column(browser, "attempts")]
    assert ascending == sorted(ascending)

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "portal.png"
    browser.save_screenshot(str(screenshot))
    print(f"portal screenshot: {screenshot}")

    # CSV: exactly the rows shown, in the order shown, then the totals lines; values exact.
    css(browser, "#download-csv").click()
    path = wait(browser, lambda d: next((p for p in downloads.glob("*.csv")), None))
    text = path.read_text(encoding="utf-8-sig")
    lines_csv = list(csv.DictReader(io.StringIO(text)))
    body = [line for line in lines_csv if not line["Customer"].startswith("Total")]
    assert [int(line["Attempts"]) for line in body] == ascending
    assert {(line["Customer"], line["Destination"], line["Currency"]) for line in body} == set(rows)
    for line in body:
        expected_row = rows[(line["Customer"], line["Destination"], line["Currency"])]
        assert line["Total Customer Charge"] == expected_row["customer_charge"]
        assert line["Duration (s)"] == expected_row["duration"]
    grand = next(line for line in lines_csv if line["Customer"] == "Total")
    assert grand["Attempts"] == str(totals["attempts"]) and grand["Connected"] == str(totals["connected"])
    for t in per_currency if len(per_currency) > 1 else []:
        line = next(line for line in lines_csv if line["Customer"] == f"Total {t['currency']}")
        assert line["Total Customer Charge"] == t["customer_charge"] and line["Profit"] == t["profit"]


def test_a_customer_key_sees_its_own_account_without_costs(
    mirrored: Mirrored, portal: str, browser: WebDriver
) -> None:
    first_day, last_day = days(mirrored)
    rows, totals, _ = expected_over_days(
        mirrored, ("destination",), lambda cdr, destination: cdr["customer_id"] == OWN
    )
    sign_in(browser, portal, mirrored.keys["customer"])
    assert css(browser, "#account-name").text == f"Account {OWN}"
    assert not css(browser, "#customer-select").is_displayed()
    assert not css(browser, "#provider-select").is_displayed()
    set_period(browser, first_day, last_day)
    refresh(browser)
    headers = [
        th.get_attribute("data-col") for th in browser.find_elements(By.CSS_SELECTOR, "#header-row th")
    ]
    assert "customer" not in headers and "destination" in headers
    assert not {"provider_charge", "profit", "profit_pct"} & set(headers)
    assert total(browser, "#totals-row", "attempts")[1] == str(totals["attempts"])
    assert css(browser, "#row-count").text == f"{len(rows)} rows"

    css(browser, "#sign-out").click()
    assert css(browser, "#signin").is_displayed()
    assert browser.execute_script("return window.localStorage.length") == 0


def test_an_unknown_key_is_refused_with_the_apis_sentence(portal: str, browser: WebDriver) -> None:
    browser.get(portal + "/")
    browser.execute_script("window.localStorage.clear()")
    browser.get(portal + "/")
    field = css(browser, "#api-key")
    wait(browser, lambda d: field.is_displayed())
    field.send_keys("bk_not-a-key")
    css(browser, "#sign-in").click()
    error = css(browser, "#signin-error")
    wait(browser, lambda d: error.is_displayed())
    assert "not known" in error.text
    assert not css(browser, "#app").is_displayed()


def test_formatting_is_exact_string_arithmetic(portal: str, browser: WebDriver) -> None:
    browser.get(portal + "/")
    wait(browser, lambda d: d.execute_script("return Boolean(window.breakoutPortal)"))
    got = browser.execute_script(
        """const P = window.breakoutPortal;
           return {
             money: P.formatMoney("-1234567.120001", "EUR"),
             big: P.formatMoney("90071992547409931.999999", "USD"),
             minor: [["1234.5", "JPY"], ["1235.5", "JPY"], ["1.0005", "BHD"], ["-0.004", "USD"],
                     ["2.675", "USD"], ["2.665", "XYZ"]].map(([v, c]) => P.formatMoney(v, c)),
             minutes: ["306.500", "90.000", "0.300", "0.900", "11777.753"].map((s) => P.minutesOf(s)),
             pct: P.formatPct("38.28"),
             none: P.formatPct(null),
             acd: ["61.20", "59.50", "60.50", "3725.51"].map((s) => P.formatDuration(s)),
             dur: [P.formatDuration("306.500", true), P.formatDuration("11777.753", true)],
             cmp: [["-0.5", "-0.25"], ["10.000001", "10.0000009"], ["2.10", "2.1"]].map(
               ([a, b]) => P.compareDecimal(a, b)),
             freshness: [[5, 300], [5, null], [120, 300], [5, 20000], [400, 0], [5, 90000]].map(
               ([age, behind]) => P.freshnessState(age, behind)),
             sorted: P.sortRows(
               [{c: "b", profit: "2.5"}, {c: "a", profit: null}, {c: "c", profit: "10.0"},
                {c: "d", profit: "2.50"}, {c: "e", profit: "-1"}],
               "profit", true).map((r) => r.c),
           };"""
    )
    # Money at the currency's usual decimals, half to even, beyond a double's precision.
    assert got["money"] == "-1,234,567.12"
    assert got["big"] == "90,071,992,547,409,932.00"
    assert got["minor"] == ["1,234", "1,236", "1.000", "0.00", "2.68", "2.66"]
    assert got["minutes"] == ["5.11", "1.50", "0.00", "0.02", "196.30"]
    assert got["pct"] == "38.28%" and got["none"] == "\u2013"
    assert got["acd"] == ["1:01", "1:00", "1:00", "1:02:06"]  # half-even, like the API's duration_hms
    assert got["dur"] == ["5:06", "196:18"]
    assert got["freshness"] == ["fresh", "fresh", "old", "old", "late", "late"]
    assert got["cmp"][0] < 0 and got["cmp"][1] > 0 and got["cmp"][2] == 0
    assert got["sorted"] == ["c", "b", "d", "e", "a"]  # stable on ties, empty values last


def test_the_api_reference_draws_from_this_server_alone(portal: str, browser: WebDriver) -> None:
    """/docs works on a machine with no route to a CDN: every script, style and the schema
    come from the API's own origin, and the page draws the schema."""
    browser.get(portal + "/docs")
    wait(browser, lambda d: d.find_elements(By.XPATH, "//h1[contains(., 'Breakout read API')]"))
    wait(browser, lambda d: "/v1/breakout" in d.execute_script("return document.body.innerText"))
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert any(url.endswith("/openapi.json") for url in loaded)
    assert [url for url in loaded if not url.startswith(portal + "/")] == []


def header_texts(driver: WebDriver) -> list[str]:
    return [th.text.replace("\n", " ") for th in driver.find_elements(By.CSS_SELECTOR, "#header-row th")]


def _table_fits(driver: WebDriver) -> bool:
    return bool(
        driver.execute_script(
            """const wrap = document.getElementById("table-wrap");
               return wrap.scrollWidth <= wrap.clientWidth
                 && document.documentElement.scrollWidth <= window.innerWidth;"""
        )
    )


def test_the_default_columns_fit_1366_and_the_field_chooser_is_remembered(
    mirrored: Mirrored, portal: str, browser: WebDriver
) -> None:
    """Finance's view: the seed's names, money at the currency's decimals with the exact
    sum on hover, billed minutes on demand, and no horizontal scrolling on a 1366-px screen;
    the NOC's NER and PDD beside them where there is room."""
    rows, totals, _ = expected_over_days(mirrored, ("customer", "destination"), lambda cdr, destination: True)
    try:
        browser.set_window_size(1366, 768)
        sign_in(browser, portal, mirrored.keys["admin"])
        set_period(browser, *days(mirrored))
        refresh(browser)
        headers = header_texts(browser)
        assert headers[:2] == ["CUSTOMER", "DESTINATION"]
        for name in (
            "TOTAL PROVIDER CHARGE",
            "TOTAL CUSTOMER CHARGE",
            "PROFIT %",
            "CUSTOMER CHARGE: PENDING",
            "DTMF",
        ):
            assert name in headers, headers
        for name in ("BILLED MINUTES", "DTMF %", "SHORT CALLS", "SHORT %"):  # hidden by default
            assert name not in headers, headers
        assert wait(browser, lambda d: _table_fits(d)), (
            "the default columns need a horizontal scroll at 1366 px"
        )
        # NER and PDD only if they fit: left out, they are unticked in Manage Displayed Fields.
        for col in ("ner", "pdd"):
            box = css(browser, f"#field-list input[data-field={col}]")
            assert box.is_selected() == (col.upper() in headers), col
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "portal-1366.png"))

        # Money: the currency's decimals shown, the exact sum on hover.
        cell = css(browser, "#totals-row [data-col=attempts]")
        assert cell.get_attribute("data-value") == str(totals["attempts"])
        first = browser.find_element(By.CSS_SELECTOR, "#rows tr:not(.pad)")
        values = dict(zip(headers, first.find_elements(By.CSS_SELECTOR, "td"), strict=True))
        key = (values["CUSTOMER"].text, values["DESTINATION"].text.removesuffix(" ASR"), values["CCY"].text)
        expected = rows[key]
        charge = values["TOTAL CUSTOMER CHARGE"]
        assert charge.text == money(expected["customer_charge"], key[2])
        assert charge.get_attribute("title") == f"{key[2]} {Decimal(expected['customer_charge']):,f}"

        # A wider screen has room for the network ratios too.
        browser.set_window_size(1920, 1080)
        refresh(browser)
        headers = header_texts(browser)
        assert "NER" in headers and "PDD" in headers, headers
        assert wait(browser, lambda d: _table_fits(d)), (
            "the default columns need a horizontal scroll at 1920 px"
        )
        browser.save_screenshot(str(ARTIFACTS / "portal-1920.png"))

        # Manage Displayed Fields: Billed Minutes on, DTMF off; remembered after a reload.
        css(browser, "#fields summary").click()
        css(browser, "#field-list input[data-field=minutes]").click()
        css(browser, "#field-list input[data-field=dtmf]").click()
        browser.refresh()
        wait(browser, lambda d: answered(d) >= 1)
        set_period(browser, *days(mirrored))
        refresh(browser)
        headers = header_texts(browser)
        assert "BILLED MINUTES" in headers and "DTMF" not in headers, headers
        seconds = Decimal(totals["duration"])
        minutes = (seconds / 60).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
        assert total(browser, "#totals-row", "minutes")[0] == f"{minutes:,f}"
    finally:
        for key in ("breakout.hiddenColumns", "breakout.knownColumns"):
            browser.execute_script("localStorage.removeItem(arguments[0])", key)
        browser.set_window_size(1600, 1000)
