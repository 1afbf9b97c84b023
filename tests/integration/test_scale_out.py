"""Scale-out on a Redis Cluster: two workers and the API against Kafka with 8 partitions,
one worker SIGKILLed and restarted mid-stream, and every row exact.

The CDR topic and Breakout's own topics have 8 partitions and the mirror is a real Redis
Cluster (3 primaries). Two worker processes split the partitions. After a third of the
stream one is killed with SIGKILL (no flush, no commit) and the stream goes on; once the
survivor owns every partition and has applied all there is, the report must be exact for
what was published so far. Then a worker restarts on the killed one's data directory while
the stream goes on (paced, so the restarted worker joins in the middle of it), and two
earlier parts of the stream are sent again. At the end every row the API serves (by
customer and destination, and by provider too, over whole days and over a minute-edged
range) and every row of every minute, hour and day bucket in the cluster equals what
``tests.dataset`` computes independently from the CDRs published. Meanwhile the API is
asked for the report in the background: no 200 may ever hold more than had been published
when it came back, whether a worker is dead or not.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import GroupCoordinatorNotAvailableError

from api.app import create_app
from breakout.auth import ADMIN, key_entry, new_key
from breakout.buckets import Granularity
from breakout.redis_client import connect
from breakout.redis_layout import Lag, Layout, decode_rows, decode_watermarks
from breakout.settings import Settings
from streams.ingest import normalized_topic
from streams.topics import ensure_topics
from tests import dataset
from tests.integration.pipeline import RowKey, Worker, diff, eventually_true, publish, with_dial_codes

pytestmark = pytest.mark.integration

PARTITIONS = 8
CUSTOMERS = 48  # every internal partition gets several (partition = CRC-32 of the customer id)
TOTAL = 24_000
CHUNKS = 24
KILL_AFTER = 8  # chunks published, both workers up, before the kill
RESTART_AFTER = 14  # chunks published before the restart (the survivor alone from the kill on)
REJOINED_AFTER = 20  # chunks published, paced, while the restarted worker joins
RESENT = (2, 9)  # chunks published again at the end: every CDR in them a duplicate
REPORT_LIMIT = 10_000  # the API's largest page
REQUEST_SECONDS = 30  # no single request or Redis read may take longer
TEST_SECONDS = 300  # the whole scenario, so that a hang fails instead of blocking the suite
COUNTS = ("attempts", "connected", "pending", "dtmf", "short_calls")
AMOUNTS = ("duration", "provider_charge", "customer_charge")  # non-negative in the dataset


async def topic_partitions(settings: Settings, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert not described["error_code"], described
    return len(described["partitions"])


async def assignments(settings: Settings, group: str, topic: str) -> list[set[int]] | None:
    """The partitions of ``topic`` each member of consumer group ``group`` owns, once the
    group is stable; None while it is not."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    except GroupCoordinatorNotAvailableError:  # a new broker creates its offsets topic first
        return None
    finally:
        await admin.close()
    _, _, state, _, _, members, *_ = responses[0].groups[0]
    if state != "Stable":
        return None
    owned = []
    for member in members:
        assignment = ConsumerProtocolMemberAssignment.decode(member[4])
        owned.append({p for name, partitions in assignment.assignment if name == topic for p in partitions})
    return owned


async def shared_by_two(settings: Settings) -> bool:
    """Whether both consumer groups, the ingest step's (CDR topic) and the agents' (internal
    topic), are stable with two members that split every partition between them."""
    for group, topic in (
        (f"{settings.app_id}-ingest", settings.topic),
        (settings.app_id, normalized_topic(settings)),
    ):
        owned = await assignments(settings, group, topic)
        if owned is None or len(owned) != 2 or not all(owned):
            return False
        if set().union(*owned) != set(range(PARTITIONS)):
            return False
    return True


async def groups(settings: Settings) -> str:
    """For a failure message: who owns what in both consumer groups (None: not stable)."""
    owned = [
        f"{group}: {await assignments(settings, group, topic)}"
        for group, topic in (
            (f"{settings.app_id}-ingest", settings.topic),
            (settings.app_id, normalized_topic(settings)),
        )
    ]
    return "; ".join(owned)


async def caught_up(settings: Settings, since_ms: int) -> bool:
    """``pipeline.caught_up`` on any Redis: lag reports written after ``since_ms`` cover every
    partition of both topics, each with no lag. After a worker died, only the living write
    reports, so this also says they own every partition between them."""
    client = connect(settings.redis)
    try:
        raw = await client.hgetall(Layout(settings.app_id).lag)
    finally:
        await client.aclose()
    fresh = [lag for lag in map(Lag.decode, raw.values()) if lag.written_ms > since_ms]
    return len(fresh) == 2 * settings.partitions and all(lag.lag == 0 for lag in fresh)


