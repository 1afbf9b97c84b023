"""The NOC ASR-drop detector end to end: real worker, Kafka and Redis, event time compressed.

Steady traffic over many destinations and providers, then one (destination, provider)
drops from 50 % to 10 % ASR, then recovers. Alongside, low-volume noise. Exactly one
raise and one clear must come out, for that pair only, at the right event times, even
though the worker (the detector's leader) is replaced in the middle of the incident.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer

from api.alerts import active_alerts, alert_history
from api.app import create_app
from breakout.auth import ADMIN, key_entry, new_key
from breakout.noc.keys import cursor_key
from breakout.redis_client import Client, connect
from breakout.settings import Settings
from tests.conftest import free_port
from tests.integration.pipeline import Worker, eventually_true, read_topic

pytestmark = pytest.mark.each_redis

DESTINATIONS = 12  # busy ones, three providers each; as many again of noise
PROVIDERS = 3
DROP_PAIR = ("Country 0", "prov-0")
BASELINE, WINDOW, SETTLE = 30, 15, 120
# Minutes of event time from the start: warm-up (baseline + window), drop, recovery.
DROP_AT, RECOVER_AT, END = 45, 56, 76
# The ASR state machine alone (its failed CDRs would drop NER too; test_noc_causes has NER and
# PDD); everything else: the defaults.
RULES = f"[detector]\nbaseline_minutes = {BASELINE}\n[defaults]\nner_enabled = false\npdd_enabled = false\n"


def dial_codes(tmp_path: Path) -> Path:
    path = tmp_path / "dial_codes.csv"
    lines = [f"{300 + n},Country {n}\n" for n in range(2 * DESTINATIONS)]
    path.write_text("prefix,destination\n" + "".join(lines))
    return path


def traffic(rng: random.Random, start: int, first: int, last: int) -> list[dict[str, Any]]:
    """CDRs of minutes ``first`` to ``last - 1`` after ``start``, in event-time order."""
    cdrs: list[dict[str, Any]] = []
    for minute in range(first, last):
        dropped = DROP_AT <= minute < RECOVER_AT
        attempts: list[tuple[int, int, float]] = []  # (destination, provider, ASR)
        for destination in range(DESTINATIONS):
            for provider in range(PROVIDERS):
                # The drop pair's destination is busy on every provider, so that destination
                # as a whole loses only ~13 points: not enough to raise it too.
                count = 60 if destination == 0 else 20
                asr = 0.1 if dropped and (destination, provider) == (0, 0) else 0.5
                attempts += [(destination, provider, asr)] * count
        for destination in range(DESTINATIONS, 2 * DESTINATIONS):  # noise: 0-3 attempts a minute
            attempts += [(destination, 0, rng.uniform(0.2, 0.7))] * rng.randint(0, 3)
        rng.shuffle(attempts)
        for index, (destination, provider, asr) in enumerate(attempts):
            connected = rng.random() < asr
            cdrs.append(
                {
                    "id": f"m{minute}-{index}",
                    "customer_id": f"cust-{rng.randrange(8)}",
                    "provider_id": f"prov-{provider}",
                    "dst": f"+{300 + destination}{rng.randrange(10**7):07d}",
                    "start_time": start + minute * 60 + index * 59.0 / len(attempts),
                    "duration": rng.randint(5, 300) if connected else 0,
                    "status": "answered" if connected else "failed",
                    "provider_charge": "0.010000",
                    "customer_charge": "0.020000",
                    "currency": "USD",
                }
            )
    return cdrs


async def publish_in_order(settings: Settings, cdrs: list[dict[str, Any]]) -> None:
    """Batches of 500 CDRs to partition 0: the ingest step then sees event time in order
    (see "Limits" in docs/noc-alerts.md about source partitions read at different speeds)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka, linger_ms=10, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(settings.topic, orjson.dumps(cdrs[i : i + 500]), partition=0)
            for i in range(0, len(cdrs), 500)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp())


