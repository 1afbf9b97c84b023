"""The broker crashes (SIGKILL) and restarts on its data mid-stream, twice: every row still exact.

The worker's consumers, producers and Faust's changelog writes all see their broker
vanish; whatever they had in flight is retried or replayed, and counted once.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from breakout.settings import Settings
from tests import dataset
from tests.conftest import ROOT, free_port
from tests.integration.pipeline import (
    CUSTOMERS,
    Worker,
    diff,
    eventually_equal,
    eventually_true,
    publish,
    read_mirror,
    read_whole_mirror,
    with_dial_codes,
)

CHUNKS = 12


def _kafka(*args: str) -> None:
    subprocess.run([str(ROOT / "scripts" / "kafka.sh"), *args], check=True)


async def test_broker_crash_and_restart_mid_stream_keeps_every_row_exact(
    settings: Settings, tmp_path: Path
) -> None:
    port, directory = free_port(span=2), tmp_path / "kafka"
    _kafka("start", str(port), str(directory))
    settings, table = with_dial_codes(settings, tmp_path)
    settings = settings.model_copy(update={"kafka": f"127.0.0.1:{port}"})
    data = dataset.generate(
        seed=31, total=12_000, end_time=time.time() - 600, customers=CUSTOMERS, table=table
    )
    expected = dataset.expected_rows(list(data.valid.values()), table)
    size = len(data.messages) // CHUNKS + 1
    chunks = [data.messages[i : i + size] for i in range(0, len(data.messages), size)]
    worker = Worker(settings, tmp_path / "w", tmp_path / "worker.log")
    try:
        for n, chunk in enumerate(chunks):
            await publish(settings, chunk)
            if n == 0:
                await eventually_true(lambda: read_mirror(settings), wait=90)
            if n in (CHUNKS // 3, 2 * CHUNKS // 3):
                await asyncio.to_thread(_kafka, "restart", str(port), str(directory))
            await asyncio.sleep(0.3)
        assert worker.process.poll() is None, worker.tail()

        async def whole_and_exact() -> bool:
            whole, rows = await read_whole_mirror(settings)
            return whole.complete and rows == expected

        assert await eventually_equal(whole_and_exact, True, wait=180, worker=worker)
        got = await read_mirror(settings)
        assert got == expected, diff(got, expected)
    finally:
        worker.stop()
        _kafka("stop", str(directory))