async def read_mirror(settings: Settings) -> dict[RowKey, list[int]]:
    """``pipeline.read_mirror`` on any Redis: every row of every customer hash, scanned on
    every shard of a cluster."""
    client = connect(settings.redis)
    layout = Layout(settings.app_id)
    rows: dict[RowKey, list[int]] = {}
    try:
        async for raw_key in client.scan_iter(match=layout.customer_rows_pattern, count=1000):
            granularity, start, customer = layout.parse_customer_rows(raw_key.decode())
            fields = cast("dict[bytes, bytes]", await client.hgetall(raw_key))  # the client decodes nothing
            for destination, provider, currency, counters in decode_rows(fields):
                rows[(granularity.value, start, customer, destination, provider, currency)] = counters
    finally:
        await client.aclose()
    return rows


async def index_apart(client: Any, layout: Layout) -> list[str]:
    """For a failure message: the customer hashes missing from their bucket's customers
    index, and the index entries with no hash. Readers find a bucket's customers through
    the index, so a hash outside it is right in Redis and missing from every report."""
    hashes: dict[tuple[Granularity, int], set[str]] = {}
    async for raw_key in client.scan_iter(match=layout.customer_rows_pattern, count=1000):
        granularity, start, customer = layout.parse_customer_rows(raw_key.decode())
        hashes.setdefault((granularity, start), set()).add(customer)
    apart = []
    for (granularity, start), customers in sorted(hashes.items()):
        members = cast("set[bytes]", await client.smembers(layout.customers(granularity, start)))
        indexed = {m.decode() for m in members}
        for customer in sorted(customers - indexed):
            apart.append(f"{granularity.value}{start} {customer}: hash, not indexed")
        for customer in sorted(indexed - customers):
            apart.append(f"{granularity.value}{start} {customer}: indexed, no hash")
    return apart


def first_published(chunks: list[list[tuple[bytes | None, bytes]]], valid: set[str]) -> list[list[str]]:
    """Per chunk, the ids of the valid CDRs first published in it (later copies are duplicates)."""
    seen: set[str] = set()
    firsts: list[list[str]] = []
    for chunk in chunks:
        ids: list[str] = []
        for _, value in chunk:
            try:
                document = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            for cdr in document if isinstance(document, list) else [document]:
                cdr_id = cdr.get("id") if isinstance(cdr, dict) else None
                if cdr_id in valid and cdr_id not in seen:
                    seen.add(cdr_id)
                    ids.append(cdr_id)
        firsts.append(ids)
    return firsts


