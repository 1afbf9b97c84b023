"""Live traffic: under a steady trickle, every CDR shows in ``/v1/breakout`` within a bound.

The CDRs are published the way softswitches do, one per message as calls end (event time
= send time), at a steady rate, open loop: the sender never waits for the pipeline. The
read API, in-process, is polled as a portal on auto-refresh would; the k-th CDR of a
customer is visible once that customer's attempts reach k (a customer's CDRs keep their
order: one key, one partition, one internal partition). The bound is generous against
the design's (the ingest's linger plus one mirror flush, well under 2 s when the machine
is not loaded, as ``bench/freshness.py`` measures): what this test holds is that a
trickle is never left waiting for a batch to fill or a backlog of tiny messages.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaProducer

from api.app import create_app
from breakout.auth import ADMIN, key_entry, new_key
from breakout.settings import Settings
from tests import dataset
from tests.integration.pipeline import CUSTOMERS, Worker, eventually_equal, read_mirror, with_dial_codes

RATE = 300  # CDRs a second
SECONDS = 20
VISIBLE_WITHIN = 5.0  # seconds from send to the API's answer
POLL_SECONDS = 0.1


async def test_each_cdr_of_a_steady_trickle_is_visible_within_the_bound(
    settings: Settings, tmp_path: Path
) -> None:
    settings, table = with_dial_codes(settings, tmp_path)
    key = new_key()
    app = create_app(settings.model_copy(update={"api_keys": key_entry(key, ADMIN)}))
    now = datetime.now(UTC)
    params = {
        "from": (now - timedelta(days=1)).date().isoformat(),
        "to": (now + timedelta(days=1)).date().isoformat(),
        "group_by": "customer",
        "limit": "10000",
    }
    cdrs = list(
        dataset.generate(
            seed=11, total=RATE * SECONDS * 2, end_time=time.time(), customers=CUSTOMERS, table=table
        ).valid.values()
    )[: RATE * SECONDS]
    sent_at: dict[str, list[float]] = defaultdict(list)  # customer -> send time of each CDR, in order
    seen_at: dict[str, list[float]] = defaultdict(list)  # customer -> when its k-th CDR was first seen
    behind: list[int] = []
    worker = Worker(settings, tmp_path / "w", tmp_path / "worker.log")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka, linger_ms=5, acks="all")
    await producer.start()
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
        ):

            async def attempts() -> Counter[str] | None:
                response = await http.get(
                    "/v1/breakout", params=params, headers={"Authorization": f"Bearer {key}"}
                )
                if response.status_code == 503:  # the worker is still starting
                    return None
                assert response.status_code == 200, response.text
                body = response.json()
                if body["behind_ms"] is not None:
                    behind.append(body["behind_ms"])
                counts: Counter[str] = Counter()
                for row in body["rows"]:
                    counts[row["customer"]] += row["attempts"]
                return counts

            # The worker is up once a first CDR shows: it is not counted in the bound.
            first = dict(cdrs[0], id="warm-up", start_time=round(time.time(), 3))
            await producer.send_and_wait(
                settings.topic, orjson.dumps(first), key=first["customer_id"].encode()
            )
            await eventually_equal(lambda: _counted(attempts), 1, wait=120, worker=worker)
            sent_at[first["customer_id"]].append(time.time())
            seen_at[first["customer_id"]].append(time.time())

            async def send() -> None:
                began = time.monotonic()
                for n, cdr in enumerate(cdrs):
                    await asyncio.sleep(max(0.0, began + n / RATE - time.monotonic()))
                    cdr["start_time"] = round(time.time(), 3)
                    sent_at[cdr["customer_id"]].append(time.time())
                    await producer.send(settings.topic, orjson.dumps(cdr), key=cdr["customer_id"].encode())

            sending = asyncio.create_task(send())
            deadline = time.time() + SECONDS + 30
            while time.time() < deadline:
                counts = await attempts()
                answered = time.time()
                for customer, count in (counts or {}).items():
                    seen = seen_at[customer]
                    seen.extend([answered] * (count - len(seen)))
                if sending.done() and sum(map(len, seen_at.values())) >= len(cdrs) + 1:
                    break
                await asyncio.sleep(POLL_SECONDS)
            await sending
    finally:
        await producer.stop()
        worker.stop()

    delays = sorted(
        seen - sent
        for customer, sends in sent_at.items()
        for sent, seen in zip(sends, seen_at[customer], strict=False)
    )
    unseen = sum(len(sends) - len(seen_at[customer]) for customer, sends in sent_at.items())
    figures = (
        f"{len(delays)} seen, {unseen} unseen; p50 {statistics.median(delays):.2f} s, "
        f"p99 {delays[int(len(delays) * 0.99)]:.2f} s, max {delays[-1]:.2f} s; "
        f"behind_ms max {max(behind, default=None)}"
    )
    assert unseen == 0, figures
    assert delays[-1] <= VISIBLE_WITHIN, figures
    assert max(behind) <= VISIBLE_WITHIN * 1000, figures
    # And exact: every row of every bucket is what the CDRs sum to.
    cdrs.insert(0, first)
    expected = dataset.expected_rows(cdrs, table)
    assert await read_mirror(settings) == expected


async def _counted(attempts: Callable[[], Awaitable[Counter[str] | None]]) -> int:
    counts = await attempts()
    return 0 if counts is None else sum(counts.values())
