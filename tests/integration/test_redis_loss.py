"""Redis loses the mirror (restart empty, SIGKILL, FLUSHALL, SCRIPT FLUSH): repaired without new
CDRs, and never a short total served as whole in between.

Every check below reads the mirror twice over while it is repaired: as the API does (a
read counts as served only if the mirror was complete, in one epoch, before and after it:
``read_whole_mirror``), where such a read must equal the expected rows exactly, every row of
every bucket; and through the read API itself, whose every 200 must carry the exact totals
(anything short must be a 503).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis

from api.app import create_app
from breakout.auth import ADMIN, key_entry, new_key
from breakout.settings import Settings
from tests import dataset
from tests.conftest import ROOT, free_port
from tests.integration.pipeline import (
    CUSTOMERS,
    RowKey,
    Worker,
    diff,
    eventually_equal,
    publish,
    read_whole_mirror,
    with_dial_codes,
)

REPAIR_SECONDS = 10  # the bound: exact again within 10 s, with no new CDRs


class OwnRedis:
    """A redis-server of this test's own, which it may restart, kill or flush."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _script(self, *args: str) -> None:
        subprocess.run([str(ROOT / "scripts" / "redis.sh"), *args], check=True)

    def start(self) -> None:
        self._script("start", str(self.port), str(self.directory))

    def stop(self) -> None:
        self._script("stop", str(self.directory))

    def kill(self) -> None:
        """SIGKILL: no persistence is configured, so it comes back empty."""
        pid = int((self.directory / "redis.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        (self.directory / "redis.pid").unlink()

    async def command(self, *args: str) -> None:
        client = aioredis.from_url(self.url)
        try:
            await client.execute_command(*args)
        finally:
            await client.aclose()


class Portal:
    """The read API in-process, asked for the whole dataset's report as a portal would."""

    def __init__(self, settings: Settings, cdrs: list[dict[str, Any]]) -> None:
        self.key = new_key()
        self.app = create_app(settings.model_copy(update={"api_keys": key_entry(self.key, ADMIN)}))
        first = min(dataset.start_seconds(c) for c in cdrs)
        self.params = {
            "from": datetime.fromtimestamp(first // 86400 * 86400, UTC).date().isoformat(),
            "to": datetime.fromtimestamp(time.time() + 86400, UTC).date().isoformat(),
        }
        self.served = self.refused = 0

    async def check(self, attempts: int, replaying: bool) -> None:
        """One Refresh: a 200 must hold every attempt; anything short must have been refused."""
        async with (
            self.app.router.lifespan_context(self.app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://api") as http,
        ):
            response = await http.get(
                "/v1/breakout", params=self.params, headers={"Authorization": f"Bearer {self.key}"}
            )
        if response.status_code == 200:
            self.served += 1
            got = response.json()["totals"]["attempts"]
            assert got == attempts or (replaying and got < attempts), f"served {got} of {attempts} attempts"
        else:
            assert response.status_code == 503, response.text
            self.refused += 1


async def repaired_without_short_totals(
    settings: Settings,
    expected: dict[RowKey, list[int]],
    worker: Worker,
    wait: float = REPAIR_SECONDS,
    replaying: bool = False,
    portal: Portal | None = None,
    attempts: int = 0,
) -> float:
    """Seconds until the mirror is whole and exact; fails on any whole-looking short read.

    ``replaying``: the worker was killed too, so until it has replayed the messages it had
    not flushed to its tables, a whole mirror may stand a few seconds behind (its watermarks
    say so); it may then lack CDRs, but never count one twice.
    """
    began = time.monotonic()
    while True:
        assert worker.process.poll() is None, worker.tail()
        try:
            whole, rows = await read_whole_mirror(settings)
        except (OSError, aioredis.ConnectionError):
            whole, rows = None, {}
        if portal is not None:
            await portal.check(attempts, replaying)
        if whole is not None and whole.complete:
            if rows == expected:
                return time.monotonic() - began
            assert replaying, "a short total looked complete:\n" + diff(rows, expected)
            assert rows.keys() <= expected.keys(), diff(rows, expected)
            assert all(all(map(int.__le__, rows[k], expected[k])) for k in rows), diff(rows, expected)
        assert time.monotonic() - began < wait, (
            f"not whole and exact after {wait} s: {whole}\n{diff(rows, expected)}\n{worker.tail()}"
        )
        await asyncio.sleep(0.1)


async def test_redis_losing_the_mirror_is_repaired_and_never_served_short(
    settings: Settings, tmp_path: Path
) -> None:
    redis = OwnRedis(tmp_path / "redis")
    redis.start()
    settings, table = with_dial_codes(settings, tmp_path)
    settings = settings.model_copy(update={"redis": redis.url})
    data = dataset.generate(seed=21, total=3000, end_time=time.time() - 600, customers=CUSTOMERS, table=table)
    cdrs = list(data.valid.values())
    more = dataset.late(cdrs[:10], 60)  # ten more CDRs, ids of their own
    worker = Worker(settings, tmp_path / "w", tmp_path / "worker.log")
    timings: dict[str, float] = {}
    portal = Portal(settings, cdrs)

    async def repaired(replaying: bool = False, wait: float = REPAIR_SECONDS) -> float:
        return await repaired_without_short_totals(
            settings, expected, worker, wait, replaying, portal, attempts=len(cdrs)
        )

    try:
        await publish(settings, data.messages)
        expected = dataset.expected_rows(cdrs, table)
        assert await eventually_equal(lambda: _exact(settings, expected), True, wait=120, worker=worker)

        redis.stop()  # restarted empty: no new CDR will come to trigger a write
        redis.start()
        timings["restart"] = await repaired()

        redis.kill()
        await asyncio.sleep(2)  # the worker keeps aggregating while Redis is gone
        redis.start()
        timings["kill"] = await repaired()

        await redis.command("FLUSHALL")
        timings["flushall"] = await repaired()

        # Redis forgets its scripts, then 10 more CDRs: the reproduction's "60, not 1,010".
        await redis.command("SCRIPT", "FLUSH")
        await publish(settings, [(c["customer_id"].encode(), orjson.dumps(c)) for c in more])
        cdrs += more
        expected = dataset.expected_rows(cdrs, table)
        assert await eventually_equal(lambda: _exact(settings, expected), True, wait=30, worker=worker)

        # The worker is killed, Redis restarts empty, a new worker starts: it mirrors its
        # partitions on assignment, not when they next get a message.
        worker.kill()
        redis.stop()
        redis.start()
        worker = Worker(settings, tmp_path / "w", tmp_path / "worker.log")
        timings["worker restart"] = await repaired(replaying=True, wait=90)
    finally:
        worker.stop()
        redis.stop()
    print("repair seconds:", {k: round(v, 1) for k, v in timings.items()})
    print(f"API during repairs: {portal.served} reports served whole, {portal.refused} refused")
    assert portal.served > 0 and portal.refused > 0  # both answers were really exercised


async def _exact(settings: Settings, expected: dict[RowKey, list[int]]) -> bool:
    whole, rows = await read_whole_mirror(settings)
    return whole.complete and rows == expected