def no_negative_zero(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with ``-0.00`` as ``0.00``: ``dataset`` rounds a tiny negative share to
    ``-0.00``, the API never shows a negative zero (``breakout.snapshot.rounded``)."""
    return {k: "0.00" if v == "-0.00" else v for k, v in row.items()}


def check_report(
    body: dict[str, Any], expected: tuple[Any, Any, Any], group_by: tuple[str, ...], what: str
) -> None:
    rows, totals, per_currency = expected
    rows = {key: no_negative_zero(row) for key, row in rows.items()}
    got = {(*(row[name] for name in group_by), row["currency"]): row for row in body["rows"]}
    assert len(got) == len(body["rows"]) == body["total_rows"], what
    assert got == rows, f"{what}:\n{diff(got, rows)}"
    assert body["totals"] == no_negative_zero(totals), what
    assert body["currency_totals"] == [no_negative_zero(row) for row in per_currency], what


def served_apart(body: dict[str, Any], rows: dict[tuple[str, ...], dict[str, Any]]) -> str:
    """For a failure message: the customers whose attempts the API served otherwise than
    expected (served/expected), with their internal partition; the mirror may be right
    while the API's caches are not."""
    served: Counter[str] = Counter()
    wanted: Counter[str] = Counter()
    for row in body.get("rows", []):
        served[row["customer"]] += row["attempts"]
    for key, row in rows.items():
        wanted[key[0]] += row["attempts"]
    apart = [
        f"{name} (partition {zlib.crc32(name.encode()) % PARTITIONS}) {served[name]}/{wanted[name]}"
        for name in sorted(served.keys() | wanted.keys())
        if served[name] != wanted[name]
    ]
    return "customers the API serves otherwise: " + (", ".join(apart) or "none")


@dataclass
class Deployment:
    """The test's settings, dial codes and the read API (in-process) with an admin key."""

    settings: Settings
    table: dict[str, str]
    http: httpx.AsyncClient
    headers: dict[str, str]
    days: dict[str, str]  # whole UTC days holding every CDR
    api_settings: Settings  # the API's, with the admin key: a fresh API for a failure message

    async def report(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """``GET /v1/breakout``: the status and, for a 200, the body with every page's rows."""
        async with asyncio.timeout(REQUEST_SECONDS):
            query = params | {"limit": REPORT_LIMIT}
            response = await self.http.get("/v1/breakout", params=query, headers=self.headers)
            if response.status_code != 200:
                assert response.status_code == 503, response.text  # refused while incomplete
                return response.status_code, {}
            body = response.json()
            while len(body["rows"]) < body["total_rows"]:
                query = params | {"limit": REPORT_LIMIT, "offset": len(body["rows"])}
                page = await self.http.get("/v1/breakout", params=query, headers=self.headers)
                assert page.status_code == 200, page.text
                body["rows"] += page.json()["rows"]
        return 200, body

    async def exact_within(self, cdrs: list[dict[str, Any]], wait: float, what: str) -> None:
        """Within ``wait`` seconds the whole-days report by customer and destination holds all
        of ``cdrs``; then every row must be exact."""
        group_by = ("customer", "destination")
        expected = dataset.expected_report(cdrs, self.table, 0, 2e10, group_by)
        attempts = expected[1]["attempts"]
        deadline = time.monotonic() + wait
        while True:
            status, body = await self.report(self.days | {"group_by": ",".join(group_by)})
            served = body["totals"]["attempts"] if status == 200 else None
            if served is not None and served >= attempts:
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}: after {wait} s the API answers {status} with {served} of {attempts}"
                    f" attempts\n{served_apart(body, expected[0])}\n{await self.fresh_answer()}"
                    f"\n{await self.explain(cdrs)}"
                )
            await asyncio.sleep(0.5)
        if served != attempts:  # more than published: something counted twice
            raise AssertionError(f"{what}: {served} of {attempts} attempts\n{await self.explain(cdrs)}")
        check_report(body, expected, group_by, what)

    async def fresh_answer(self) -> str:
        """For a failure message: what an API started now, with empty caches, serves. Exact
        there but not in the running API means the running one's caches are stale."""
        app = create_app(self.api_settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
        ):
            fresh = Deployment(self.settings, self.table, http, self.headers, self.days, self.api_settings)
            status, body = await fresh.report(self.days | {"group_by": "customer"})
        served = body["totals"]["attempts"] if status == 200 else None
        return f"an API started now answers {status} with {served} attempts"

    async def explain(self, cdrs: list[dict[str, Any]]) -> str:
        """Where the mirror stands against ``cdrs``, for a failure message: per internal
        partition (the CRC-32 of the customer id), the attempts in its day rows and its
        watermark, and for a partition that is short, the attempts in its minute rows by
        quarter hour of CDR time; the rows wrong per bucket size; the workers' counters; and
        the offsets the agents' consumer group has committed."""
        layout = Layout(self.settings.app_id)
        expected = dataset.expected_rows(cdrs, self.table)
        async with asyncio.timeout(REQUEST_SECONDS):
            mirrored = await read_mirror(self.settings)
            client = connect(self.settings.redis)
            try:
                marks = decode_watermarks(await client.hgetall(layout.watermarks))
                unindexed = await index_apart(client, layout)
                workers: dict[str, dict[str, int]] = {}
                async for key in client.scan_iter(match=layout.counters_pattern):
                    fields = cast("dict[bytes, bytes]", await client.hgetall(key))
                    workers[cast(bytes, key).decode()] = {k.decode(): int(v) for k, v in fields.items()}
            finally:
                await client.aclose()
            admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka)
            await admin.start()
            try:
                committed = await admin.list_consumer_group_offsets(self.settings.app_id)
            finally:
                await admin.close()
        first_minute = min(key[1] for key in expected if key[0] == "m")
        days: dict[int, list[int]] = {p: [0, 0] for p in range(PARTITIONS)}
        quarters: dict[int, dict[int, list[int]]] = {p: {} for p in range(PARTITIONS)}
        for column, rows in enumerate((mirrored, expected)):
            for (granularity, start, customer, *_), counters in rows.items():
                partition = zlib.crc32(customer.encode()) % PARTITIONS
                if granularity == "d":
                    days[partition][column] += counters[0]
                elif granularity == "m":
                    quarter = quarters[partition].setdefault((start - first_minute) // 900, [0, 0])
                    quarter[column] += counters[0]
        lines = []
        for partition, (got, want) in days.items():
            mark = marks.get(partition)
            lines.append(
                f"partition {partition}: {got} of {want} attempts in the day rows; watermark "
                + (f"offset {mark.offset}, stream time {mark.event_ms}" if mark else "none")
            )
            if got != want:
                lines.append(
                    "  minute rows by quarter hour, mirrored/expected: "
                    + " ".join(f"{g}/{e}" for _, (g, e) in sorted(quarters[partition].items()))
                )
        wrong = Counter(k[0] for k in expected.keys() | mirrored.keys() if expected.get(k) != mirrored.get(k))
        lines.append(f"rows wrong by bucket size: {dict(wrong)}")
        lines.append(f"customer hashes and customers indexes apart: {unindexed or 'none'}")
        for name, counted in sorted(workers.items()):
            shown = ("accepted", "duplicates", "replayed", "revised")
            lines.append(f"{name}: " + ", ".join(f"{k} {counted.get(k, 0)}" for k in shown))
        internal = normalized_topic(self.settings)
        offsets = sorted(
            (tp.partition, meta.offset) for tp, meta in committed.items() if tp.topic == internal
        )
        lines.append(f"agents' group committed (partition, offset): {offsets}")
        return "\n".join(lines)


@dataclass
class Poller:
    """Asks for the whole-days report by customer over and over, in the background, noting
    with each 200 how many chunks had begun to be published when it came back."""

    deployment: Deployment
    started: int = 0  # chunks whose publishing has begun
    worker_dead: bool = False
    served: list[tuple[int, bool, list[dict[str, Any]]]] = field(default_factory=list)
    refused: int = 0

    async def run(self) -> None:
        while True:
            status, body = await self.deployment.report(self.deployment.days | {"group_by": "customer"})
            if status == 200:
                self.served.append((self.started, self.worker_dead, body["rows"]))
            else:
                self.refused += 1
            await asyncio.sleep(0.3)


async def test_two_workers_on_8_partitions_and_a_redis_cluster_survive_a_sigkill_exactly(
    settings: Settings, redis_cluster_url: str, tmp_path: Path
) -> None:
    settings, table = with_dial_codes(settings, tmp_path)
    settings = settings.model_copy(
        update={"redis": redis_cluster_url, "partitions": PARTITIONS, "worker_metrics_port": 0}
    )
    # The workers create the CDR topic with BREAKOUT_PARTITIONS when it is missing, but a
    # publish that came first would have the broker auto-create it with its own default.
    await ensure_topics(settings, [settings.topic])
    assert await topic_partitions(settings, settings.topic) == PARTITIONS

    data = dataset.generate(
        seed=23, total=TOTAL, end_time=time.time() - 600, customers=CUSTOMERS, table=table
    )
    cdrs = list(data.valid.values())
    size = len(data.messages) // CHUNKS + 1
    chunks = [data.messages[i : i + size] for i in range(0, len(data.messages), size)]
    assert len(chunks) == CHUNKS
    firsts = first_published(chunks, set(data.valid))
    assert sum(map(len, firsts)) == len(cdrs)
    chunks += [chunks[n] for n in RESENT]
    firsts += [[] for _ in RESENT]

    def published(count: int) -> list[dict[str, Any]]:
        """The valid CDRs of the first ``count`` chunks, each once."""
        return [data.valid[i] for ids in firsts[:count] for i in ids]

    key = new_key()
    api_settings = settings.model_copy(update={"api_keys": key_entry(key, ADMIN)})
    app = create_app(api_settings)
    first = min(dataset.start_seconds(c) for c in cdrs)
    last = max(dataset.start_seconds(c) for c in cdrs)
    days = {
        "from": datetime.fromtimestamp(first, UTC).date().isoformat(),
        "to": datetime.fromtimestamp(time.time() + 86400, UTC).date().isoformat(),
    }
    minutes = {
        "from": datetime.fromtimestamp(first // 60 * 60, UTC).isoformat(),
        "to": datetime.fromtimestamp(last // 60 * 60 + 60, UTC).isoformat(),
    }

    timings: dict[str, float] = {}

    def took(name: str, since: float) -> None:
        timings[name] = round(time.monotonic() - since, 1)
        print(f"scale-out: {name} after {timings[name]} s", flush=True)

    began = time.monotonic()
    killed: Worker | None = None
    killed_ms, killed_at, restarted_at = 0, 0.0, 0.0
    workers = [
        Worker(settings, tmp_path / "w1", tmp_path / "w1.log"),
        Worker(settings, tmp_path / "w2", tmp_path / "w2.log"),
    ]
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
        ):
            deployment = Deployment(
                settings, table, http, {"Authorization": f"Bearer {key}"}, days, api_settings
            )
            poller = Poller(deployment)
            polling = asyncio.create_task(poller.run())
            try:
                async with asyncio.timeout(TEST_SECONDS):
                    await eventually_true(lambda: shared_by_two(settings), wait=120)
                    took("both joined", began)
                    assert await topic_partitions(settings, normalized_topic(settings)) == PARTITIONS

                    for n, chunk in enumerate(chunks):
                        for worker in workers:
                            assert worker is killed or worker.process.poll() is None, worker.tail()
                        if polling.done():
                            await polling  # raises what the poller found
                        poller.started = n + 1
                        await publish(settings, chunk)
                        await asyncio.sleep(0.2 if n < RESTART_AFTER else 0.5)
                        if n + 1 == KILL_AFTER:
                            status, body = await deployment.report(days | {"group_by": "customer"})
                            assert status != 200 or body["totals"]["attempts"] < len(cdrs)  # mid-stream
                            killed_ms = int(time.time() * 1000)
                            killed_at = time.monotonic()
                            killed = workers[0]
                            killed.kill()  # SIGKILL: no flush, no commit
                            poller.worker_dead = True
                        elif n + 1 == RESTART_AFTER:
                            # The survivor owns every partition and has applied all there is.
                            await eventually_true(partial(caught_up, settings, killed_ms), wait=90)
                            took("survivor took over", killed_at)
                            await deployment.exact_within(published(n + 1), 30, "survivor alone")
                            workers[0] = Worker(settings, tmp_path / "w1", tmp_path / "w1.log")
                            poller.worker_dead = False
                            restarted_at = time.monotonic()
                        elif n + 1 == REJOINED_AFTER:
                            try:
                                await eventually_true(lambda: shared_by_two(settings), wait=120)
                            except AssertionError as error:
                                raise AssertionError(
                                    f"the restarted worker never joined: {error}\n"
                                    f"{await groups(settings)}\n"
                                    + "\n".join(f"--- {w.log.name}:\n{w.tail()}" for w in workers)
                                ) from None
                            took("restarted worker joined", restarted_at)

                    await deployment.exact_within(cdrs, 60, "after the restart")
                    took("exact after the restart", restarted_at)

                    # Every row, whole days and a minute-edged range (hours inside, minutes at
                    # the edges), by customer and destination and by provider too.
                    for params, low, high in (
                        (days, 0.0, 2e10),
                        (minutes, first // 60 * 60, last // 60 * 60 + 60),
                    ):
                        for group_by in (
                            ("customer", "destination"),
                            ("customer", "destination", "provider"),
                        ):
                            status, body = await deployment.report(params | {"group_by": ",".join(group_by)})
                            assert status == 200, params
                            expected = dataset.expected_report(cdrs, table, low, high, group_by)
                            check_report(body, expected, group_by, f"{params} by {group_by}")

                    # Every row of every minute, hour and day bucket in the cluster.
                    expected_rows = dataset.expected_rows(cdrs, table)
                    mirrored = await read_mirror(settings)
                    assert mirrored == expected_rows, diff(mirrored, expected_rows)
            finally:
                polling.cancel()
                await asyncio.gather(polling, return_exceptions=True)
    finally:
        for worker in workers:
            worker.stop()
    if not polling.cancelled() and (failed := polling.exception()) is not None:
        raise failed  # the poller got an answer that was neither a 200 nor a 503

    # No 200 ever held more than had been published when it came back.
    bounds: dict[int, dict[tuple[str, ...], dict[str, Any]]] = {}
    for started, _, rows in poller.served:
        if started not in bounds:
            bounds[started] = dataset.expected_report(published(started), table, 0, 2e10, ("customer",))[0]
        for row in rows:
            bound = bounds[started].get((row["customer"], row["currency"]))
            assert bound is not None, f"served before anything was published: {row}"
            for name in COUNTS:
                assert row[name] <= bound[name], (name, row, bound)
            for name in AMOUNTS:
                assert Decimal(row[name] or 0) <= Decimal(bound[name] or 0), (name, row, bound)
    while_dead = sum(dead for _, dead, _ in poller.served)
    print(
        "scale-out seconds:",
        timings,
        f"API: {len(poller.served)} reports served ({while_dead} while a worker was dead),"
        f" {poller.refused} refused",
    )
    assert while_dead > 0
