"""Helpers for the pipeline tests: a real ``breakout worker`` process, publishing, reading back."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from breakout.auth import ADMIN, Role, key_entry, new_key
from breakout.redis_client import Client, connect
from breakout.redis_layout import Completeness, Lag, Layout, completeness, decode_rows, decode_watermarks
from breakout.settings import Settings, load_settings
from tests import dataset

RowKey = tuple[str, int, str, str, str, str]
DESTINATIONS = 60
CUSTOMERS = 24


def with_dial_codes(settings: Settings, tmp_path: Path) -> tuple[Settings, dict[str, str]]:
    """Settings using a generated dial-code table of ``DESTINATIONS`` countries, and that table."""
    table = dataset.dial_code_table(DESTINATIONS)
    path = tmp_path / "dial_codes.csv"
    path.write_text("prefix,destination\n" + "".join(f"{p},{n}\n" for p, n in table.items()))
    return settings.model_copy(update={"dial_codes": path, "store": "rocksdb://"}), table


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The settings as the BREAKOUT_* variables a worker process reads."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"BREAKOUT_{name.upper()}"] = str(value)
    env.update(extra)
    return env


class Worker:
    """A ``breakout worker`` subprocess with its own data directory and log file."""

    def __init__(self, settings: Settings, data_dir: Path, log: Path, **extra: str) -> None:
        self.log = log
        self._log_file = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", "worker"],
            env=settings_env(settings, BREAKOUT_DATA_DIR=str(data_dir), **extra),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self._log_file.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


async def publish(settings: Settings, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka, linger_ms=10, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(settings.topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_mirror(settings: Settings) -> dict[RowKey, list[int]]:
    """Every row the mirror holds, from the per-customer hashes."""
    client = connect(settings.redis)
    try:
        return await _rows(client, Layout(settings.app_id))
    finally:
        await client.aclose()


async def _rows(client: Client, layout: Layout) -> dict[RowKey, list[int]]:
    rows: dict[RowKey, list[int]] = {}
    async for raw_key in client.scan_iter(match=layout.customer_rows_pattern, count=1000):
        granularity, start, customer = layout.parse_customer_rows(raw_key.decode())
        for destination, provider, currency, counters in decode_rows(await client.hgetall(raw_key)):
            rows[(granularity.value, start, customer, destination, provider, currency)] = counters
    return rows


async def read_whole_mirror(settings: Settings) -> tuple[Completeness, dict[RowKey, list[int]]]:
    """The mirror's rows and whether they are whole: complete, in one epoch, before and after the read.

    The API answers only from a complete mirror; rows read between two complete checks of
    the same epoch are what it could have served.
    """
    client = connect(settings.redis)
    layout = Layout(settings.app_id)

    async def check() -> Completeness:
        marker = await client.get(layout.marker)
        marks = decode_watermarks(await client.hgetall(layout.watermarks))
        return completeness(marker, marks, settings.partitions)

    try:
        before = await check()
        rows = await _rows(client, layout)
        after = await check()
    finally:
        await client.aclose()
    return (before if before == after else Completeness(None, before.missing)), rows


async def read_counters(settings: Settings, pid: int | None = None) -> Counter[str]:
    """The workers' counters (accepted, rejected by reason, duplicates), summed over workers,
    or those of the worker process ``pid`` alone."""
    client = connect(settings.redis)
    total: Counter[str] = Counter()
    layout = Layout(settings.app_id)
    pattern = layout.counters_pattern if pid is None else layout.counters(f"{socket.gethostname()}-{pid}")
    try:
        async for key in client.scan_iter(match=pattern):
            total.update({k.decode(): int(v) for k, v in (await client.hgetall(key)).items()})
    finally:
        await client.aclose()
    return total


async def caught_up(settings: Settings, since_ms: int) -> bool:
    """Whether the workers' lag reports written after ``since_ms`` cover every partition of both
    topics with no lag: the ingest step has committed, and the agent applied, all there is."""
    client = connect(settings.redis)
    try:
        lags = [Lag.decode(raw) for raw in (await client.hgetall(Layout(settings.app_id).lag)).values()]
    finally:
        await client.aclose()
    fresh = [lag for lag in lags if lag.written_ms > since_ms]
    return len(fresh) == 2 * settings.partitions and all(lag.lag == 0 for lag in fresh)


async def read_topic(settings: Settings, topic: str, count: int, wait: float = 60) -> list[Any]:
    """The first ``count`` values of ``topic`` (waiting up to ``wait`` seconds), as parsed JSON."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka, auto_offset_reset="earliest")
    await consumer.start()
    values: list[Any] = []
    deadline = time.monotonic() + wait
    try:
        while len(values) < count and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                values.extend(orjson.loads(m.value) for m in messages)
        for messages in (await consumer.getmany(timeout_ms=1000)).values():  # anything extra?
            values.extend(orjson.loads(m.value) for m in messages)
    finally:
        await consumer.stop()
    return values


