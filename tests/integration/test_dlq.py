"""Dead letters read and sent back with the ``breakout`` command, against the real broker.

``breakout publish`` refuses what the contract refuses before sending; what only the
worker can refuse (here a CDR older than every kept bucket) reaches the dead-letter topic,
``breakout dlq`` shows it, and once retention is raised ``breakout dlq replay`` sends it
back: counted once, however often it is replayed.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson

from breakout.settings import Settings
from tests import dataset
from tests.conftest import free_port
from tests.integration.pipeline import (
    CUSTOMERS,
    Worker,
    eventually_equal,
    eventually_true,
    read_counters,
    read_whole_mirror,
    settings_env,
    with_dial_codes,
)

OLD = 500 * 86400  # older than the default 400-day retention of day buckets
RAISED = str(600 * 86400)


def breakout(settings: Settings, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        input=None if stdin is None else stdin.decode(),
        capture_output=True,
        text=True,
        env=settings_env(settings),
        timeout=120,
    )


async def test_a_too_late_cdr_is_shown_then_replayed_once_after_retention_is_raised(
    settings: Settings, tmp_path: Path
) -> None:
    settings, table = with_dial_codes(settings, tmp_path)
    data = dataset.generate(seed=43, total=30, end_time=time.time() - 60, customers=CUSTOMERS, table=table)
    current = list(data.valid.values())[:20]
    (old,) = dataset.late(current[:1], OLD)
    lines = [orjson.dumps(cdr) for cdr in current[:10]]
    lines += [b"{not json", orjson.dumps(old), orjson.dumps(dict(current[10], duration="long"))]
    lines += [orjson.dumps(current[10:])]
    source = tmp_path / "cdrs.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")

    published = breakout(settings, "publish", str(source))
    assert published.returncode == 1, published.stderr
    refused = [line for line in published.stderr.splitlines() if line.startswith("line ")]
    assert [line.split(":")[0:2] for line in refused] == [
        ["line 11", " bad_json"],
        ["line 13", " bad_field"],
    ]
    assert (
        published.stderr.splitlines()[-1]
        == f"published 12 messages to {settings.topic}; refused 2 lines, not sent"
    )

    expected = dataset.expected_rows(current, table)
    metrics_port = free_port()
    worker = Worker(
        settings, tmp_path / "w", tmp_path / "worker.log", BREAKOUT_WORKER_METRICS_PORT=str(metrics_port)
    )
    try:
        got = await eventually_equal(lambda: _whole_rows(settings), expected, wait=90, worker=worker)
        assert got == expected
        await eventually_true(lambda: _counter(settings, "rejected:too_late"), wait=30)
        # The worker's own /metrics counts what it refused, and what it counted.
        scraped = await asyncio.to_thread(_scrape, metrics_port)
        assert scraped['breakout_worker_cdrs_total{outcome="rejected:too_late"}'] == 1.0
        # Accepted by the contract: the current ones and the old one the aggregator then refused.
        assert scraped['breakout_worker_cdrs_total{outcome="accepted"}'] == len(current) + 1
        # The heartbeat a container healthcheck reads (docker-compose.yml) is fresh.
        heartbeat = tmp_path / "w" / "heartbeat"
        await eventually_true(lambda: asyncio.to_thread(_fresh, heartbeat), wait=30)

        shown = breakout(settings, "dlq")
        assert shown.returncode == 0, shown.stderr
        assert f"1 dead letters in {settings.dlq_topic}:" in shown.stdout
        assert "too_late" in shown.stdout and "start_time is older than every kept bucket" in shown.stdout
        (entry,) = [orjson.loads(line) for line in breakout(settings, "dlq", "--json").stdout.splitlines()]
        assert (entry["error"], entry["topic"], orjson.loads(entry["payload"])) == (
            "too_late",
            settings.topic,
            old,
        )
        assert breakout(settings, "dlq", "--json", "--reason", "bad_json").stdout == ""

        # --follow shows a dead letter that arrives while it runs.
        follow = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "cli", "dlq", "--follow", "--json", "--last", "0"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=settings_env(settings),
        )
        try:
            await asyncio.sleep(3)
            unchecked = breakout(settings, "publish", "--no-check", "-", stdin=b'{"id": "x"}\n')
            assert unchecked.returncode == 0, unchecked.stderr
            assert follow.stdout is not None
            line = await asyncio.wait_for(follow.stdout.readline(), 60)
            assert orjson.loads(line)["error"] == "missing_field"
            await eventually_true(lambda: _counter(settings, "rejected:missing_field"), wait=30)
        finally:
            follow.terminate()
            await follow.wait()
    finally:
        worker.stop()

    # Retention raised: the same CDR is now within the day buckets kept, and counted there only.
    day = int(old["start_time"] // 86400 * 86400)
    old_rows = {k: v for k, v in dataset.expected_rows([old], table).items() if k[0] == "d"}
    assert [k[1] for k in old_rows] == [day]
    worker = Worker(settings, tmp_path / "w", tmp_path / "worker.log", BREAKOUT_DAY_RETENTION=RAISED)
    try:
        dry = breakout(settings, "dlq", "replay", "--reason", "too_late", "--dry-run")
        assert (dry.returncode, dry.stderr.strip()) == (0, f"would replay 1 dead letters to {settings.topic}")
        for attempt in (1, 2):  # the second replay is a duplicate: nothing changes
            replayed = breakout(settings, "dlq", "replay", "--reason", "too_late")
            assert (replayed.returncode, replayed.stderr.strip()) == (
                0,
                f"replayed 1 dead letters to {settings.topic}",
            )
            got = await eventually_equal(
                lambda: _whole_rows(settings), expected | old_rows, wait=90, worker=worker
            )
            assert got == expected | old_rows
            await eventually_true(lambda n=attempt - 1: _counter(settings, "duplicates", n), wait=60)
        # A dead letter of a message that was no CDR is refused by the worker again, not replayed blind.
        everything = breakout(settings, "dlq", "replay", "--reason", "missing_field")
        assert everything.returncode == 0
        await eventually_true(lambda: _counter(settings, "rejected:missing_field", 2), wait=60)
        assert await _whole_rows(settings) == expected | old_rows
        counters = await read_counters(settings)
        assert counters["rejected:too_late"] == 1
    finally:
        worker.stop()


async def _counter(settings: Settings, name: str, at_least: int = 1) -> bool:
    return (await read_counters(settings))[name] >= at_least


async def _whole_rows(settings: Settings) -> object:
    whole, rows = await read_whole_mirror(settings)
    return rows if whole.complete else None


def _fresh(path: Path) -> bool:
    return path.exists() and path.stat().st_mtime > time.time() - 15


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
