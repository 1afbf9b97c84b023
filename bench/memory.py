"""Worker memory and state size as counted CDRs accumulate, and partition recovery time.

    .venv/bin/python bench/memory.py [--stages 1,5,20] [--keep]

Starts Kafka and Redis through scripts/kafka.sh and scripts/redis.sh (or uses
BREAKOUT_KAFKA / BREAKOUT_REDIS, without the changelog sizes then), and one ``breakout
worker`` with the default settings: the ``rocksdb://`` store and the 7-day dedup window.
It publishes unique CDRs in 500-CDR messages whose start times fall at random in the same
two hours, from 25 customers who each call 16 destinations through 2 providers: no id
leaves the window, and every row of every bucket exists after the first million, so the
rows are the same at every stage and only the ids grow, every one staying in the state
(the worst case). The figures show what the worker keeps per id; what it keeps per row
is the mirror's and the tables' (``docs/operations.md``, "State sizes").

After each stage (millions of CDRs counted in total) it prints the worker's resident
memory (now and peak), its data directory, the changelog topics on the broker's disk and
Redis's memory.

Then recovery, twice: the worker is stopped and started again on its data directory, and
once more on an empty one (tables and id store rebuilt from the changelogs); each time it
prints how long until every partition is restored, and until 1,000 new CDRs are mirrored.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import PARTITIONS, ROOT, create_topic, end_offsets, start_services

from breakout.redis_layout import Layout, decode_watermarks
from breakout.settings import Settings
from breakout.synthetic import Profile, cdr_stream
from streams.aggregator import NUDGE_SECONDS

PER_MESSAGE = 500
SPREAD_S = 7_200  # start times over the same two hours: a fixed set of buckets
PROBE = 1_000
# Each customer calls a fixed few dozen destinations through two providers, as accounts do:
# every (destination, provider, currency) row of every bucket exists after the first
# million CDRs, so later stages add ids and nothing else.
MIX = Profile(prefixes_per_customer=16, providers_per_customer=2)
RESTORED = re.compile(rb"partition \d+ restored")
TABLES = ("rows", "versions", "progress")


class Worker:
    """One ``breakout worker`` on a given data directory, logging to a file."""

    def __init__(
        self, kafka: str, redis_url: str, topic: str, app_id: str, data_dir: Path, log: Path
    ) -> None:
        self.log = log
        self.started = time.perf_counter()
        env = dict(
            os.environ,
            BREAKOUT_KAFKA=kafka,
            BREAKOUT_REDIS=redis_url,
            BREAKOUT_TOPIC=topic,
            BREAKOUT_APP_ID=app_id,
            BREAKOUT_DATA_DIR=str(data_dir),
            BREAKOUT_LOG_LEVEL="info",
        )
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli", "worker"], env=env, cwd=ROOT, stdout=out, stderr=out
            )

    def status(self, field: str) -> float:
        """``VmRSS`` or ``VmHWM`` of the process, in MB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field} for process {self.process.pid}")

    def restored(self) -> int:
        return len(RESTORED.findall(self.log.read_bytes()))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def spread(cdrs: Iterator[dict[str, Any]], start: float) -> Iterator[dict[str, Any]]:
    """``cdrs`` with start times at random in the ``SPREAD_S`` seconds from ``start``."""
    rng = random.Random(3)
    for cdr in cdrs:
        yield dict(cdr, start_time=round(start + rng.random() * SPREAD_S, 3))


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


