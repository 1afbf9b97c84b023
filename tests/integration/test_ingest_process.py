"""The worker's ingest process: its reports reach the worker exactly, each process ends with
the other (as a crash when killed, as asked when stopped), and a restart counts every CDR once.

The ingest step runs in a child process of the worker (``streams.ingest_process``). Killed
alone, it must take the worker down with it (a worker whose ingest is gone would look
alive and ingest nothing); a killed worker must not leave it running (it would go on
reading the CDR topic in the worker's consumer group, unsupervised).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from breakout.settings import Settings
from tests import dataset
from tests.integration.pipeline import (
    CUSTOMERS,
    Worker,
    caught_up,
    diff,
    eventually_equal,
    eventually_true,
    publish,
    read_counters,
    read_mirror,
    with_dial_codes,
)


def ingest_child(worker: Worker) -> int | None:
    """The pid of the worker's ingest process (not multiprocessing's resource tracker).

    A thread or child that ends between the listing and the read is skipped: the worker
    starts and ends threads of its own while it comes up.
    """
    for task in Path(f"/proc/{worker.process.pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:
            continue
        for child in children:
            try:
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    return int(child)
            except FileNotFoundError:
                continue
    return None


def has_exited(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie no one reaped counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_each_process_ends_with_the_other_and_a_restart_counts_every_cdr_once(
    settings: Settings, tmp_path: Path
) -> None:
    settings, table = with_dial_codes(settings, tmp_path)
    end_time = time.time() - 600
    data = dataset.generate(seed=23, total=8_000, end_time=end_time, customers=CUSTOMERS, table=table)
    expected = dataset.expected_rows(list(data.valid.values()), table)

    first = Worker(settings, tmp_path / "w", tmp_path / "w1.log")
    try:
        await publish(settings, data.messages)
        got = await eventually_equal(lambda: read_mirror(settings), expected, wait=120, worker=first)
        assert got == expected, diff(got, expected)
        # What the ingest process counted reaches the worker's counters exactly.
        accepted = len(data.valid) + data.duplicates

        async def counted() -> bool:
            counters = await read_counters(settings, first.process.pid)
            rejected = sum(n for name, n in counters.items() if name.startswith("rejected:"))
            return counters["accepted"] == accepted and rejected == len(data.invalid)

        await eventually_true(counted, wait=30)

        # The ingest process killed: the worker stops, so a supervisor restarts both.
        child = ingest_child(first)
        assert child is not None
        os.kill(child, signal.SIGKILL)
        first.process.wait(60)
        assert first.process.returncode != 0
        assert "the ingest process ended" in first.log.read_text(errors="replace")
    finally:
        first.stop()

    second = Worker(settings, tmp_path / "w", tmp_path / "w2.log")
    try:
        since_ms = int(time.time() * 1000)
        await publish(settings, data.messages)  # every CDR again: each is counted once
        await eventually_true(lambda: caught_up(settings, since_ms), wait=120)
        got = await read_mirror(settings)
        assert got == expected, diff(got, expected)
        # The worker killed: its ingest process goes with it.
        child = ingest_child(second)
        assert child is not None
        second.kill()
        await eventually_true(lambda: asyncio.to_thread(has_exited, child), wait=10)
    finally:
        second.stop()

    # The ingest process stopped as asked (SIGTERM, as a service manager sends the whole
    # process group): the worker stops as asked too, not as a crash.
    third = Worker(settings, tmp_path / "w", tmp_path / "w3.log")
    try:
        child = await eventually_true(lambda: asyncio.to_thread(ingest_child, third), wait=60)
        os.kill(child, signal.SIGTERM)
        assert await asyncio.to_thread(third.process.wait, 60) == 0, third.tail()
    finally:
        third.stop()
