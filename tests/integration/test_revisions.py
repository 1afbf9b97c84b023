"""Revisions through a real worker, Kafka and Redis: re-rated CDRs replace their earlier
version in every bucket, exactly once, through a SIGKILL, and with the id store on disk.

Each test first counts a generated dataset, then publishes a stream of revisions of it:
pending CDRs rated, CDRs re-rated with another destination, provider, currency and start
time (another hour, sometimes another day), re-sent revisions and stale versions
(duplicates), and revisions the aggregator must refuse (an id never counted, a CDR moved
to another customer). An oracle applies the contract's rule to the same stream, and every
row of the mirror must equal what the final versions add up to.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from breakout.settings import Settings
from tests import dataset
from tests.integration.pipeline import (
    CUSTOMERS,
    Worker,
    diff,
    eventually_equal,
    publish,
    read_counters,
    read_mirror,
    read_topic,
    with_dial_codes,
)

RowKey = tuple[str, int, str, str, str, str]


def supersedes(new: dict[str, Any], counted: dict[str, Any]) -> bool:
    """The contract's rule, written again from docs/cdr-contract.md for the oracle."""
    new_revision, old_revision = new.get("revision", 0), counted.get("revision", 0)
    rated_now = new["customer_charge"] is not None and counted["customer_charge"] is None
    return new_revision > old_revision or (new_revision == old_revision and rated_now)


def moved(cdr: dict[str, Any], seconds: int) -> Any:
    start = cdr["start_time"]
    return start + seconds * (1000 if start > 1e11 else 1)