async def eventually_equal(
    read: Callable[[], Awaitable[Any]], expected: Any, wait: float, worker: Worker | None = None
) -> Any:
    """Poll ``read`` until it returns ``expected`` or ``wait`` seconds pass; return the last read."""
    deadline = time.monotonic() + wait
    got = await read()
    while got != expected and time.monotonic() < deadline:
        if worker is not None and worker.process.poll() is not None:
            raise AssertionError(f"worker exited with {worker.process.returncode}:\n{worker.tail()}")
        await asyncio.sleep(0.5)
        got = await read()
    return got


async def eventually_true(read: Callable[[], Awaitable[Any]], wait: float) -> Any:
    """Poll ``read`` until it returns something truthy; fail after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while not (got := await read()):
        assert time.monotonic() < deadline, f"nothing after {wait} s"
        await asyncio.sleep(0.2)
    return got


def diff(got: dict[Any, Any], expected: dict[Any, Any], limit: int = 10) -> str:
    missing = [k for k in expected if k not in got][:limit]
    extra = [k for k in got if k not in expected][:limit]
    wrong = [(k, got[k], expected[k]) for k in expected if k in got and got[k] != expected[k]][:limit]
    return f"missing={missing}\nextra={extra}\nwrong={wrong}"


@dataclass
class Mirrored:
    """A generated dataset run through a real worker into Redis, and API keys to read it."""

    settings: Settings
    table: dict[str, str]
    cdrs: list[dict[str, Any]]
    keys: dict[str, str]  # "admin" / "customer" -> key

    @property
    def start(self) -> datetime:
        """A whole minute (UTC) at or before the first CDR."""
        first = min(dataset.start_seconds(c) for c in self.cdrs)
        return datetime.fromtimestamp(first // 60 * 60, UTC)

    @property
    def end(self) -> datetime:
        """A whole minute (UTC) after the last CDR."""
        last = max(dataset.start_seconds(c) for c in self.cdrs)
        return datetime.fromtimestamp(last // 60 * 60 + 60, UTC)

    def headers(self, who: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


async def mirror_dataset(
    kafka: str, redis: str, tmp: Path, *, name: str, seed: int, total: int, customer: str
) -> Mirrored:
    """``tests.dataset.generate`` (an hour old) through a real worker, checked row by row in
    Redis, with an admin key and a key of ``customer``."""
    token = tmp.name.replace("_", "-")[-12:]
    keys = {"admin": new_key(), "customer": new_key()}
    settings = load_settings(
        kafka=kafka,
        redis=redis,
        topic=f"cdrs-{name}-{token}",
        app_id=f"breakout-{name}-{token}",
        data_dir=tmp / "data",
        store="memory://",
        rebalance_timeout=10,
        api_keys=f"{key_entry(keys['admin'], ADMIN)},{key_entry(keys['customer'], Role(customer))}",
    )
    settings, table = with_dial_codes(settings, tmp)
    data = dataset.generate(
        seed=seed, total=total, end_time=time.time() - 3600, customers=CUSTOMERS, table=table
    )
    cdrs = list(data.valid.values())
    worker = Worker(settings, tmp / "w", tmp / "worker.log")
    try:
        await publish(settings, data.messages)
        expected = dataset.expected_rows(cdrs, table)
        got = await eventually_equal(lambda: read_mirror(settings), expected, wait=120, worker=worker)
        assert got == expected, diff(got, expected)
    finally:
        worker.stop()
    return Mirrored(settings, table, cdrs, keys)
