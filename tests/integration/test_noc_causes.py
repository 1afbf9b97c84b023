"""NER alerts and grown SIP codes end to end: real worker, Kafka and Redis, event time compressed.

Three destinations with steady traffic that carries SIP codes and post-dial delays, then
for ten minutes: Andorra's provider answers most calls with 503 (the network fails them:
ASR and NER drop), Belize's callees are busy (486: ASR drops, NER does not), Chad, on the
same providers, carries on as the control. Then everything recovers. With NER and PDD
watched, exactly these incidents come out, each raised and cleared once, the raise naming
the code that grew; ASR and NER on the same route are separate incidents.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from api.alerts import active_alerts, alert_history
from breakout.auth import ADMIN, key_entry, new_key
from breakout.settings import Settings
from tests.integration.pipeline import Worker, eventually_true, read_topic
from tests.integration.test_alerts import ApiServer, epoch, publish_in_order
from tests.integration.test_alerts import _evaluated_past as evaluated_past

PREFIXES = {"Andorra": 376, "Belize": 501, "Chad": 235}
ROUTES = [("Andorra", "prov-1", 60), ("Belize", "prov-2", 60), ("Chad", "prov-1", 30), ("Chad", "prov-2", 30)]
BASELINE, WINDOW, SETTLE = 30, 15, 120
# Minutes of event time from the start: warm-up (baseline + window), incident, recovery.
DROP_AT, RECOVER_AT, END = 45, 55, 75
RULES = f"[detector]\nbaseline_minutes = {BASELINE}\n"  # NER and PDD alerts are on by default
Mix = dict[int, float]  # final SIP code -> share of attempts
NORMAL: Mix = {200: 0.5, 486: 0.2, 480: 0.15, 404: 0.1, 503: 0.05}
OUTAGE: Mix = {**{code: share / 10 for code, share in NORMAL.items()}, 503: 0.9 + NORMAL[503] / 10}
BUSY: Mix = {**{code: share / 10 for code, share in NORMAL.items()}, 486: 0.9 + NORMAL[486] / 10}
STATUS = {200: "answered", 486: "busy", 480: "no_answer"}  # the rest: "failed"
# The incidents: (key, metric). Andorra and Belize have one provider, so each destination
# as a whole is that route again.
EXPECTED = [
    ('["Andorra","prov-1"]', "asr"),
    ('["Andorra","prov-1"]', "ner"),
    ('["Andorra",null]', "asr"),
    ('["Andorra",null]', "ner"),
    ('["Belize","prov-2"]', "asr"),
    ('["Belize",null]', "asr"),
]


def dial_codes(tmp_path: Path) -> Path:
    path = tmp_path / "dial_codes.csv"
    path.write_text("prefix,destination\n" + "".join(f"{p},{d}\n" for d, p in PREFIXES.items()))
    return path


def traffic(rng: random.Random, start: int, first: int, last: int) -> list[dict[str, Any]]:
    """CDRs of minutes ``first`` to ``last - 1`` after ``start``, in event-time order.

    PDDs are log-normal around 3 s, a tenth of that for a 503 (a provider rejecting fast).
    """
    cdrs: list[dict[str, Any]] = []
    for minute in range(first, last):
        incident = DROP_AT <= minute < RECOVER_AT
        mixes = {"Andorra": OUTAGE, "Belize": BUSY} if incident else {}
        attempts: list[tuple[str, str, int]] = []
        for destination, provider, count in ROUTES:
            mix = mixes.get(destination, NORMAL)
            attempts += [
                (destination, provider, code) for code in rng.choices(list(mix), list(mix.values()), k=count)
            ]
        rng.shuffle(attempts)
        for index, (destination, provider, code) in enumerate(attempts):
            connected = code == 200
            median_pdd = 300 if code == 503 else 3000
            cdrs.append(
                {
                    "id": f"m{minute}-{index}",
                    "customer_id": f"cust-{rng.randrange(4)}",
                    "provider_id": provider,
                    "dst": f"+{PREFIXES[destination]}{rng.randrange(10**7):07d}",
                    "start_time": start + minute * 60 + index * 59.0 / len(attempts),
                    "duration": rng.randint(5, 300) if connected else 0,
                    "status": STATUS.get(code, "failed"),
                    "sip_code": code,
                    "pdd_ms": round(rng.lognormvariate(math.log(median_pdd), 0.5)),
                    "provider_charge": "0.010000",
                    "customer_charge": "0.020000",
                    "currency": "USD",
                }
            )
    return cdrs


def by_incident(alerts: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The alerts per (key, metric), each incident's in event-time order."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for alert in sorted(alerts, key=lambda a: (a["detected_at"], a["state"] == "cleared")):
        grouped.setdefault((alert["key"], alert["metric"]), []).append(alert)
    return dict(sorted(grouped.items()))


def check_raise(alert: dict[str, Any], start: int) -> None:
    """One raise document: its route, metric, numbers and the code that grew."""
    destination = alert["destination"]
    assert alert["state"] == "raised" and destination in ("Andorra", "Belize"), alert
    drop = start + DROP_AT * 60
    assert drop + 60 <= epoch(alert["detected_at"]) <= drop + 180, alert
    assert alert["value"] < 20 and alert["asr"] < 20 and alert["attempts"] >= 30, alert
    assert "pdd_calls" not in alert
    if alert["metric"] == "asr":
        assert 45 < alert["baseline"] < 55 and alert["baseline_asr"] == alert["baseline"], alert
    else:  # NER of the normal mix: answered, busy and unanswered
        assert 80 < alert["baseline"] < 90 and 45 < alert["baseline_asr"] < 55, alert
    assert alert["threshold"] == round(alert["baseline"] - 20, 2), alert
    cause = alert["grown_causes"][0]
    assert (cause["code"], cause["label"]) == (
        ("503", "Service Unavailable") if destination == "Andorra" else ("486", "Busy Here")
    ), alert
    assert cause["window_share"] > 80 and cause["baseline_share"] < 25 and cause["change_points"] > 55, alert
    assert all(other["change_points"] > 0 for other in alert["grown_causes"]), alert


def percent(part: int, whole: int) -> str:
    return str((Decimal(100 * part) / whole).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))


def at(start: int, minute: int) -> str:
    return datetime.fromtimestamp(start + minute * 60, UTC).isoformat()


async def check_the_story(http: httpx.AsyncClient, published: list[dict[str, Any]], start: int) -> None:
    """``/v1/series`` and ``/v1/causes`` tell what the alerts tell: Andorra's NER fell with its
    ASR and 503 grew; Belize's ASR fell, its NER did not, and 486 grew. Every point exact."""
    effective = {200, 486, 480}  # of the codes sent (docs/cdr-contract.md)
    for destination, grown in (("Andorra", "503"), ("Belize", "486")):
        params = {"from": at(start, DROP_AT - 10), "to": at(start, RECOVER_AT), "destination": destination}
        series = (
            await http.get(
                "/v1/series", params=params | {"resolution": "minute", "metric": "attempts,asr,ner"}
            )
        ).json()
        expected = []
        for minute in range(DROP_AT - 10, RECOVER_AT):
            codes = [
                cdr["sip_code"]
                for cdr in published
                if cdr["dst"].startswith(f"+{PREFIXES[destination]}")
                and start + minute * 60 <= cdr["start_time"] < start + minute * 60 + 60
            ]
            expected.append(
                {
                    "start": at(start, minute),
                    "end": at(start, minute + 1),
                    "attempts": len(codes),
                    "asr": percent(codes.count(200), len(codes)),
                    "ner": percent(sum(code in effective for code in codes), len(codes)),
                }
            )
        assert series["points"] == expected
        before, during = expected[:10], expected[10:]
        assert max(float(p["asr"]) for p in during) < 20 < min(float(p["asr"]) for p in before)
        if destination == "Andorra":
            assert max(float(p["ner"]) for p in during) < 30 < min(float(p["ner"]) for p in before)
        else:
            assert min(float(p["ner"]) for p in during) > 70

        incident = {"from": at(start, DROP_AT), "to": at(start, RECOVER_AT), "destination": destination}
        causes = (await http.get("/v1/causes", params=incident)).json()
        assert causes["previous"] == {"from": at(start, DROP_AT - 10), "to": at(start, DROP_AT)}
        assert causes["attempts"] == sum(p["attempts"] for p in during)
        assert causes["previous_attempts"] == sum(p["attempts"] for p in before)
        top = causes["codes"][0]
        assert top["code"] == grown and float(top["change_points"]) > 50, causes