class ApiServer:
    """The read API served by uvicorn on a free port, in this event loop."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ApiServer:
        self.task = asyncio.create_task(self.server.serve())
        await eventually_true(self._started, wait=10)
        return self

    async def _started(self) -> bool:
        return self.server.started

    async def __aexit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        await self.task


async def listen(
    url: str, key: str, received: list[tuple[str, dict[str, Any]]], connected: asyncio.Event
) -> None:
    """A Server-Sent Events client: every event's name and JSON data, in order."""
    async with (
        httpx.AsyncClient(timeout=None) as http,
        http.stream("GET", url, headers={"Authorization": f"Bearer {key}"}) as response,
    ):
        assert response.status_code == 200 and response.headers["content-type"].startswith(
            "text/event-stream"
        )
        event: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line == ": connected":
                connected.set()
            elif line.startswith(("event: ", "data: ", "id: ")):
                name, _, value = line.partition(": ")
                event[name] = value
            elif line == "" and "data" in event:
                received.append((event["event"], orjson.loads(event["data"])))
                event = {}


async def test_one_raise_and_one_clear_for_the_dropped_pair_only(settings: Settings, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    key = new_key()
    settings = settings.model_copy(
        update={"dial_codes": dial_codes(tmp_path), "alert_rules": rules, "api_keys": key_entry(key, ADMIN)}
    )
    topic = f"{settings.app_id}.alerts"
    start = (int(time.time()) - 6 * 3600) // 3600 * 3600
    rng = random.Random(17)
    client = connect(settings.redis)
    streamed: list[tuple[str, dict[str, Any]]] = []
    connected = asyncio.Event()
    async with ApiServer(settings) as api:
        listener = asyncio.create_task(listen(f"{api.url}/v1/alerts/stream", key, streamed, connected))
        worker = Worker(settings, tmp_path / "w", tmp_path / "worker.log")
        try:
            await asyncio.wait_for(connected.wait(), 10)
            await publish_in_order(settings, traffic(rng, start, 0, RECOVER_AT))
            raised = await read_topic(settings, topic, 1, wait=90)
            assert [(a["destination"], a["provider"], a["state"]) for a in raised] == [
                (*DROP_PAIR, "raised")
            ], raised or worker.tail()
            alert = raised[0]
            drop = start + DROP_AT * 60
            assert drop + 60 <= epoch(alert["detected_at"]) <= drop + 120
            assert alert["asr"] < 20 and 45 < alert["baseline_asr"] < 55 and alert["attempts"] >= 30
            assert await eventually_true(lambda: active_alerts(client, settings.app_id), wait=10) == [alert]
            async with httpx.AsyncClient(base_url=api.url, headers={"X-API-Key": key}) as http:
                assert (await http.get("/v1/alerts")).json() == {"active": [alert]}

            # A new leader takes over mid-incident: it resumes from Redis and raises nothing again.
            worker.stop()
            worker = Worker(settings, tmp_path / "w2", tmp_path / "worker2.log")
            await publish_in_order(settings, traffic(rng, start, RECOVER_AT, END))
            await eventually_true(lambda: _streamed(streamed, 2), wait=90)
            cleared = streamed[1][1]
            assert streamed == [("raised", alert), ("cleared", cleared)]
            assert (cleared["key"], cleared["incident"]) == (alert["key"], alert["incident"])
            recovery = start + RECOVER_AT * 60
            assert recovery + 5 * 60 <= epoch(cleared["detected_at"]) <= recovery + 10 * 60

            # The detector has evaluated every minute the traffic completed; still nothing else.
            last_due = (
                start + END * 60 - SETTLE - 120
            )  # the last minute that ended SETTLE before the last CDR
            await eventually_true(lambda: _evaluated_past(client, settings.app_id, last_due), wait=30)
            assert await read_topic(settings, topic, 3, wait=2) == [alert, cleared]
            assert await alert_history(client, settings.app_id, since_ms=0) == [alert, cleared]
            assert await active_alerts(client, settings.app_id) == []
            assert streamed == [("raised", alert), ("cleared", cleared)]
            async with httpx.AsyncClient(base_url=api.url, headers={"X-API-Key": key}) as http:
                since = datetime.fromtimestamp(start, UTC).isoformat()
                assert (await http.get("/v1/alerts", params={"since": since})).json() == {
                    "active": [],
                    "history": [alert, cleared],
                }
        finally:
            worker.stop()
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await client.aclose()


async def _streamed(streamed: list[tuple[str, dict[str, Any]]], count: int) -> bool:
    return len(streamed) >= count


async def _evaluated_past(client: Client, app_id: str, minute: int) -> bool:
    cursor = await client.get(cursor_key(app_id))
    return cursor is not None and int(cursor) > minute
