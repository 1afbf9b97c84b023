"""SIGKILL mid-stream, restart, and the totals are still exact: nothing lost, nothing twice.

A worker killed with SIGKILL commits nothing and flushes nothing, so the restarted
worker replays from the last committed offsets of both the CDR topic (the ingest step)
and the internal topic (the agent); exact totals prove that both replays count once.
The second variant starts another worker mid-stream, so partitions move between
processes (a rebalance) around the kill.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from breakout.settings import Settings
from tests import dataset
from tests.integration.pipeline import (
    CUSTOMERS,
    Worker,
    diff,
    eventually_equal,
    eventually_true,
    publish,
    read_mirror,
    with_dial_codes,
)

CHUNKS = 30


@pytest.mark.parametrize("second_worker", [False, True], ids=["restart", "restart-with-rebalance"])
async def test_sigkill_mid_stream_then_restart_keeps_totals_exact(
    settings: Settings, tmp_path: Path, second_worker: bool
) -> None:
    settings, table = with_dial_codes(settings, tmp_path)
    data = dataset.generate(
        seed=11, total=30_000, end_time=time.time() - 600, customers=CUSTOMERS, table=table
    )
    expected = dataset.expected_rows(list(data.valid.values()), table)
    size = len(data.messages) // CHUNKS + 1
    chunks = [data.messages[i : i + size] for i in range(0, len(data.messages), size)]

    first = Worker(settings, tmp_path / "w1", tmp_path / "w1.log")
    workers = [first]
    try:
        for n, chunk in enumerate(chunks):
            await publish(settings, chunk)
            if n == 0:  # let the first worker start consuming before the stream goes on
                await eventually_true(lambda: read_mirror(settings), wait=60)
            await asyncio.sleep(0.2)
            if second_worker and n == CHUNKS // 4:
                workers.append(Worker(settings, tmp_path / "w2", tmp_path / "w2.log"))
            if n == CHUNKS // 2:
                mirrored = await read_mirror(settings)
                assert len(mirrored) > 0 and mirrored != expected  # truly mid-stream
                first.kill()
                workers.remove(first)
                workers.append(Worker(settings, tmp_path / "w1", tmp_path / "w1.log"))
        got = await eventually_equal(lambda: read_mirror(settings), expected, wait=180, worker=workers[-1])
        assert got == expected, diff(got, expected)
    finally:
        for worker in workers:
            worker.stop()
    log = (tmp_path / "w1.log").read_text()
    assert "restored" in log  # the restarted worker rebuilt its partitions from the tables