async def test_503s_raise_asr_and_ner_naming_503_while_busy_callees_raise_asr_only(
    settings: Settings, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    key = new_key()
    settings = settings.model_copy(
        update={"dial_codes": dial_codes(tmp_path), "alert_rules": rules, "api_keys": key_entry(key, ADMIN)}
    )
    topic = f"{settings.app_id}.alerts"
    start = (int(time.time()) - 6 * 3600) // 3600 * 3600
    rng = random.Random(23)
    client = aioredis.from_url(settings.redis)
    worker = Worker(settings, tmp_path / "w", tmp_path / "worker.log")
    try:
        async with ApiServer(settings) as api:
            published = traffic(rng, start, 0, RECOVER_AT)
            await publish_in_order(settings, published)
            raised = await read_topic(settings, topic, len(EXPECTED), wait=120)
            assert list(by_incident(raised)) == sorted(EXPECTED), raised or worker.tail()
            for alert in raised:
                check_raise(alert, start)
            incidents = {alert["incident"] for alert in raised}
            assert len(incidents) == len(EXPECTED)  # ASR and NER of one route: two incidents
            for alert in raised:  # ASR incident ids are what they were before NER existed
                if alert["metric"] == "asr":
                    text = f"{alert['key']}@{epoch(alert['detected_at'])}"
                    assert alert["incident"] == hashlib.sha256(text.encode()).hexdigest()[:16]

            # The open incidents: one per metric and route, in the API as published.
            in_order = sorted(raised, key=lambda a: (a["detected_at"], a["key"], a["metric"]))
            assert await eventually_true(lambda: active_alerts(client, settings.app_id), wait=10) == in_order
            async with httpx.AsyncClient(base_url=api.url, headers={"X-API-Key": key}) as http:
                assert (await http.get("/v1/alerts")).json() == {"active": in_order}
                await check_the_story(http, published, start)

            await publish_in_order(settings, traffic(rng, start, RECOVER_AT, END))
            last_due = (
                start + END * 60 - SETTLE - 120
            )  # the last minute that ended SETTLE before the last CDR
            await eventually_true(lambda: evaluated_past(client, settings.app_id, last_due), wait=120)
            alerts = await read_topic(settings, topic, 2 * len(EXPECTED) + 1, wait=2)
            incidents_seen = by_incident(alerts)
            assert list(incidents_seen) == sorted(EXPECTED), alerts
            recovery = start + RECOVER_AT * 60
            for (alert_key, metric), (raise_, clear) in (
                (k, v) for k, v in incidents_seen.items() if len(v) == 2
            ):
                assert (clear["state"], clear["incident"], clear["metric"]) == (
                    "cleared",
                    raise_["incident"],
                    metric,
                )
                assert (clear["threshold"], clear["baseline"]) == (raise_["threshold"], raise_["baseline"])
                assert clear["value"] >= raise_["threshold"] + 5 and isinstance(clear["grown_causes"], list)
                assert recovery + 5 * 60 <= epoch(clear["detected_at"]) <= recovery + 10 * 60, (
                    alert_key,
                    clear,
                )
            assert [len(v) for v in incidents_seen.values()] == [2] * len(EXPECTED), alerts
            assert await active_alerts(client, settings.app_id) == []
            history = await alert_history(client, settings.app_id, since_ms=0)
            assert by_incident(history) == incidents_seen
    finally:
        worker.stop()
        await client.aclose()