def revision_stream(
    rng: random.Random, originals: list[dict[str, Any]], table: dict[str, str]
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], dict[str, Any]], set[str]]:
    """(the versions to publish in order, the final version per (customer, id), the ids of
    revisions that must be refused as ``revision_unknown``)."""
    final = {(c["customer_id"], c["id"]): c for c in originals}
    stream: list[dict[str, Any]] = []
    refused: set[str] = set()
    prefixes = sorted(table)

    def send(version: dict[str, Any]) -> None:
        stream.append(version)
        key = (version["customer_id"], version["id"])
        if key in final and supersedes(version, final[key]):
            final[key] = version

    for n, cdr in enumerate(rng.sample(originals, len(originals) // 2)):
        roll = rng.random()
        if cdr["customer_charge"] is None:
            send(dict(cdr, customer_charge=f"{rng.randint(0, 900_000) / 1e6:.6f}"))  # rated
            if roll < 0.3:
                send(dict(cdr))  # the pending version again: a duplicate
        elif roll < 0.6:
            revision = dict(
                cdr,
                revision=1,
                start_time=moved(cdr, rng.choice([-10_800, -3_600, 1_800, 5_400])),
                dst=rng.choice(prefixes) + "5550101",
                provider_id=rng.choice(["prov-0", "prov-9"]),
                currency=rng.choice(["USD", "EUR", "GBP"]),
                customer_charge=f"{rng.randint(0, 900_000) / 1e6:.6f}",
                provider_charge=f"{rng.randint(0, 900_000) / 1e6:.6f}",
            )
            revision.pop("destination", None)
            send(revision)
            if roll < 0.2:
                send(dict(revision))  # re-sent: a duplicate
                send(dict(cdr))  # the older version arrives late: a duplicate
            if roll < 0.1:
                send(dict(revision, revision=2, duration=0, status="failed"))
        elif roll < 0.7:
            ghost = dict(cdr, id=f"ghost-{n}", revision=1)  # no earlier version
            send(ghost)
            refused.add(ghost["id"])
        elif roll < 0.75:
            other = f"cust-{(int(cdr['customer_id'][5:]) + 1) % CUSTOMERS:02d}"
            away = dict(cdr, customer_id=other, revision=1)  # moved to another customer
            send(away)
            refused.add(away["id"])
    return stream, final, refused


def messages_of(versions: list[dict[str, Any]], rng: random.Random) -> list[tuple[bytes | None, bytes]]:
    """Keyed by customer, as a platform publishes: one customer's versions stay in order."""
    messages: list[tuple[bytes | None, bytes]] = []
    i = 0
    while i < len(versions):
        size = rng.choice([1, 1, 3, 10])
        chunk = [versions[i]]
        for version in versions[i + 1 : i + size]:
            if version["customer_id"] != chunk[0]["customer_id"]:
                break
            chunk.append(version)
        i += len(chunk)
        value = orjson.dumps(chunk[0] if len(chunk) == 1 else chunk)
        messages.append((chunk[0]["customer_id"].encode(), value))
    return messages


def nonzero(rows: dict[RowKey, list[int]]) -> dict[RowKey, list[int]]:
    """Rows with attempts: a row whose every CDR a revision moved away is all zeros."""
    return {k: v for k, v in rows.items() if v[0]}


@pytest.mark.parametrize("state", ["kept", "lost"], ids=["restart", "restart-on-a-new-disk"])
async def test_revisions_stay_exact_through_a_sigkill(settings: Settings, tmp_path: Path, state: str) -> None:
    settings, table = with_dial_codes(settings, tmp_path)  # RocksDB tables and id store
    rng = random.Random(5)
    data = dataset.generate(seed=5, total=6_000, end_time=time.time() - 600, customers=CUSTOMERS, table=table)
    originals = list(data.valid.values())
    versions, final, refused = revision_stream(rng, originals, table)
    messages = messages_of(versions, rng)
    assert len(refused) > 50 and len(versions) > 3_000

    data_dir = tmp_path / "w"
    worker = Worker(settings, data_dir, tmp_path / "w.log")
    try:
        await publish(settings, data.messages)
        counted = dataset.expected_rows(originals, table)
        got = await eventually_equal(lambda: read_mirror(settings), counted, wait=120, worker=worker)
        assert got == counted, diff(got, counted)

        half = len(messages) // 2
        await publish(settings, messages[:half])
        await asyncio.sleep(1.5)  # some of it applied, some flushed, little committed
        worker.kill()
        if state == "lost":
            shutil.rmtree(data_dir)  # tables and id store rebuilt from the changelogs
        worker = Worker(settings, data_dir, tmp_path / "w.log")
        await publish(settings, messages[half:])

        expected = dataset.expected_rows(list(final.values()), table)

        async def rows() -> dict[RowKey, list[int]]:
            return nonzero(await read_mirror(settings))

        got = await eventually_equal(rows, expected, wait=180, worker=worker)
        assert got == expected, diff(got, expected)
    finally:
        worker.stop()

    letters = await read_topic(settings, settings.dlq_topic, len(data.invalid) + len(refused))
    unknown = {letter_id(letter) for letter in letters if letter["error"] == "revision_unknown"}
    assert unknown == refused
    counters = await read_counters(settings)
    assert counters["revised"] >= sum(1 for v in final.values() if v not in originals)


def letter_id(letter: dict[str, Any]) -> str:
    """The id of the CDR a dead letter carries."""
    cdr = orjson.loads(letter["payload"])
    return str(cdr["id"] if isinstance(cdr, dict) else cdr[0])


async def test_pending_then_rated_shows_the_revenue(settings: Settings, tmp_path: Path) -> None:
    settings, table = with_dial_codes(settings, tmp_path)
    prefix = sorted(table)[0]
    start = int(time.time()) - 300
    pending = {
        "id": "call-1",
        "customer_id": "acme",
        "provider_id": "carrier",
        "dst": prefix + "1234567",
        "start_time": start,
        "duration": 61,
        "status": "answered",
        "provider_charge": "0.020000",
        "customer_charge": None,
        "currency": "EUR",
        "dtmf": 0,
    }
    other = dict(pending, id="call-2", customer_charge="0.010000")
    rated = dict(pending, customer_charge="0.035000")
    worker = Worker(settings, tmp_path / "w", tmp_path / "w.log")
    try:
        await publish(settings, [(b"acme", orjson.dumps([pending, other]))])
        before = dataset.expected_rows([pending, other], table)
        got = await eventually_equal(lambda: read_mirror(settings), before, wait=120, worker=worker)
        assert got == before, diff(got, before)
        assert {tuple(v[3:6]) for v in got.values()} == {(20_000, 10_000, 1)}  # pending 1, no money for it

        await publish(settings, [(b"acme", orjson.dumps(rated))])
        after = dataset.expected_rows([rated, other], table)
        got = await eventually_equal(lambda: read_mirror(settings), after, wait=60, worker=worker)
        assert got == after, diff(got, after)
        assert {tuple(v[3:6]) for v in got.values()} == {(40_000, 45_000, 0)}  # the revenue, pending 0
    finally:
        worker.stop()