async def publish(kafka: str, topic: str, cdrs: Iterator[dict[str, Any]], count: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka, linger_ms=50, max_batch_size=1 << 20, max_request_size=16 << 20
    )
    await producer.start()
    try:
        futures = []
        for _ in range(count // PER_MESSAGE):
            chunk = [next(cdrs) for _ in range(PER_MESSAGE)]
            futures.append(
                await producer.send(topic, orjson.dumps(chunk), key=chunk[0]["customer_id"].encode())
            )
            if len(futures) >= 2_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def mirrored(kafka: str, redis_url: str, app_id: str, worker: Worker) -> None:
    """Wait until the mirror's watermarks cover every internal message published so far."""
    client = aioredis.from_url(redis_url)
    try:
        while True:
            if worker.process.poll() is not None:
                raise RuntimeError(f"worker exited: see {worker.log}")
            ends = await end_offsets(kafka, f"{app_id}-normalized")
            marks = {
                p: m.offset
                for p, m in decode_watermarks(await client.hgetall(Layout(app_id).watermarks)).items()
            }
            if any(ends.values()) and all(end == 0 or marks.get(p, -1) >= end - 1 for p, end in ends.items()):
                return
            await asyncio.sleep(0.5)
    finally:
        await client.aclose()


async def committed_all(kafka: str, topic: str, group: str) -> None:
    """Wait until ``group`` has committed every message of ``topic``: the ingest step's
    group the CDR topic, or the agents' (the app id) the internal topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        ends = await end_offsets(kafka, topic)
        while True:
            try:
                offsets = await admin.list_consumer_group_offsets(group)
            except KafkaError:  # the group's coordinator is not there yet
                offsets = {}
            done = sum(max(meta.offset, 0) for tp, meta in offsets.items() if tp.topic == topic)
            if done >= sum(ends.values()):
                return
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


async def redis_mb(redis_url: str) -> float:
    client = aioredis.from_url(redis_url)
    try:
        return int((await client.info("memory"))["used_memory"]) / 1e6
    finally:
        await client.aclose()


def changelog_mb(kafka_data: Path | None, app_id: str) -> dict[str, float]:
    if kafka_data is None:
        return {}
    return {  # the segments only: Kafka preallocates 20 MB of indexes per partition
        table: sum(f.stat().st_size for f in kafka_data.glob(f"{app_id}-{table}-changelog-*/*.log")) / 1e6
        for table in TABLES
    }


async def restart(
    kafka: str,
    redis_url: str,
    topic: str,
    app_id: str,
    data_dir: Path,
    log: Path,
    cdrs: Iterator[dict[str, Any]],
) -> tuple[Worker, float, float]:
    """Start a worker and publish ``PROBE`` new CDRs; return it, the seconds until every
    partition was restored, and until the probe was mirrored."""
    worker = Worker(kafka, redis_url, topic, app_id, data_dir, log)
    while worker.restored() < PARTITIONS:
        if worker.process.poll() is not None:
            raise RuntimeError(f"worker exited: see {log}")
        await asyncio.sleep(0.1)
    restored = time.perf_counter() - worker.started
    await publish(kafka, topic, cdrs, PROBE)
    await committed_all(kafka, topic, f"{app_id}-ingest")
    await mirrored(kafka, redis_url, app_id, worker)
    return worker, restored, time.perf_counter() - worker.started


async def bench(args: argparse.Namespace, kafka: str, redis_url: str, workdir: Path, own_kafka: bool) -> None:
    stages = [int(float(s) * 1_000_000) for s in args.stages.split(",")]
    topic, app_id = f"memory-{uuid.uuid4().hex[:6]}", f"memory-{uuid.uuid4().hex[:6]}"
    await create_topic(kafka, topic)
    kafka_data = workdir / "kafka" / "data" if own_kafka else None
    data_dir = workdir / "worker"
    stream = cdr_stream(seed=3, start_time=time.time(), rate=1_000, profile=MIX)
    cdrs = spread(stream, time.time() - SPREAD_S)
    columns = ("CDRs", 12), ("RSS MB", 8), ("peak MB", 8), ("data dir MB", 12), ("changelogs MB", 14)
    header = (*columns, ("Redis MB", 9), ("CDR/s", 8), ("restored s", 11), ("probe s", 8))
    print(" ".join(f"{name:>{width}}" for name, width in header))
    worker = Worker(kafka, redis_url, topic, app_id, data_dir, workdir / "worker.log")
    rss: list[float] = []
    published = 0
    try:
        for stage in stages:
            began = time.perf_counter()
            await publish(kafka, topic, cdrs, stage - published)
            await committed_all(kafka, topic, f"{app_id}-ingest")
            await mirrored(kafka, redis_url, app_id, worker)
            rate = (stage - published) / (time.perf_counter() - began)
            published = stage
            # Every partition writes its tables and commits, a quiet one at the worker's own
            # nudges: a flush once its last is a period old, and a period later one naming
            # that one delivered (``Aggregator.to_nudge``). The restart below then reads
            # nothing again.
            internal = f"{app_id}-normalized"
            await committed_all(kafka, internal, app_id)
            await asyncio.sleep(Settings().table_flush_seconds + 2 * NUDGE_SECONDS + 1)
            await committed_all(kafka, internal, app_id)
            await asyncio.sleep(5)
            rss.append(worker.status("VmRSS"))
            peak = worker.status("VmHWM")
            changelogs = changelog_mb(kafka_data, app_id)
            shown = " + ".join(f"{changelogs[t]:,.0f}" for t in TABLES) if changelogs else "n/a"
            redis_used = await redis_mb(redis_url)
            worker.stop()  # and restarted on its data directory: recovery at this many ids
            log = workdir / f"restart-{stage}.log"
            worker, restored, probe = await restart(kafka, redis_url, topic, app_id, data_dir, log, cdrs)
            published += PROBE
            print(
                f"{published:>12,} {rss[-1]:>8,.0f} {peak:>8,.0f} {size_mb(data_dir):>12,.0f} {shown:>14} "
                f"{redis_used:>9,.0f} {rate:>8,.0f} {restored:>11.1f} {probe:>8.1f}",
                flush=True,
            )
    finally:
        worker.stop()
    print(f"  (changelogs: {' + '.join(TABLES)}; restored s: from a restart on the data directory until")
    print(f"  every partition is restored; probe s: until {PROBE:,} new CDRs are mirrored)")
    print(f"RSS after {stages[-1]:,} / after {stages[0]:,}: {rss[-1] / rss[0]:.2f} (target <= 1.3)")
    shutil.rmtree(data_dir)
    worker, restored, probe = await restart(
        kafka, redis_url, topic, app_id, data_dir, workdir / "rebuild.log", cdrs
    )
    worker.stop()
    print(
        f"restart on an empty data directory (rebuilt from the changelogs): partitions restored in "
        f"{restored:.1f} s, {PROBE:,} new CDRs mirrored {probe:.1f} s after start"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stages", default="1,5,20", help="millions of CDRs counted at each measurement")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="breakout-memory-"))
    kafka, redis_url, stops = start_services(workdir)
    try:
        asyncio.run(bench(args, kafka, redis_url, workdir, own_kafka=bool(stops)))
    finally:
        for stop in stops:
            subprocess.run(stop, check=False)
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
